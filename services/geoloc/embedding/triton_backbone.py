"""The image backbone, as a model on a Triton Inference Server reached with tritonclient's gRPC API.

`TritonBackbone.connect` waits for the model to be READY, reads what it takes and returns
(input geometry, feature width, backbone name, version) from Triton itself, and runs one real
inference whose output it checks: a model can report READY and still answer empty or NaN
outputs when its Python stub runs against the wrong numpy (docs/design.md §4).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from geoloc.common.channels import reconnect_backoff_options
from geoloc.common.errors import DeadlineExceeded, NotReady, ResourceExhausted
from geoloc.common.logs import get_logger
from geoloc.common.tls import ClientTls
from geoloc.common.tracing import triton_headers, triton_inference
from geoloc.embedding.model_config import model_parameters
from geoloc.embedding.preprocessing import CropSpec


class BackboneError(RuntimeError):
    """The backbone answered something unusable (wrong shape, NaN): a server-side fault."""


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    model_name: str
    dimension: int
    max_batch_size: int
    l2_normalized: bool
    crop: CropSpec
    input_name: str
    output_name: str


class TritonBackbone:
    def __init__(self, client: triton_aio.InferenceServerClient, url: str, info: BackboneInfo, model_version: str):
        self._client = client
        self.url = url
        self.info = info
        self.model_version = model_version

    @classmethod
    async def connect(
        cls,
        url: str,
        model_name: str,
        model_version: str = "",
        ready_timeout_s: float = 300.0,
        tls: ClientTls | None = None,
    ) -> TritonBackbone:
        """The backbone on the Triton at `url`, once its model is READY and one inference checked out.

        With `tls`, the channel speaks TLS to Triton (started with --grpc-use-ssl), presenting
        the client certificate when `tls` has one (--grpc-use-ssl-mutual).
        """
        client = triton_client(url, tls)
        try:
            await wait_until_model_ready(client, model_name, model_version, ready_timeout_s)
            info = describe_backbone((await client.get_model_config(model_name, model_version, as_json=True))["config"])
            backbone = cls(client, url, info, model_version)
            await backbone.check()
        except BaseException:
            await client.close()
            raise
        return backbone

    async def check(self) -> None:
        """One real inference on a grey crop; raises BackboneError unless the output is usable."""
        side = self.info.crop.size
        await self.embed(np.full((1, side, side, 3), 128, dtype=np.uint8), timeout_s=60.0)

    async def embed(self, crops: np.ndarray, timeout_s: float) -> tuple[np.ndarray, str]:
        """Features [n, dimension] for uint8 crops [n, size, size, 3], and the model version that served them.

        Batches beyond the model's max_batch_size go as several concurrent requests, which
        Triton's dynamic batcher may regroup.
        """
        chunks = [crops[i : i + self.info.max_batch_size] for i in range(0, len(crops), self.info.max_batch_size)]
        results = await asyncio.gather(*(self._infer(chunk, timeout_s) for chunk in chunks))
        features = np.concatenate([features for features, _ in results])
        return features, results[0][1]

    async def _infer(self, crops: np.ndarray, timeout_s: float) -> tuple[np.ndarray, str]:
        image = triton_grpc.InferInput(self.info.input_name, list(crops.shape), "UINT8")
        image.set_data_from_numpy(np.ascontiguousarray(crops))
        try:
            with triton_inference(self.info.model_name, len(crops)):
                result = await self._client.infer(
                    self.info.model_name,
                    [image],
                    model_version=self.model_version,
                    outputs=[triton_grpc.InferRequestedOutput(self.info.output_name)],
                    client_timeout=timeout_s,
                    headers=triton_headers(),
                )
        except InferenceServerException as exc:
            raise mapped_triton_error(exc, self.url) from None
        features = result.as_numpy(self.info.output_name)
        expected = (len(crops), self.info.dimension)
        if features is None or features.shape != expected or not np.isfinite(features).all():
            got = None if features is None else features.shape
            raise BackboneError(
                f"{self.info.model_name} returned features of shape {got}, not {expected}, or non-finite values"
            )
        return features.astype(np.float32, copy=False), result.get_response().model_version

    async def model_config(self) -> dict:
        """The served model's config (Triton's JSON form of its config.pbtxt)."""
        return (await self._client.get_model_config(self.info.model_name, self.model_version, as_json=True))["config"]

    async def close(self) -> None:
        await self._client.close()


def triton_client(url: str, tls: ClientTls | None) -> triton_aio.InferenceServerClient:
    """An asyncio gRPC client of the Triton at `url`: TLS when `tls` is given (presenting the client
    certificate when it has one), with triton_channel_args."""
    return triton_aio.InferenceServerClient(
        url,
        creds=tls.credentials() if tls else None,
        channel_args=[*triton_channel_args(), *(tls.channel_options() if tls else [])],
    )


def triton_channel_args() -> list[tuple[str, int]]:
    """tritonclient's own message limits (no keepalive pings: Triton's defaults would answer pings
    from an idle client with GOAWAY), plus a short reconnect backoff: after a Triton restart
    the service should embed again within seconds, not after gRPC's backoff of up to 120 s."""
    return [
        ("grpc.max_send_message_length", triton_grpc.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", triton_grpc.MAX_GRPC_MESSAGE_SIZE),
        *reconnect_backoff_options(),
    ]


def describe_backbone(config: dict) -> BackboneInfo:
    """What a backbone model takes and returns, from its config (Triton's JSON form of config.pbtxt)."""
    parameters = model_parameters(config)
    if len(config["input"]) != 1 or len(config["output"]) != 1:
        raise BackboneError(f"{config['name']} must have one input and one output to serve as a backbone")
    output_dims = [int(d) for d in config["output"][0]["dims"]]
    if len(output_dims) != 1:
        raise BackboneError(f"{config['name']} outputs {output_dims}; a backbone outputs one feature vector")
    return BackboneInfo(
        name=parameters.get("backbone", config["name"]),
        model_name=config["name"],
        dimension=output_dims[0],
        max_batch_size=max(1, int(config.get("max_batch_size", 1))),
        l2_normalized=parameters.get("l2_normalized", "false").lower() == "true",
        crop=CropSpec.from_model_config(config),
        input_name=config["input"][0]["name"],
        output_name=config["output"][0]["name"],
    )


async def wait_until_model_ready(client, model_name: str, model_version: str, timeout_s: float) -> None:
    log = get_logger("geoloc.embedding")
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        try:
            if await client.is_model_ready(model_name, model_version, client_timeout=5):
                return
            reason = "model not ready"
        except InferenceServerException as exc:
            reason = exc.message()
        if time.monotonic() + delay > deadline:
            raise NotReady(f"Triton model {model_name!r} not ready after {timeout_s:.0f} s: {reason}")
        log.info("waiting_for_triton", model=model_name, reason=reason, retry_in_s=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


def mapped_triton_error(exc: InferenceServerException, url: str) -> Exception:
    status = exc.status() or ""
    if status.endswith("UNAVAILABLE"):
        return NotReady(f"the backbone's Triton server at {url} is unavailable: {exc.message()}")
    if status.endswith("DEADLINE_EXCEEDED"):
        return DeadlineExceeded(f"the backbone did not answer in time: {exc.message()}")
    if status.endswith("RESOURCE_EXHAUSTED"):
        return ResourceExhausted(f"the backbone's Triton server is out of capacity: {exc.message()}")
    return BackboneError(f"Triton failed the inference: {status} {exc.message()}")
