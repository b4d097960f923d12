"""CLIP ViT-L/14 projected image features on Triton's Python backend (GeoCLIP's backbone).

Contract
- input ``IMAGE``, UINT8 [batch, 224, 224, 3]: RGB pixels, already resized and centre-cropped
  as the ``preprocess_*`` parameters of config.pbtxt describe.
- output ``EMBEDDING``, FP32 [batch, 768]: CLIP's projected image feature (``image_embeds``),
  not L2-normalised.

Weights come from the Hugging Face directory named by the ``weights_dir`` parameter, relative
to this model's folder unless absolute; no weights are fetched. Loading fails, with the
reason, when the checkpoint's image size or projection width disagrees with the dims declared
in config.pbtxt. The instance kind picks the device, as for efficientnet_lite2.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from backbone import network_from_parameters


def device_for_instance(kind: str, device_id: str) -> torch.device:
    return torch.device(f"cuda:{int(device_id)}") if kind == "GPU" else torch.device("cpu")


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
        self.device = device_for_instance(args["model_instance_kind"], args["model_instance_device_id"])
        network = network_from_parameters(parameters, args["model_repository"])
        image_dims = [int(d) for d in pb_utils.get_input_config_by_name(config, "IMAGE")["dims"]]
        feature_dims = [int(d) for d in pb_utils.get_output_config_by_name(config, "EMBEDDING")["dims"]]
        if image_dims != [network.image_size, network.image_size, 3] or feature_dims != [network.feature_dim]:
            raise pb_utils.TritonModelException(
                f"config.pbtxt declares IMAGE {image_dims} and EMBEDDING {feature_dims}, but the checkpoint in "
                f"{parameters['weights_dir']} takes {network.image_size}x{network.image_size} images "
                f"and gives {network.feature_dim}-d features"
            )
        self.network = network.to(self.device)

    def execute(self, requests: list) -> list:
        images = [pb_utils.get_input_tensor_by_name(r, "IMAGE").as_numpy() for r in requests]
        features = self.network(torch.from_numpy(np.concatenate(images)).to(self.device)).cpu().numpy()
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("EMBEDDING", part)])
            for part in np.split(features, np.cumsum([len(i) for i in images])[:-1])
        ]
