from geoloc.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DecodeStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECODE_STRATEGY_UNSPECIFIED: _ClassVar[DecodeStrategy]
    DECODE_STRATEGY_GREEDY: _ClassVar[DecodeStrategy]
    DECODE_STRATEGY_BEAM: _ClassVar[DecodeStrategy]
    DECODE_STRATEGY_SAMPLE: _ClassVar[DecodeStrategy]
DECODE_STRATEGY_UNSPECIFIED: DecodeStrategy
DECODE_STRATEGY_GREEDY: DecodeStrategy
DECODE_STRATEGY_BEAM: DecodeStrategy
DECODE_STRATEGY_SAMPLE: DecodeStrategy

class DecodeRequest(_message.Message):
    __slots__ = ("embedding", "strategy", "beam_width", "n_samples", "temperature", "max_level", "neighbors", "seed")
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    BEAM_WIDTH_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_LEVEL_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    embedding: _common_pb2.Embedding
    strategy: DecodeStrategy
    beam_width: int
    n_samples: int
    temperature: float
    max_level: int
    neighbors: _containers.RepeatedCompositeFieldContainer[_common_pb2.WeightedPoint]
    seed: int
    def __init__(self, embedding: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ..., strategy: _Optional[_Union[DecodeStrategy, str]] = ..., beam_width: _Optional[int] = ..., n_samples: _Optional[int] = ..., temperature: _Optional[float] = ..., max_level: _Optional[int] = ..., neighbors: _Optional[_Iterable[_Union[_common_pb2.WeightedPoint, _Mapping]]] = ..., seed: _Optional[int] = ...) -> None: ...

class Cell(_message.Message):
    __slots__ = ("tokens", "cell_id", "s2_token", "level", "lat_deg", "lon_deg", "probability", "log_probability")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    CELL_ID_FIELD_NUMBER: _ClassVar[int]
    S2_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    LAT_DEG_FIELD_NUMBER: _ClassVar[int]
    LON_DEG_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    LOG_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[int]
    cell_id: int
    s2_token: str
    level: int
    lat_deg: float
    lon_deg: float
    probability: float
    log_probability: float
    def __init__(self, tokens: _Optional[_Iterable[int]] = ..., cell_id: _Optional[int] = ..., s2_token: _Optional[str] = ..., level: _Optional[int] = ..., lat_deg: _Optional[float] = ..., lon_deg: _Optional[float] = ..., probability: _Optional[float] = ..., log_probability: _Optional[float] = ...) -> None: ...

class DecodeResponse(_message.Message):
    __slots__ = ("cells", "points", "strategy", "model")
    CELLS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    cells: _containers.RepeatedCompositeFieldContainer[Cell]
    points: _containers.RepeatedCompositeFieldContainer[_common_pb2.WeightedPoint]
    strategy: DecodeStrategy
    model: _common_pb2.ModelInfo
    def __init__(self, cells: _Optional[_Iterable[_Union[Cell, _Mapping]]] = ..., points: _Optional[_Iterable[_Union[_common_pb2.WeightedPoint, _Mapping]]] = ..., strategy: _Optional[_Union[DecodeStrategy, str]] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...
