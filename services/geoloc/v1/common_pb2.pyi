from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WeightedPoint(_message.Message):
    __slots__ = ("lat_deg", "lon_deg", "weight", "radius_km")
    LAT_DEG_FIELD_NUMBER: _ClassVar[int]
    LON_DEG_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    RADIUS_KM_FIELD_NUMBER: _ClassVar[int]
    lat_deg: float
    lon_deg: float
    weight: float
    radius_km: float
    def __init__(self, lat_deg: _Optional[float] = ..., lon_deg: _Optional[float] = ..., weight: _Optional[float] = ..., radius_km: _Optional[float] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values", "backbone", "l2_normalized")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    L2_NORMALIZED_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    backbone: ModelInfo
    l2_normalized: bool
    def __init__(self, values: _Optional[_Iterable[float]] = ..., backbone: _Optional[_Union[ModelInfo, _Mapping]] = ..., l2_normalized: _Optional[bool] = ...) -> None: ...
