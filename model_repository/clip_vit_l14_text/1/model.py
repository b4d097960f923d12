"""CLIP ViT-L/14 projected text features on Triton's Python backend (the tower beside clip_vit_l14).

Contract
- input ``TEXT``, STRING [batch, 1]: one UTF-8 text per row (a place description, a caption).
- output ``EMBEDDING``, FP32 [batch, 768]: CLIP's projected text feature (``text_embeds``), not
  L2-normalised, in the image tower's space.
- output ``TRUNCATED``, BOOL [batch, 1]: the text had more tokens than CLIP's context (77 with
  its start and end tokens) and only its beginning was read.

Tokenising here, with the checkpoint's own tokenizer, keeps the text's whole preprocessing with
the weights it belongs to. Loading fails, with the reason, when the checkpoint's projection width
disagrees with the EMBEDDING dims of config.pbtxt. The instance kind picks the device.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from text_tower import network_from_parameters


def device_for_instance(kind: str, device_id: str) -> torch.device:
    return torch.device(f"cuda:{int(device_id)}") if kind == "GPU" else torch.device("cpu")


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
        self.device = device_for_instance(args["model_instance_kind"], args["model_instance_device_id"])
        network = network_from_parameters(parameters, args["model_repository"])
        declared = [int(d) for d in pb_utils.get_output_config_by_name(config, "EMBEDDING")["dims"]]
        if declared != [network.feature_dim]:
            raise pb_utils.TritonModelException(
                f"config.pbtxt declares EMBEDDING {declared}, but the checkpoint in {parameters['weights_dir']} "
                f"gives {network.feature_dim}-d text features"
            )
        self.network = network.to(self.device)

    def execute(self, requests: list) -> list:
        rows = [pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy().reshape(-1) for r in requests]
        texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in np.concatenate(rows)]
        features, truncated = self.network(texts, self.device)
        features, truncated = features.cpu().numpy(), truncated.numpy()[:, np.newaxis]
        bounds = np.cumsum([len(r) for r in rows])[:-1]
        return [
            pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("EMBEDDING", f), pb_utils.Tensor("TRUNCATED", t)]
            )
            for f, t in zip(np.split(features, bounds), np.split(truncated, bounds), strict=True)
        ]
