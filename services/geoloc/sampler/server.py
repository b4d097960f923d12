"""The sampler service's gRPC edge: an embedding in, samples of where the photo was taken out.

Sampling is a burst of matrix products that already uses every core through torch's own
threads, so requests run one batch at a time, off the event loop: concurrent requests with the
same method, samples, steps and guidance are batched together (geoloc.common.batching), each
step one forward pass for all of them, each photo's noise from its own seed. The same seed and
request give the same samples: the noise comes from a generator seeded per call, and the unset
seed is drawn here and returned, so any answer can be reproduced.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import sys
from dataclasses import dataclass

import numpy as np
import torch

from geoloc.artifacts.bundles import Bundle
from geoloc.common.batching import Batcher
from geoloc.common.embeddings import validated_embedding
from geoloc.common.errors import FailedPrecondition, InvalidArgument, NotReady, defaulted_in_range, named_enum_value
from geoloc.common.metrics import BatchMetrics, ServerMetrics
from geoloc.common.server import ServiceSpec, run_service, servicer_spec
from geoloc.common.tracing import step
from geoloc.geo.sphere import unit_to_latlon
from geoloc.sampler.answers import photo_samples
from geoloc.sampler.config import SamplerSettings
from geoloc.sampler.density import summarize_samples
from geoloc.sampler.model import LocationSampler, load_sampler
from geoloc.v1 import common_pb2, sampler_pb2, sampler_pb2_grpc

METHOD_NAMES = {sampler_pb2.SAMPLING_METHOD_FLOW: "flow", sampler_pb2.SAMPLING_METHOD_SH_DIFFUSION: "sh"}
METHOD_ENUMS = {name: value for value, name in METHOD_NAMES.items()}


@dataclass(frozen=True, eq=False)
class PhotoToSample:
    sampler: LocationSampler
    feature: np.ndarray  # [d]
    n_samples: int
    steps: int
    guidance: float
    seed: int

    def batch_key(self) -> tuple:
        return (self.sampler.method, self.n_samples, self.steps, self.guidance)


class SamplerServicer(sampler_pb2_grpc.SamplerServiceServicer):
    def __init__(self, settings: SamplerSettings):
        self.settings = settings
        self._samplers: dict[str, LocationSampler] = {}
        self._batcher: Batcher | None = None
        self._batch_metrics: BatchMetrics | None = None

    async def warm_up(self) -> None:
        self._samplers = await asyncio.to_thread(self._load)
        # Concurrent requests alike in all but their photo and seed share each step's forward pass.
        self._batcher = Batcher(
            self._draw_batch,
            max_batch=self.settings.max_batch,
            key=PhotoToSample.batch_key,
            metrics=self._batch_metrics,
        )
        for name, sampler in self._samplers.items():  # one real, small call per method before SERVING
            probe = sampler_pb2.SampleRequest(
                embedding=common_pb2.Embedding(values=[0.5] * sampler.in_dim),
                n_samples=8,
                steps=2,
                method=METHOD_ENUMS[name],
                seed=0,
            )
            answer = await self.Sample(probe, None)
            if len(answer.samples) != 8 or not math.isfinite(answer.mean_log_density):
                raise RuntimeError(f"the {name} sampler's warm-up call gave a malformed answer")

    def bind_metrics(self, metrics: ServerMetrics) -> None:
        self._batch_metrics = metrics.batcher("sampler")

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()

    def _load(self) -> dict[str, LocationSampler]:
        s = self.settings
        device = "cuda" if s.use_gpu and torch.cuda.is_available() else "cpu"
        bundle = None if s.bundle is None else Bundle.read(s.bundle)
        if bundle is None:
            paths = {"flow": s.flow_checkpoint, "sh": s.sh_checkpoint}
        else:
            paths = {name: bundle.file(name) for name in ("flow", "sh") if name in bundle.files}
        loaded = {name: load_sampler(path, device) for name, path in paths.items() if path is not None}
        for name, sampler in loaded.items():
            if sampler.method != name:
                raise ValueError(f"{paths[name]} holds a {sampler.method!r} sampler, configured as the {name!r} one")
            if bundle is not None:
                bundle.check_served(f"{name} sampler", sampler.backbone, sampler.in_dim)
        if s.default_method not in loaded:
            raise ValueError(f"the default method {s.default_method!r} has no checkpoint configured")
        return loaded

    def _resolve(self, request: sampler_pb2.SampleRequest) -> tuple[LocationSampler, int, int, float]:
        s = self.settings
        name = named_enum_value("method", request.method, METHOD_NAMES, s.default_method, "SamplingMethod")
        if name not in self._samplers:
            raise FailedPrecondition(f"method: {name!r} is not served by this sampler (no checkpoint configured)")
        sampler = self._samplers[name]
        n_samples = defaulted_in_range("n_samples", request.n_samples, s.default_samples, 2, s.max_samples)
        steps = defaulted_in_range("steps", request.steps, s.default_steps, 1, s.max_steps)
        if n_samples * steps > s.max_sample_steps:
            raise InvalidArgument(
                "n_samples", f"x steps is {n_samples * steps}; at most {s.max_sample_steps} per request"
            )
        guidance = request.guidance if request.HasField("guidance") else sampler.default_guidance
        if not (math.isfinite(guidance) and 0 <= guidance <= s.max_guidance):
            raise InvalidArgument("guidance", f"must be in [0, {s.max_guidance}], got {guidance}")
        return sampler, n_samples, steps, guidance

    async def Sample(self, request: sampler_pb2.SampleRequest, context) -> sampler_pb2.SampleResponse:
        if not self._samplers:
            raise NotReady("the sampler models are still loading")
        sampler, n_samples, steps, guidance = self._resolve(request)
        feature = validated_embedding(request.embedding, sampler.in_dim, sampler.backbone, f"{sampler.method} sampler")
        seed = request.seed if request.HasField("seed") else secrets.randbits(63)
        with step("sampler.sample"):
            xyz, summary = await self._batcher.submit(PhotoToSample(sampler, feature, n_samples, steps, guidance, seed))
        lat, lon = unit_to_latlon(xyz)
        return sampler_pb2.SampleResponse(
            samples=[
                common_pb2.WeightedPoint(lat_deg=float(a), lon_deg=float(o), weight=1.0 / n_samples)
                for a, o in zip(lat, lon, strict=True)
            ],
            modes=[
                common_pb2.WeightedPoint(
                    lat_deg=m.lat_deg, lon_deg=m.lon_deg, weight=m.mass, radius_km=summary.radius_km
                )
                for m in summary.modes
            ],
            mean_log_density=summary.mean_log_density,
            method=METHOD_ENUMS[sampler.method],
            model=common_pb2.ModelInfo(name=f"sampler-{sampler.method}/{sampler.backbone}", version=sampler.version),
            seed=seed,
        )

    @staticmethod
    def _draw_batch(photos: list[PhotoToSample]) -> list[tuple[np.ndarray, object]]:
        """Every photo's samples in one pass of the network a step; each from its own seed's noise."""
        first = photos[0]
        features = np.stack([photo.feature for photo in photos])
        seeds = [photo.seed for photo in photos]
        xyz = photo_samples(first.sampler, features, first.n_samples, first.steps, first.guidance, seeds)
        return [(places, summarize_samples(places)) for places in xyz]


def sampler_spec(servicer: SamplerServicer) -> ServiceSpec:
    return servicer_spec(sampler_pb2, "SamplerService", sampler_pb2_grpc.add_SamplerServiceServicer_to_server, servicer)


if __name__ == "__main__":
    sys.exit(run_service(SamplerSettings, lambda settings: [sampler_spec(SamplerServicer(settings))]))
