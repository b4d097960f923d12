from geoloc.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchRequest(_message.Message):
    __slots__ = ("embedding", "k")
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    embedding: _common_pb2.Embedding
    k: int
    def __init__(self, embedding: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ..., k: _Optional[int] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("points", "model", "gallery_size", "exact_normalizer")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GALLERY_SIZE_FIELD_NUMBER: _ClassVar[int]
    EXACT_NORMALIZER_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[_common_pb2.WeightedPoint]
    model: _common_pb2.ModelInfo
    gallery_size: int
    exact_normalizer: bool
    def __init__(self, points: _Optional[_Iterable[_Union[_common_pb2.WeightedPoint, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., gallery_size: _Optional[int] = ..., exact_normalizer: _Optional[bool] = ...) -> None: ...
