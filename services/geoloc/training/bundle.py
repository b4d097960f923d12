"""A model bundle: one versioned folder with everything a deployment needs for one backbone.

    bundle.json                        what the bundle is: its backbone, its files and their sha256
    model_repository/<model>/          the Triton model: config.pbtxt, configs/, 1/ (and weights/ where it has them)
    experts/gallery/head.pt + .json    every expert's checkpoint with its manifest
    experts/sampler/flow.pt, sh.pt + .json
    experts/tokens/decoder.pt + .json
    fusion/fusion.json                 the fusion parameters

`build_bundle` assembles one from a model repository and a models folder (the shipped `models/` by
default: today's shipped models are the default bundle) and refuses experts trained on another
backbone or feature width than the Triton model serves. `verify_bundle` lists what is wrong with
one: a file missing or changed since it was built, an expert of another backbone or width, a Triton
model whose preprocessing, width or weights differ from those recorded. The version is a hash of
every file, so two bundles with one version hold the same bytes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from geoloc import experts as registry
from geoloc.artifacts.bundles import BUNDLE_FILE, FORMAT, Bundle, BundleError, bundle_hashes
from geoloc.artifacts.files import written_atomically
from geoloc.artifacts.versions import content_version
from geoloc.embedding.model_config import read_model_config
from geoloc.embedding.preprocessing import declared_preprocessing
from geoloc.embedding.triton_backbone import BackboneError, describe_backbone
from geoloc.embedding.triton_text import check_twin
from geoloc.evaluation.csvio import InputError
from geoloc.experts import TRAINED_EXPERTS
from geoloc.training.expert_outputs import checkpoints_in, fusion_in
from geoloc.training.feature_shards import model_sha256

# Role -> place in a bundle (in a models folder: expert_outputs.checkpoints_in), each expert's
# registry entry's; each checkpoint's manifest (.json) goes with it.
EXPERT_FILES = {name: registry.expert(name).bundle_file for name in TRAINED_EXPERTS}
FUSION = "fusion/fusion.json"


def expert_identity(role: str, path: Path) -> tuple[str, int]:
    """(backbone name, feature width) an expert checkpoint was trained on, read as the services load it."""
    model = registry.expert(role).load(path)
    return model.backbone, model.in_dim


def backbone_record(model: str, repository: Path) -> dict:
    """The backbone as a bundle records it; with `text_model` when the repository holds its text tower
    (<model>_text), which must embed into the same space."""
    config = read_model_config(model, repository)
    info = describe_backbone(config)
    record = {
        "name": info.name,
        "model": model,
        "dimension": info.dimension,
        "preprocessing": declared_preprocessing(config),
        "model_sha256": model_sha256(model, repository),
    }
    text = f"{model}_text"
    if (Path(repository) / text / "config.pbtxt").is_file():
        try:
            check_twin(read_model_config(text, repository), info)
        except BackboneError as error:
            raise InputError(str(error)) from None
        record["text_model"] = text
    return record


def build_bundle(out: Path, model: str, repository: Path, models: Path) -> dict:
    """Assemble a bundle in `out` (which must not exist yet); returns its bundle.json."""
    out = Path(out)
    if out.exists():
        raise InputError(f"{out} exists: a bundle is built into a new folder")
    backbone = backbone_record(model, repository)
    sources = checkpoints_in(models, model)
    for role, path in [*sources.items(), ("fusion", fusion_in(models))]:
        if not path.is_file():
            raise InputError(f"{path}: no such file (the bundle's {role})")
    for role, path in sources.items():
        _check_expert(role, path, backbone)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    files = {"triton_model": f"model_repository/{model}", "fusion": FUSION}
    if "text_model" in backbone:
        files["triton_text_model"] = f"model_repository/{backbone['text_model']}"
    for role in ("triton_model", "triton_text_model"):
        if role in files:
            name = Path(files[role]).name
            shutil.copytree(
                Path(repository) / name, staging / files[role], ignore=shutil.ignore_patterns("__pycache__")
            )
    for role, path in sources.items():
        target = staging / EXPERT_FILES[role]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        if path.with_suffix(".json").exists():
            shutil.copy2(path.with_suffix(".json"), target.with_suffix(".json"))
        files[role] = EXPERT_FILES[role]
    (staging / FUSION).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(fusion_in(models), staging / FUSION)
    sha256 = bundle_hashes(staging)
    version = content_version(sha256)
    bundle = {"format": FORMAT, "version": version, "backbone": backbone, "files": files, "sha256": sha256}
    with written_atomically(staging / BUNDLE_FILE) as stream:
        stream.write((json.dumps(bundle, indent=2, sort_keys=True) + "\n").encode())
    staging.rename(out)
    return bundle


def verify_bundle(root: Path) -> list[str]:
    """What is wrong with the bundle at `root`; empty when nothing is. The record is read, and its
    files' hashes checked, as the services read them (Bundle.read, Bundle.problems)."""
    root = Path(root)
    if not (root / BUNDLE_FILE).is_file():
        return [f"{root}: no {BUNDLE_FILE}"]
    try:
        bundle = Bundle.read(root)
    except BundleError as error:
        return [str(error)]
    problems = bundle.problems()
    if problems:
        return problems
    backbone = bundle.backbone
    served = backbone_record(backbone["model"], root / "model_repository")
    for key in ("name", "dimension", "preprocessing", "model_sha256", "text_model"):
        if served.get(key) != backbone.get(key):
            found, recorded = served.get(key), backbone.get(key)
            problems.append(f"the Triton model's {key} is {found!r}; the bundle records {recorded!r}")
    for role in EXPERT_FILES:
        if role not in bundle.files:
            problems.append(f"the bundle holds no {role} file")
            continue
        try:
            _check_expert(role, root / bundle.files[role], backbone)
        except InputError as error:
            problems.append(str(error))
    return problems


def _check_expert(role: str, path: Path, backbone: dict) -> None:
    name, width = expert_identity(role, path)
    if (name, width) != (backbone["name"], backbone["dimension"]):
        raise InputError(
            f"{path}: the {role} expert takes {width}-d {name} features; the bundle's backbone serves "
            f"{backbone['dimension']}-d {backbone['name']} features"
        )
