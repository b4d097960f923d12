"""The expert registry (geoloc.experts) is where an expert is defined; the rest of the tree reads it.

Each registry entry must resolve (its answer function, its loader, its service's stub), the
orchestrator's settings must hold every setting an entry names, and no file outside the registry,
the expert's own service folder and its own trainers may name an expert in a string literal:
adding an expert is its service folder, one entry and its k8s objects. The files that still
name one are pinned below, each with why, so that the list can only shrink.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

from geoloc import experts as registry
from geoloc.experts import EXPERT_TABLE, EXPERTS, SERVICE_TABLE, SERVICES
from geoloc.orchestrator.config import OrchestratorSettings

PACKAGE = Path(__file__).resolve().parents[1] / "services" / "geoloc"

# An expert's own code: its service folder, and the trainers that fit its model.
OWN_TRAINERS = {
    "gallery": {"training/gallery_cli.py", "training/gallery_head.py"},
    "flow": {"training/sampler.py", "training/sampler_cli.py"},
    "sh": {"training/sampler.py", "training/sampler_cli.py"},
    "tokens": {"training/tokens_cli.py", "training/token_decoder.py"},
    "text": {"training/text_cli.py", "training/text_outputs.py"},
}
# Literals that still name an expert outside its own code: (file, expert) -> count, and why.
STILL_NAMED = {
    # The fusion's one expert-specific parameter: the gallery's density power (docs/orchestrator.md).
    ("orchestrator/fusion.py", "gallery"): 1,
    ("training/fusion.py", "gallery"): 2,
    # Out-of-fold training: the gallery head is fitted over a gallery, the samplers by method.
    ("training/out_of_fold.py", "gallery"): 5,
    ("training/out_of_fold.py", "flow"): 2,
    ("training/out_of_fold.py", "sh"): 2,
    ("training/out_of_fold.py", "tokens"): 2,
    ("training/cross_validation.py", "flow"): 1,
    ("training/cross_validation.py", "sh"): 1,
    ("training/shipped_experts.py", "gallery"): 5,
    ("training/shipped_experts.py", "flow"): 5,
    ("training/shipped_experts.py", "sh"): 5,
    ("training/shipped_experts.py", "tokens"): 4,
    ("training/expert_outputs.py", "gallery"): 1,
    # `geoloc cv` compares the fused answer with and without the text expert.
    ("training/cv_run.py", "text"): 5,
    ("training/cv_reports.py", "text"): 2,
    ("training/text_cli.py", "gallery"): 1,
    # The word, not the expert: the embedding service's text query field.
    ("embedding/server.py", "text"): 1,
    # LocateText's answer is the gallery's search.
    ("orchestrator/server.py", "gallery"): 1,
}


def expert_literals() -> Counter:
    """(file, expert) -> how many string literals (not docstrings) equal an expert's name."""
    found: Counter = Counter()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(PACKAGE))
        if relative.startswith("v1/") or relative == "experts.py":
            continue
        tree = ast.parse(path.read_text(), relative)
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in EXPERTS and id(node) not in docstrings:
                expert = node.value
                service = registry.expert(expert).service
                if relative.startswith(f"{service}/") or relative in OWN_TRAINERS[expert]:
                    continue
                found[(relative, expert)] += 1
    return found


def test_only_the_registry_names_experts():
    found = expert_literals()
    new = {key: n for key, n in found.items() if n > STILL_NAMED.get(key, 0)}
    assert not new, f"name these experts through geoloc.experts, not as literals: {new}"
    gone = {key: n for key, n in STILL_NAMED.items() if found.get(key, 0) < n}
    assert not gone, f"fewer literals than pinned (good): lower STILL_NAMED for {gone}"


@pytest.mark.parametrize("expert", EXPERTS)
def test_every_entry_resolves(expert):
    entry = registry.expert(expert)
    assert callable(entry.answer_function())
    assert entry.service in SERVICES
    settings = OrchestratorSettings()
    for name in entry.asked:
        assert name == "include_text" or hasattr(settings, name), f"{expert} asks an unknown setting {name}"
    if entry.trained:
        assert entry.loader and entry.models_file and entry.bundle_file
        assert callable(registry._imported(entry.loader))


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_resolves(service):
    entry = registry.SERVICES_BY_NAME[service]
    assert entry.stub_class().__name__.endswith("ServiceStub")
    settings = OrchestratorSettings()
    for setting in (entry.address_setting, entry.timeout_setting):
        assert setting is None or hasattr(settings, setting), f"{service}: no orchestrator setting {setting}"
    assert (PACKAGE / service / "server.py").is_file()


def test_tables_are_consistent():
    assert len({s.port_offset for s in SERVICE_TABLE}) == len(SERVICE_TABLE)
    assert len({e.enum for e in EXPERT_TABLE}) == len(EXPERT_TABLE)
    assert len(SERVICES) == 6
    with pytest.raises(ValueError, match="the experts are gallery, flow, sh, tokens, text"):
        registry.expert("judge")
