"""model_repository/: the Triton models serve exactly their torch networks, on a real tritonserver."""

from __future__ import annotations

import asyncio
import shutil

import grpc
import numpy as np
import pytest
import torch

from geoloc.common.ports import free_port
from geoloc.embedding.model_config import (
    DEFAULT_MODEL_REPOSITORY,
    float_parameter,
    load_backbone_module,
    model_parameters,
    read_model_config,
)
from geoloc.embedding.preprocessing import CropSpec
from geoloc.tritonserver.launcher import TritonLaunch, TritonServer
from tests.tiny_clip import tiny_clip_checkpoint

MODELS = ("efficientnet_lite2", "clip_vit_l14")


def triton_features(url: str, model: str, crops: np.ndarray) -> np.ndarray:
    import tritonclient.grpc as triton_grpc

    image = triton_grpc.InferInput("IMAGE", list(crops.shape), "UINT8")
    image.set_data_from_numpy(crops)
    with triton_grpc.InferenceServerClient(url) as client:
        return client.infer(model, [image], client_timeout=60).as_numpy("EMBEDDING")


@pytest.mark.parametrize("model", MODELS)
def test_the_gpu_config_differs_from_the_cpu_one_only_in_its_instance_kind(model):
    cpu = read_model_config(model)
    gpu = read_model_config(model, config_name="gpu")
    assert [g["kind"] for g in cpu.pop("instance_group")] == ["KIND_CPU"]
    assert [g["kind"] for g in gpu.pop("instance_group")] == ["KIND_GPU"]
    assert cpu == gpu


@pytest.mark.parametrize("model", MODELS)
def test_each_model_declares_batching_warm_up_and_a_complete_preprocessing(model):
    config = read_model_config(model)
    assert config["name"] == model and config["backend"] == "python"
    assert config["max_batch_size"] >= 8 and "dynamic_batching" in config and len(config["model_warmup"]) >= 1
    assert CropSpec.from_model_config(config).size == int(config["input"][0]["dims"][0])
    assert len(float_parameter(config, "preprocess_mean")) == len(float_parameter(config, "preprocess_std")) == 3
    assert model_parameters(config)["l2_normalized"] == "false"


def test_triton_serves_the_same_features_as_the_torch_network_in_process(triton, photos):
    from PIL import Image

    config = read_model_config("efficientnet_lite2")
    network = load_backbone_module("efficientnet_lite2").EfficientNetLite2Features(
        float_parameter(config, "preprocess_mean"), float_parameter(config, "preprocess_std")
    )
    crop = CropSpec.from_model_config(config)
    crops = np.stack([crop.model_input(Image.open(p).convert("RGB")) for p in photos[:3]])
    expected = network(torch.from_numpy(crops)).numpy()
    served = triton_features(triton.grpc_url, "efficientnet_lite2", crops)
    assert served.shape == expected.shape == (3, 1280)
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def clip_triton(tmp_path_factory):
    """Triton serving clip_vit_l14 from a repository copy whose weights/ holds a tiny checkpoint."""
    repository = tmp_path_factory.mktemp("repository")
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "clip_vit_l14", repository / "clip_vit_l14")
    tiny_clip_checkpoint(repository / "clip_vit_l14" / "weights")
    with TritonServer(
        TritonLaunch(model_repository=repository, models=("clip_vit_l14",), grpc_port=free_port(), metrics_port=None)
    ) as server:
        yield server, repository
    assert server.returncode == 0, server.log_tail()
    assert "successfully unloaded 'clip_vit_l14'" in server.log_path.read_text()


@pytest.mark.integration  # starts its own Triton
def test_clip_loads_from_a_local_hugging_face_directory_and_serves_its_projected_feature(clip_triton):
    from transformers import CLIPVisionModelWithProjection

    server, repository = clip_triton
    crops = np.random.default_rng(0).integers(0, 256, size=(2, 224, 224, 3), dtype=np.uint8)
    served = triton_features(server.grpc_url, "clip_vit_l14", crops)
    config = read_model_config("clip_vit_l14", repository)
    mean = torch.tensor(float_parameter(config, "preprocess_mean")).view(1, 3, 1, 1)
    std = torch.tensor(float_parameter(config, "preprocess_std")).view(1, 3, 1, 1)
    reference = CLIPVisionModelWithProjection.from_pretrained(repository / "clip_vit_l14" / "weights").eval()
    with torch.no_grad():
        pixels = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() - mean) / std
        expected = reference(pixel_values=pixels).image_embeds.numpy()
    assert served.shape == (2, 768)
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.integration  # starts its own Triton
def test_the_embedding_service_serves_clip_when_configured_to(clip_triton, photos):
    from geoloc.common.server import serving
    from geoloc.embedding.config import EmbeddingSettings
    from geoloc.embedding.server import EmbeddingServicer, embedding_spec
    from geoloc.v1 import embedding_pb2, embedding_pb2_grpc

    server_, _ = clip_triton
    settings = EmbeddingSettings(port=0, metrics_port=None, triton_url=server_.grpc_url, model_name="clip_vit_l14")

    async def scenario():
        async with serving(settings, [embedding_spec(EmbeddingServicer(settings))]) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
                return await stub.Embed(embedding_pb2.EmbedRequest(image=photos[0].read_bytes()), timeout=30)

    response = asyncio.run(scenario())
    assert response.dimension == 768 == len(response.embedding.values)
    assert (response.embedding.backbone.name, response.embedding.backbone.version) == ("clip-vit-l14", "1")


@pytest.mark.integration  # starts its own Triton
def test_a_checkpoint_that_disagrees_with_the_declared_dims_fails_to_load_saying_why(tmp_path):
    from geoloc.tritonserver.launcher import TritonStartError

    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "clip_vit_l14", tmp_path / "clip_vit_l14")
    tiny_clip_checkpoint(tmp_path / "clip_vit_l14" / "weights", projection_dim=512)
    launch = TritonLaunch(model_repository=tmp_path, models=("clip_vit_l14",), grpc_port=free_port(), metrics_port=None)
    triton = TritonServer(launch)
    triton.start()
    try:
        with pytest.raises(TritonStartError) as error:
            triton.wait_until_ready(timeout_s=120)
    finally:
        triton.stop()
    assert "gives 512-d features" in str(error.value) or "gives 512-d features" in triton.log_path.read_text()
