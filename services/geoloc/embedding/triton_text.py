"""The backbone's text tower, as a Triton model beside the image one (clip_vit_l14_text).

`TritonTextTower.connect` waits for the model, reads its width and backbone name from Triton,
refuses a tower that is not the image backbone's twin (another backbone, or another width: its
features would be searched in a space they are not in), and checks one real inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from geoloc.common.tls import ClientTls
from geoloc.common.tracing import triton_headers, triton_inference
from geoloc.embedding.model_config import model_parameters
from geoloc.embedding.triton_backbone import (
    BackboneError,
    BackboneInfo,
    mapped_triton_error,
    triton_client,
    wait_until_model_ready,
)

TEXT_INPUT, FEATURE_OUTPUT, TRUNCATED_OUTPUT = "TEXT", "EMBEDDING", "TRUNCATED"


@dataclass(frozen=True)
class TextEmbedding:
    values: np.ndarray  # float32 [dimension]
    truncated: bool  # the text was longer than the tower's context and cut
    version: str  # of the Triton model that served it


class TritonTextTower:
    def __init__(
        self, client: triton_aio.InferenceServerClient, url: str, model_name: str, model_version: str, dimension: int
    ):
        self._client = client
        self.url, self.model_name, self.model_version, self.dimension = url, model_name, model_version, dimension

    @classmethod
    async def connect(
        cls,
        url: str,
        model_name: str,
        image: BackboneInfo,
        model_version: str = "",
        ready_timeout_s: float = 300.0,
        tls: ClientTls | None = None,
    ) -> TritonTextTower:
        """The text tower on the Triton at `url`, once READY, checked against the image backbone `image`."""
        client = triton_client(url, tls)
        try:
            await wait_until_model_ready(client, model_name, model_version, ready_timeout_s)
            config = (await client.get_model_config(model_name, model_version, as_json=True))["config"]
            check_twin(config, image)
            tower = cls(client, url, model_name, model_version, image.dimension)
            await tower.embed("a photo", timeout_s=60.0)
        except BaseException:
            await client.close()
            raise
        return tower

    async def embed(self, text: str, timeout_s: float) -> TextEmbedding:
        data = triton_grpc.InferInput(TEXT_INPUT, [1, 1], "BYTES")
        data.set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=np.object_))
        try:
            with triton_inference(self.model_name, 1):
                result = await self._client.infer(
                    self.model_name,
                    [data],
                    model_version=self.model_version,
                    outputs=[triton_grpc.InferRequestedOutput(n) for n in (FEATURE_OUTPUT, TRUNCATED_OUTPUT)],
                    client_timeout=timeout_s,
                    headers=triton_headers(),
                )
        except InferenceServerException as exc:
            raise mapped_triton_error(exc, self.url) from None
        features, truncated = result.as_numpy(FEATURE_OUTPUT), result.as_numpy(TRUNCATED_OUTPUT)
        if features is None or features.shape != (1, self.dimension) or not np.isfinite(features).all():
            got = None if features is None else features.shape
            raise BackboneError(
                f"{self.model_name} returned features of shape {got}, not (1, {self.dimension}), or non-finite values"
            )
        version = result.get_response().model_version
        return TextEmbedding(features[0].astype(np.float32), bool(np.asarray(truncated).any()), version)

    async def close(self) -> None:
        await self._client.close()


def check_twin(config: dict, image: BackboneInfo) -> None:
    """Raises BackboneError unless the text model `config` (Triton's JSON form) embeds into the image
    backbone's space: the same backbone name and feature width."""
    name = model_parameters(config).get("backbone", config["name"])
    outputs = {o["name"]: [int(d) for d in o["dims"]] for o in config["output"]}
    if FEATURE_OUTPUT not in outputs or TRUNCATED_OUTPUT not in outputs:
        raise BackboneError(
            f"{config['name']} must output {FEATURE_OUTPUT} and {TRUNCATED_OUTPUT} to serve as a text tower"
        )
    if name != image.name or outputs[FEATURE_OUTPUT] != [image.dimension]:
        raise BackboneError(
            f"the text model {config['name']} embeds {outputs[FEATURE_OUTPUT]}-d {name!r} features, but the image "
            f"backbone {image.model_name} gives {image.dimension}-d {image.name!r} ones: a text must land in the "
            "photos' space"
        )
