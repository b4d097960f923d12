"""A probe GalleryService for testing the server factory, not the gallery.

Only the domain is a stand-in here: the server, interceptor, health, reflection and
metrics it runs behind are the real ones. Its behaviour is driven by the request:
- `k` outside [1, 1000] raises InvalidArgument on field `k`;
- `k == 13` raises an unexpected RuntimeError (the INTERNAL mapping);
- `k == 14` raises TimeoutError, as a wait on a dependency's deadline would;
- `k == 15` aborts with PERMISSION_DENIED itself (a status the handler chose);
- metadata `x-probe-delay-s` makes the call sleep first (a slow call in flight);
- with `forward_to` set, the call is forwarded to another server (request-id propagation).
Each answer reports, in its model version, the request id the handler saw.
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from pydantic_settings import SettingsConfigDict

from geoloc.common.channels import create_channel
from geoloc.common.errors import InvalidArgument
from geoloc.common.logs import current_request_id
from geoloc.common.server import ServiceSpec, run_service, service_name, servicer_spec
from geoloc.common.settings import ServerSettings
from geoloc.v1 import common_pb2, gallery_pb2, gallery_pb2_grpc

GALLERY_SERVICE = service_name(gallery_pb2, "GalleryService")
SECRET = "secret-internal-detail"


class ProbeGallery(gallery_pb2_grpc.GalleryServiceServicer):
    def __init__(self, warm_up_gate: asyncio.Event | None = None, forward_to: str | None = None):
        self.warm_up_gate = warm_up_gate
        self.forward_to = forward_to
        self.channel = None

    async def warm_up(self) -> None:
        if self.warm_up_gate is not None:
            await self.warm_up_gate.wait()
        if self.forward_to:
            self.channel = create_channel(self.forward_to)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()

    async def Search(self, request, context):
        if not 1 <= request.k <= 1000:
            raise InvalidArgument("k", f"must be in [1, 1000], got {request.k}")
        if request.k == 13:
            raise RuntimeError(SECRET)
        if request.k == 14:
            raise TimeoutError("the probe's dependency did not answer in time")
        if request.k == 15:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "probe: not allowed")
        delay = dict(context.invocation_metadata()).get("x-probe-delay-s")
        if delay:
            await asyncio.sleep(float(delay))
        if self.channel is not None:
            return await gallery_pb2_grpc.GalleryServiceStub(self.channel).Search(request, timeout=5)
        seen = common_pb2.ModelInfo(name="probe", version=current_request_id() or "")
        points = [common_pb2.WeightedPoint(lat_deg=10.0, lon_deg=20.0, weight=1.0)] * request.k
        return gallery_pb2.SearchResponse(points=points, model=seen, gallery_size=1, exact_normalizer=True)


def probe_spec(servicer: ProbeGallery) -> ServiceSpec:
    return servicer_spec(gallery_pb2, "GalleryService", gallery_pb2_grpc.add_GalleryServiceServicer_to_server, servicer)


class ProbeSettings(ServerSettings):
    model_config = SettingsConfigDict(env_prefix="GEOLOC_PROBE_")


if __name__ == "__main__":
    # A probe server process, configured by GEOLOC_PROBE_* variables; the tests send it signals.
    sys.exit(run_service(ProbeSettings, lambda settings: [probe_spec(ProbeGallery())]))
