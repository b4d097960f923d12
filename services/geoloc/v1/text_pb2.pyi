from geoloc.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReadRequest(_message.Message):
    __slots__ = ("image", "include_text")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TEXT_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    include_text: bool
    def __init__(self, image: _Optional[bytes] = ..., include_text: _Optional[bool] = ...) -> None: ...

class Vertex(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class TextLine(_message.Message):
    __slots__ = ("text", "confidence", "box", "engine", "used")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    text: str
    confidence: float
    box: _containers.RepeatedCompositeFieldContainer[Vertex]
    engine: str
    used: bool
    def __init__(self, text: _Optional[str] = ..., confidence: _Optional[float] = ..., box: _Optional[_Iterable[_Union[Vertex, _Mapping]]] = ..., engine: _Optional[str] = ..., used: _Optional[bool] = ...) -> None: ...

class NamedPlace(_message.Message):
    __slots__ = ("name", "country_code", "lat_deg", "lon_deg", "population", "matched_text", "exact", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_CODE_FIELD_NUMBER: _ClassVar[int]
    LAT_DEG_FIELD_NUMBER: _ClassVar[int]
    LON_DEG_FIELD_NUMBER: _ClassVar[int]
    POPULATION_FIELD_NUMBER: _ClassVar[int]
    MATCHED_TEXT_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    country_code: str
    lat_deg: float
    lon_deg: float
    population: int
    matched_text: str
    exact: bool
    weight: float
    def __init__(self, name: _Optional[str] = ..., country_code: _Optional[str] = ..., lat_deg: _Optional[float] = ..., lon_deg: _Optional[float] = ..., population: _Optional[int] = ..., matched_text: _Optional[str] = ..., exact: _Optional[bool] = ..., weight: _Optional[float] = ...) -> None: ...

class CountryShare(_message.Message):
    __slots__ = ("country_code", "probability")
    COUNTRY_CODE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    country_code: str
    probability: float
    def __init__(self, country_code: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class ReadResponse(_message.Message):
    __slots__ = ("points", "lines", "places", "countries", "scripts", "language", "language_confidence", "model")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    PLACES_FIELD_NUMBER: _ClassVar[int]
    COUNTRIES_FIELD_NUMBER: _ClassVar[int]
    SCRIPTS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[_common_pb2.WeightedPoint]
    lines: _containers.RepeatedCompositeFieldContainer[TextLine]
    places: _containers.RepeatedCompositeFieldContainer[NamedPlace]
    countries: _containers.RepeatedCompositeFieldContainer[CountryShare]
    scripts: _containers.RepeatedScalarFieldContainer[str]
    language: str
    language_confidence: float
    model: _common_pb2.ModelInfo
    def __init__(self, points: _Optional[_Iterable[_Union[_common_pb2.WeightedPoint, _Mapping]]] = ..., lines: _Optional[_Iterable[_Union[TextLine, _Mapping]]] = ..., places: _Optional[_Iterable[_Union[NamedPlace, _Mapping]]] = ..., countries: _Optional[_Iterable[_Union[CountryShare, _Mapping]]] = ..., scripts: _Optional[_Iterable[str]] = ..., language: _Optional[str] = ..., language_confidence: _Optional[float] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...
