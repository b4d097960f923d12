from geoloc.v1 import common_pb2 as _common_pb2
from geoloc.v1 import text_pb2 as _text_pb2
from geoloc.v1 import tokens_pb2 as _tokens_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Expert(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERT_UNSPECIFIED: _ClassVar[Expert]
    EXPERT_GALLERY: _ClassVar[Expert]
    EXPERT_SAMPLER_FLOW: _ClassVar[Expert]
    EXPERT_SAMPLER_SH_DIFFUSION: _ClassVar[Expert]
    EXPERT_TOKENS: _ClassVar[Expert]
    EXPERT_TEXT: _ClassVar[Expert]

class ExpertStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERT_STATUS_UNSPECIFIED: _ClassVar[ExpertStatus]
    EXPERT_STATUS_OK: _ClassVar[ExpertStatus]
    EXPERT_STATUS_DEADLINE_EXCEEDED: _ClassVar[ExpertStatus]
    EXPERT_STATUS_UNAVAILABLE: _ClassVar[ExpertStatus]
    EXPERT_STATUS_FAILED: _ClassVar[ExpertStatus]
    EXPERT_STATUS_SKIPPED: _ClassVar[ExpertStatus]

class AnswerSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANSWER_SOURCE_UNSPECIFIED: _ClassVar[AnswerSource]
    ANSWER_SOURCE_FUSION: _ClassVar[AnswerSource]
    ANSWER_SOURCE_EXIF_GPS: _ClassVar[AnswerSource]

class PlaceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLACE_KIND_UNSPECIFIED: _ClassVar[PlaceKind]
    PLACE_KIND_COUNTRY: _ClassVar[PlaceKind]
    PLACE_KIND_OCEAN: _ClassVar[PlaceKind]
    PLACE_KIND_UNKNOWN_LAND: _ClassVar[PlaceKind]
EXPERT_UNSPECIFIED: Expert
EXPERT_GALLERY: Expert
EXPERT_SAMPLER_FLOW: Expert
EXPERT_SAMPLER_SH_DIFFUSION: Expert
EXPERT_TOKENS: Expert
EXPERT_TEXT: Expert
EXPERT_STATUS_UNSPECIFIED: ExpertStatus
EXPERT_STATUS_OK: ExpertStatus
EXPERT_STATUS_DEADLINE_EXCEEDED: ExpertStatus
EXPERT_STATUS_UNAVAILABLE: ExpertStatus
EXPERT_STATUS_FAILED: ExpertStatus
EXPERT_STATUS_SKIPPED: ExpertStatus
ANSWER_SOURCE_UNSPECIFIED: AnswerSource
ANSWER_SOURCE_FUSION: AnswerSource
ANSWER_SOURCE_EXIF_GPS: AnswerSource
PLACE_KIND_UNSPECIFIED: PlaceKind
PLACE_KIND_COUNTRY: PlaceKind
PLACE_KIND_OCEAN: PlaceKind
PLACE_KIND_UNKNOWN_LAND: PlaceKind

class LocateOptions(_message.Message):
    __slots__ = ("top_k", "experts", "include_distribution", "include_expert_outputs", "use_exif_gps")
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    EXPERTS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EXPERT_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    USE_EXIF_GPS_FIELD_NUMBER: _ClassVar[int]
    top_k: int
    experts: _containers.RepeatedScalarFieldContainer[Expert]
    include_distribution: bool
    include_expert_outputs: bool
    use_exif_gps: bool
    def __init__(self, top_k: _Optional[int] = ..., experts: _Optional[_Iterable[_Union[Expert, str]]] = ..., include_distribution: _Optional[bool] = ..., include_expert_outputs: _Optional[bool] = ..., use_exif_gps: _Optional[bool] = ...) -> None: ...

class LocateRequest(_message.Message):
    __slots__ = ("image", "options")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    options: LocateOptions
    def __init__(self, image: _Optional[bytes] = ..., options: _Optional[_Union[LocateOptions, _Mapping]] = ...) -> None: ...

class Place(_message.Message):
    __slots__ = ("kind", "country_code", "country_name", "nearest_city", "nearest_city_distance_km")
    KIND_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_CODE_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_NAME_FIELD_NUMBER: _ClassVar[int]
    NEAREST_CITY_FIELD_NUMBER: _ClassVar[int]
    NEAREST_CITY_DISTANCE_KM_FIELD_NUMBER: _ClassVar[int]
    kind: PlaceKind
    country_code: str
    country_name: str
    nearest_city: str
    nearest_city_distance_km: float
    def __init__(self, kind: _Optional[_Union[PlaceKind, str]] = ..., country_code: _Optional[str] = ..., country_name: _Optional[str] = ..., nearest_city: _Optional[str] = ..., nearest_city_distance_km: _Optional[float] = ...) -> None: ...

class Hypothesis(_message.Message):
    __slots__ = ("lat_deg", "lon_deg", "probability", "radius_50_km", "radius_90_km", "place")
    LAT_DEG_FIELD_NUMBER: _ClassVar[int]
    LON_DEG_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    RADIUS_50_KM_FIELD_NUMBER: _ClassVar[int]
    RADIUS_90_KM_FIELD_NUMBER: _ClassVar[int]
    PLACE_FIELD_NUMBER: _ClassVar[int]
    lat_deg: float
    lon_deg: float
    probability: float
    radius_50_km: float
    radius_90_km: float
    place: Place
    def __init__(self, lat_deg: _Optional[float] = ..., lon_deg: _Optional[float] = ..., probability: _Optional[float] = ..., radius_50_km: _Optional[float] = ..., radius_90_km: _Optional[float] = ..., place: _Optional[_Union[Place, _Mapping]] = ...) -> None: ...

class ExifGps(_message.Message):
    __slots__ = ("lat_deg", "lon_deg")
    LAT_DEG_FIELD_NUMBER: _ClassVar[int]
    LON_DEG_FIELD_NUMBER: _ClassVar[int]
    lat_deg: float
    lon_deg: float
    def __init__(self, lat_deg: _Optional[float] = ..., lon_deg: _Optional[float] = ...) -> None: ...

class ExpertOutput(_message.Message):
    __slots__ = ("expert", "status", "status_message", "points", "cells", "fusion_weight", "model", "latency_ms", "text")
    EXPERT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    FUSION_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    expert: Expert
    status: ExpertStatus
    status_message: str
    points: _containers.RepeatedCompositeFieldContainer[_common_pb2.WeightedPoint]
    cells: _containers.RepeatedCompositeFieldContainer[_tokens_pb2.Cell]
    fusion_weight: float
    model: _common_pb2.ModelInfo
    latency_ms: float
    text: _containers.RepeatedCompositeFieldContainer[_text_pb2.TextLine]
    def __init__(self, expert: _Optional[_Union[Expert, str]] = ..., status: _Optional[_Union[ExpertStatus, str]] = ..., status_message: _Optional[str] = ..., points: _Optional[_Iterable[_Union[_common_pb2.WeightedPoint, _Mapping]]] = ..., cells: _Optional[_Iterable[_Union[_tokens_pb2.Cell, _Mapping]]] = ..., fusion_weight: _Optional[float] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., latency_ms: _Optional[float] = ..., text: _Optional[_Iterable[_Union[_text_pb2.TextLine, _Mapping]]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("embed_ms", "experts_ms", "fusion_ms", "total_ms")
    EMBED_MS_FIELD_NUMBER: _ClassVar[int]
    EXPERTS_MS_FIELD_NUMBER: _ClassVar[int]
    FUSION_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    embed_ms: float
    experts_ms: float
    fusion_ms: float
    total_ms: float
    def __init__(self, embed_ms: _Optional[float] = ..., experts_ms: _Optional[float] = ..., fusion_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class LocateResponse(_message.Message):
    __slots__ = ("best_guess", "hypotheses", "radius_50_km", "radius_90_km", "localizability", "answer_source", "exif_gps", "expert_outputs", "distribution", "backbone", "fusion", "timings", "request_id")
    BEST_GUESS_FIELD_NUMBER: _ClassVar[int]
    HYPOTHESES_FIELD_NUMBER: _ClassVar[int]
    RADIUS_50_KM_FIELD_NUMBER: _ClassVar[int]
    RADIUS_90_KM_FIELD_NUMBER: _ClassVar[int]
    LOCALIZABILITY_FIELD_NUMBER: _ClassVar[int]
    ANSWER_SOURCE_FIELD_NUMBER: _ClassVar[int]
    EXIF_GPS_FIELD_NUMBER: _ClassVar[int]
    EXPERT_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    best_guess: Hypothesis
    hypotheses: _containers.RepeatedCompositeFieldContainer[Hypothesis]
    radius_50_km: float
    radius_90_km: float
    localizability: float
    answer_source: AnswerSource
    exif_gps: ExifGps
    expert_outputs: _containers.RepeatedCompositeFieldContainer[ExpertOutput]
    distribution: _containers.RepeatedCompositeFieldContainer[_common_pb2.WeightedPoint]
    backbone: _common_pb2.ModelInfo
    fusion: _common_pb2.ModelInfo
    timings: Timings
    request_id: str
    def __init__(self, best_guess: _Optional[_Union[Hypothesis, _Mapping]] = ..., hypotheses: _Optional[_Iterable[_Union[Hypothesis, _Mapping]]] = ..., radius_50_km: _Optional[float] = ..., radius_90_km: _Optional[float] = ..., localizability: _Optional[float] = ..., answer_source: _Optional[_Union[AnswerSource, str]] = ..., exif_gps: _Optional[_Union[ExifGps, _Mapping]] = ..., expert_outputs: _Optional[_Iterable[_Union[ExpertOutput, _Mapping]]] = ..., distribution: _Optional[_Iterable[_Union[_common_pb2.WeightedPoint, _Mapping]]] = ..., backbone: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., fusion: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class LocateBatchRequest(_message.Message):
    __slots__ = ("images", "options")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    options: LocateOptions
    def __init__(self, images: _Optional[_Iterable[bytes]] = ..., options: _Optional[_Union[LocateOptions, _Mapping]] = ...) -> None: ...

class LocateBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[LocateResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[LocateResponse, _Mapping]]] = ...) -> None: ...

class LocateTextRequest(_message.Message):
    __slots__ = ("query", "top_k")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    query: str
    top_k: int
    def __init__(self, query: _Optional[str] = ..., top_k: _Optional[int] = ...) -> None: ...

class TextMatch(_message.Message):
    __slots__ = ("lat_deg", "lon_deg", "probability", "place")
    LAT_DEG_FIELD_NUMBER: _ClassVar[int]
    LON_DEG_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    PLACE_FIELD_NUMBER: _ClassVar[int]
    lat_deg: float
    lon_deg: float
    probability: float
    place: Place
    def __init__(self, lat_deg: _Optional[float] = ..., lon_deg: _Optional[float] = ..., probability: _Optional[float] = ..., place: _Optional[_Union[Place, _Mapping]] = ...) -> None: ...

class LocateTextResponse(_message.Message):
    __slots__ = ("matches", "truncated", "backbone", "gallery", "request_id")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    GALLERY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[TextMatch]
    truncated: bool
    backbone: _common_pb2.ModelInfo
    gallery: _common_pb2.ModelInfo
    request_id: str
    def __init__(self, matches: _Optional[_Iterable[_Union[TextMatch, _Mapping]]] = ..., truncated: _Optional[bool] = ..., backbone: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., gallery: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...
