from geoloc.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SamplingMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLING_METHOD_UNSPECIFIED: _ClassVar[SamplingMethod]
    SAMPLING_METHOD_FLOW: _ClassVar[SamplingMethod]
    SAMPLING_METHOD_SH_DIFFUSION: _ClassVar[SamplingMethod]
SAMPLING_METHOD_UNSPECIFIED: SamplingMethod
SAMPLING_METHOD_FLOW: SamplingMethod
SAMPLING_METHOD_SH_DIFFUSION: SamplingMethod

class SampleRequest(_message.Message):
    __slots__ = ("embedding", "n_samples", "steps", "guidance", "method", "seed")
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    embedding: _common_pb2.Embedding
    n_samples: int
    steps: int
    guidance: float
    method: SamplingMethod
    seed: int
    def __init__(self, embedding: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ..., n_samples: _Optional[int] = ..., steps: _Optional[int] = ..., guidance: _Optional[float] = ..., method: _Optional[_Union[SamplingMethod, str]] = ..., seed: _Optional[int] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("samples", "modes", "mean_log_density", "method", "model", "seed")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MODES_FIELD_NUMBER: _ClassVar[int]
    MEAN_LOG_DENSITY_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[_common_pb2.WeightedPoint]
    modes: _containers.RepeatedCompositeFieldContainer[_common_pb2.WeightedPoint]
    mean_log_density: float
    method: SamplingMethod
    model: _common_pb2.ModelInfo
    seed: int
    def __init__(self, samples: _Optional[_Iterable[_Union[_common_pb2.WeightedPoint, _Mapping]]] = ..., modes: _Optional[_Iterable[_Union[_common_pb2.WeightedPoint, _Mapping]]] = ..., mean_log_density: _Optional[float] = ..., method: _Optional[_Union[SamplingMethod, str]] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...
