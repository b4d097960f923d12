"""EfficientNet-Lite2 image features on Triton's Python backend.

Contract
- input ``IMAGE``, UINT8 [batch, 260, 260, 3]: RGB pixels, already centre-cropped and resized
  as the ``preprocess_*`` parameters of config.pbtxt describe (the embedding service does that
  geometry, so that requests of any photo size batch together and travel small).
- output ``EMBEDDING``, FP32 [batch, 1280]: the pooled feature before the ImageNet classifier,
  not L2-normalised.

The model normalises the pixels itself with ``preprocess_mean`` / ``preprocess_std``, so the
whole preprocessing is defined in one place, config.pbtxt. The instance kind picks the device:
KIND_CPU runs on the CPU, KIND_GPU on ``cuda:<device id>``; the same file serves both.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from backbone import FEATURE_DIM, network_from_parameters


def device_for_instance(kind: str, device_id: str) -> torch.device:
    """The torch device of a Triton model instance: KIND_GPU -> cuda:<id>, anything else -> cpu."""
    return torch.device(f"cuda:{int(device_id)}") if kind == "GPU" else torch.device("cpu")


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
        self.device = device_for_instance(args["model_instance_kind"], args["model_instance_device_id"])
        self.network = network_from_parameters(parameters, args["model_repository"]).to(self.device)
        declared = int(pb_utils.get_output_config_by_name(config, "EMBEDDING")["dims"][0])
        if declared != FEATURE_DIM:
            raise pb_utils.TritonModelException(
                f"EMBEDDING dims is {declared} in config.pbtxt; the network gives {FEATURE_DIM}"
            )

    def execute(self, requests: list) -> list:
        # The dynamic batcher hands over several requests: run them as one batch, split after.
        images = [pb_utils.get_input_tensor_by_name(r, "IMAGE").as_numpy() for r in requests]
        batch = torch.from_numpy(np.concatenate(images)).to(self.device)
        features = self.network(batch).cpu().numpy()
        bounds = np.cumsum([len(i) for i in images])[:-1]
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("EMBEDDING", part)])
            for part in np.split(features, bounds)
        ]
