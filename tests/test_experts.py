"""The expert registry (geoloc.experts) is where an expert is defined; the rest of the tree reads it.

Each registry entry must resolve (its answer function, its loader, its service's stub), the
orchestrator's settings must hold every setting an entry names, and no file outside the registry,
the expert's own service folder and its own trainers may name an expert in a string literal:
adding an expert is its service folder, one entry and its k8s objects (and, for an expert
trained on backbone features, its fold trainer beside its other trainers).
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

from geoloc import experts as registry
from geoloc.experts import EXPERT_TABLE, EXPERTS, SERVICE_TABLE, SERVICES, TRAINED_EXPERTS
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
# Literals that spell an expert's name and mean something else: the chat-completions API's
# content-part type "text" (the judge's prompt), EmbedTextRequest's field "text" as its errors name it.
OTHER_MEANINGS = {("judge/prompt.py", "text"), ("embedding/server.py", "text")}


def expert_literals(package: Path = PACKAGE) -> Counter:
    """(file, expert) -> how many string literals (not docstrings) equal an expert's name."""
    found: Counter = Counter()
    for path in sorted(package.rglob("*.py")):
        relative = str(path.relative_to(package))
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
                if (relative, expert) in OTHER_MEANINGS:
                    continue
                found[(relative, expert)] += 1
    return found


def test_only_the_registry_names_experts():
    found = expert_literals()
    assert not found, f"name these experts through geoloc.experts, not as literals: {dict(found)}"


def test_the_literal_scan_finds_a_literal(tmp_path):
    """The scan is not blind: a module outside an expert's own code that spells it is found (and
    a docstring, or the expert's own service folder, is not)."""
    for folder in ("orchestrator", "tokens"):
        (tmp_path / folder).mkdir()
    (tmp_path / "orchestrator" / "named.py").write_text('"""Docstrings may say gallery."""\nPICK = "tokens"\n')
    (tmp_path / "tokens" / "own.py").write_text('NAME = "tokens"\n')
    assert expert_literals(tmp_path) == Counter({("orchestrator/named.py", "tokens"): 1})


@pytest.mark.parametrize("expert", TRAINED_EXPERTS)
def test_every_trained_expert_has_a_fold_trainer_among_its_own_trainers(expert):
    entry = registry.expert(expert)
    module = entry.fold_trainer.split(":")[0]
    assert module.replace(".", "/").removeprefix("geoloc/") + ".py" in OWN_TRAINERS[expert]
    trainer = entry.trainer()
    for method in ("shipped_config", "check", "train", "save", "manifest_fields", "served", "cache_described"):
        assert callable(getattr(trainer, method)), f"{expert}'s fold trainer has no {method}"


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


def test_fold_configurations_come_from_each_trainer_at_the_budget():
    """fold_configs asks each registry entry's fold trainer for its shipped configuration at the
    budget: the epochs and steps are the budget's, evaluated `evaluations` times; the rest is the
    shipped manifest's. BUDGET_FIELDS (what `geoloc cv --budget` may set) is FoldBudget's whole
    numbers, and a compared configuration may not change what the budget sets."""
    from geoloc.training.fold_budget import BUDGET_FIELDS, FoldBudget
    from geoloc.training.out_of_fold import _shipped_choice, fold_configs

    budget = FoldBudget(gallery_epochs=2, flow_steps=40, sh_steps=30, tokens_steps=20, evaluations=4)
    configs = fold_configs(budget)
    assert list(configs) == list(TRAINED_EXPERTS)
    assert configs["gallery"].epochs == 2
    for expert, steps in (("flow", 40), ("sh", 30), ("tokens", 20)):
        assert (configs[expert].steps, configs[expert].eval_every) == (steps, steps // 4), expert
    assert configs["flow"].method == "flow" and configs["sh"].method == "sh"
    assert configs["tokens"].batch_size == _shipped_choice("tokens")["batch_size"]
    assert BUDGET_FIELDS == (
        "gallery_epochs",
        "flow_steps",
        "sh_steps",
        "tokens_steps",
        "evaluations",
        "eval_samples",
        "eval_steps",
    )
    with pytest.raises(ValueError, match="the fold budget sets"):
        fold_configs(budget, {"flow": {"eval_every": 3}})
