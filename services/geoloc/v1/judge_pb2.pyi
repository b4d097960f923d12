from geoloc.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JudgeMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JUDGE_MODE_UNSPECIFIED: _ClassVar[JudgeMode]
    JUDGE_MODE_POOL_SELECTION: _ClassVar[JudgeMode]
    JUDGE_MODE_FREE_GENERATION: _ClassVar[JudgeMode]
JUDGE_MODE_UNSPECIFIED: JudgeMode
JUDGE_MODE_POOL_SELECTION: JudgeMode
JUDGE_MODE_FREE_GENERATION: JudgeMode

class Candidate(_message.Message):
    __slots__ = ("lat_deg", "lon_deg", "probability", "place")
    LAT_DEG_FIELD_NUMBER: _ClassVar[int]
    LON_DEG_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    PLACE_FIELD_NUMBER: _ClassVar[int]
    lat_deg: float
    lon_deg: float
    probability: float
    place: str
    def __init__(self, lat_deg: _Optional[float] = ..., lon_deg: _Optional[float] = ..., probability: _Optional[float] = ..., place: _Optional[str] = ...) -> None: ...

class JudgeRequest(_message.Message):
    __slots__ = ("image", "candidates", "mode")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    mode: JudgeMode
    def __init__(self, image: _Optional[bytes] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., mode: _Optional[_Union[JudgeMode, str]] = ...) -> None: ...

class JudgeResponse(_message.Message):
    __slots__ = ("points", "place", "confidence", "model", "tokens_in", "tokens_out", "mode", "failure", "candidate_index")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    PLACE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOKENS_IN_FIELD_NUMBER: _ClassVar[int]
    TOKENS_OUT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_INDEX_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[_common_pb2.WeightedPoint]
    place: str
    confidence: float
    model: _common_pb2.ModelInfo
    tokens_in: int
    tokens_out: int
    mode: JudgeMode
    failure: str
    candidate_index: int
    def __init__(self, points: _Optional[_Iterable[_Union[_common_pb2.WeightedPoint, _Mapping]]] = ..., place: _Optional[str] = ..., confidence: _Optional[float] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., tokens_in: _Optional[int] = ..., tokens_out: _Optional[int] = ..., mode: _Optional[_Union[JudgeMode, str]] = ..., failure: _Optional[str] = ..., candidate_index: _Optional[int] = ...) -> None: ...
