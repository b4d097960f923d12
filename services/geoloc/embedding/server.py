"""The embedding service's gRPC edge: photo bytes in, the backbone's feature vector out.

Photos are decoded and cropped here, off the event loop; the backbone runs on Triton. Every
response names the backbone, its Triton model version and the feature's dimension, so that
experts can refuse a feature from a backbone their heads were not trained on.
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np

from geoloc.artifacts.bundles import Bundle, BundleError
from geoloc.common.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotReady
from geoloc.common.server import ServiceSpec, run_service, servicer_spec
from geoloc.common.texts import validated_text
from geoloc.common.tracing import step
from geoloc.embedding.config import EmbeddingSettings
from geoloc.embedding.preprocessing import declared_preprocessing, model_input_from_photo
from geoloc.embedding.triton_backbone import BackboneInfo, TritonBackbone
from geoloc.embedding.triton_text import TritonTextTower
from geoloc.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc

# Left of the caller's deadline for our own reply to travel back.
DEADLINE_MARGIN_S = 0.02


def check_bundle_backbone(bundle: Bundle, served: BackboneInfo, preprocessing: dict) -> None:
    """Raises BundleError unless the model Triton serves is the bundle's backbone: its name, feature
    width and preprocessing as recorded when the bundle was built (the weights' sha256 is checked by
    `geoloc bundle verify`, where the weights are: Triton holds them, not this service)."""
    recorded = bundle.backbone
    found = {"name": served.name, "dimension": served.dimension, "preprocessing": preprocessing}
    wrong = [key for key, value in found.items() if value != recorded[key]]
    if wrong:
        details = "; ".join(f"{key} {found[key]!r}, recorded {recorded[key]!r}" for key in wrong)
        raise BundleError(
            f"Triton's {served.model_name} is not the backbone of the bundle {bundle.root} (version "
            f"{bundle.version}): {details}"
        )


class EmbeddingServicer(embedding_pb2_grpc.EmbeddingServiceServicer):
    def __init__(self, settings: EmbeddingSettings):
        self.settings = settings
        self.limits = settings.photo_limits()
        self._backbone: TritonBackbone | None = None
        self._text: TritonTextTower | None = None

    async def warm_up(self) -> None:
        s = self.settings
        bundle = None if s.bundle is None else Bundle.read(s.bundle)
        model = s.model_name if bundle is None else bundle.backbone["model"]
        backbone = await TritonBackbone.connect(
            s.triton_url, model, s.model_version, s.triton_ready_timeout_s, tls=s.client_tls()
        )
        try:
            if bundle is not None:
                check_bundle_backbone(bundle, backbone.info, declared_preprocessing(await backbone.model_config()))
            text_model = s.text_model_name if bundle is None else bundle.backbone.get("text_model", "")
            if text_model:
                self._text = await TritonTextTower.connect(
                    s.triton_url, text_model, backbone.info, "", s.triton_ready_timeout_s, tls=s.client_tls()
                )
        except BaseException:
            await backbone.close()
            raise
        self._backbone = backbone

    async def close(self) -> None:
        for model in (self._backbone, self._text):
            if model is not None:
                await model.close()

    @property
    def backbone(self) -> TritonBackbone:
        if self._backbone is None:
            raise NotReady("the backbone is not connected yet")
        return self._backbone

    async def Embed(self, request: embedding_pb2.EmbedRequest, context) -> embedding_pb2.EmbedResponse:
        with step("embedding.decode_photo"):
            crop = await asyncio.to_thread(self._crop, request.image, "image")
        features, version = await self.backbone.embed(crop[np.newaxis], self._timeout_s(context))
        return embedding_pb2.EmbedResponse(embedding=self._embedding(features[0], version), dimension=features.shape[1])

    async def EmbedBatch(self, request: embedding_pb2.EmbedBatchRequest, context) -> embedding_pb2.EmbedBatchResponse:
        count = len(request.images)
        if not 1 <= count <= self.settings.max_batch_images:
            raise InvalidArgument("images", f"must hold 1 to {self.settings.max_batch_images} photos, got {count}")
        # Decode in parallel (Pillow releases the GIL), but report the first bad photo by index,
        # whichever thread finished first: the whole batch is refused when any photo is bad.
        with step("embedding.decode_photos", photos=count):
            crops = await asyncio.gather(
                *(asyncio.to_thread(self._crop, data, f"images[{i}]") for i, data in enumerate(request.images)),
                return_exceptions=True,
            )
        for crop in crops:
            if isinstance(crop, BaseException):
                raise crop
        features, version = await self.backbone.embed(np.stack(crops), self._timeout_s(context))
        return embedding_pb2.EmbedBatchResponse(
            embeddings=[self._embedding(vector, version) for vector in features], dimension=features.shape[1]
        )

    async def EmbedText(self, request: embedding_pb2.EmbedTextRequest, context) -> embedding_pb2.EmbedTextResponse:
        backbone = self.backbone
        if self._text is None:
            raise FailedPrecondition(
                f"the backbone {backbone.info.name!r} is served without a text tower; deploy one that has it "
                "(clip_vit_l14 with clip_vit_l14_text) and set GEOLOC_EMBEDDING_TEXT_MODEL_NAME"
            )
        text = validated_text(request.text, self.settings.max_text_chars, "text")
        embedded = await self._text.embed(text, self._timeout_s(context))
        return embedding_pb2.EmbedTextResponse(
            embedding=self._embedding(embedded.values, embedded.version),
            dimension=len(embedded.values),
            truncated=embedded.truncated,
        )

    def _crop(self, data: bytes, field: str) -> np.ndarray:
        return model_input_from_photo(data, self.limits, self.backbone.info.crop, field)

    def _timeout_s(self, context) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            return self.settings.triton_timeout_s
        if remaining <= DEADLINE_MARGIN_S:
            raise DeadlineExceeded("the deadline passed before the backbone could be called")
        return min(self.settings.triton_timeout_s, remaining - DEADLINE_MARGIN_S)

    def _embedding(self, vector: np.ndarray, version: str) -> common_pb2.Embedding:
        info = self.backbone.info
        return common_pb2.Embedding(
            values=vector.tolist(),
            backbone=common_pb2.ModelInfo(name=info.name, version=version),
            l2_normalized=info.l2_normalized,
        )


def embedding_spec(servicer: EmbeddingServicer) -> ServiceSpec:
    return servicer_spec(
        embedding_pb2, "EmbeddingService", embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server, servicer
    )


if __name__ == "__main__":
    sys.exit(run_service(EmbeddingSettings, lambda settings: [embedding_spec(EmbeddingServicer(settings))]))
