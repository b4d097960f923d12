"""model_repository/ configs, read as Triton serves them: the JSON form of config.pbtxt.

The embedding service gets that form from Triton's model-config API; tools and tests that run
a backbone in-process read the same file here, so both see one definition of a model's
preprocessing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from google.protobuf import json_format, text_format

from geoloc.common.paths import MODEL_REPOSITORY as DEFAULT_MODEL_REPOSITORY

DEFAULT_MODELS = ("efficientnet_lite2",)  # the backbones Triton loads by default; the first is the default backbone


def read_model_config(model: str, repository: Path = DEFAULT_MODEL_REPOSITORY, config_name: str | None = None) -> dict:
    """`<repository>/<model>/config.pbtxt` (or `configs/<config_name>.pbtxt`) as Triton's JSON dict."""
    from tritonclient.grpc import model_config_pb2

    folder = Path(repository) / model
    path = folder / "configs" / f"{config_name}.pbtxt" if config_name else folder / "config.pbtxt"
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def model_parameters(config: dict) -> dict[str, str]:
    """A model config's `parameters`, as plain strings."""
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def float_parameter(config: dict, key: str) -> list[float]:
    """A comma-separated list of numbers among a model config's parameters (preprocess_mean, ...)."""
    return [float(v) for v in model_parameters(config)[key].split(",")]


def load_backbone_module(model: str, repository: Path = DEFAULT_MODEL_REPOSITORY) -> ModuleType:
    """A model's `1/backbone.py` (its plain torch network), imported to run in-process.

    Each model has one, so each is imported under its model's name.
    """
    spec = importlib.util.spec_from_file_location(f"{model}_backbone", Path(repository) / model / "1" / "backbone.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
