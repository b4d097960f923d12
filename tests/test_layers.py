"""The package layers, read from the source: who may import whom inside geoloc.

Every `import geoloc.…` and `from geoloc… import` in services/geoloc/ (at module level or inside a
function: a lazy import is still a dependency) is a directed edge between two subpackages.
Relative imports are banned (ruff's TID252), so every edge is spelled absolutely and seen here.
The rules:

- three base layers, each importing no other geoloc package: `common` (the gRPC runtime:
  settings, logs, the server factory, interceptors, channels, TLS, metrics, tracing, admission,
  retries, batching, errors and the RPC input checks), `geo` (sphere, vMF kernels, mixtures,
  S2 cells, GeoScore) and `artifacts` (checkpoints, bundles, the files they are written as).
- `v1` (the generated API stubs) imports nothing of geoloc but itself; `experts` (the registry of
  experts and services, with the Expert enum's short names) only v1; `places` (offline place
  names and country shapes) only the base.
- each expert service (embedding, gallery, sampler, tokens, text, judge) imports only the base, the
  registry and places: never another expert, the orchestrator, training, client, evaluation
  or the tools. The orchestrator imports what an expert may (it talks to experts over gRPC only).
- `evaluation` scores answers: the base and the registry (never a service's internals).
- `client` talks to the suite over its API: the base, places, and evaluation's data readers.
- `training` and the tools sit on top: training any of the above; the Triton launcher the base
  and the embedding service's config reader; the suite and ops any of these and training.
- every package is placed here: a new one fails until it is given its layer.
- the package graph has no cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GEOLOC_PACKAGE = Path(__file__).resolve().parents[1] / "services" / "geoloc"
EXPERT_SERVICES = {"embedding", "gallery", "sampler", "tokens", "text", "judge"}
BASE = {"common", "geo", "artifacts", "v1"}
BELOW_SERVICES = BASE | {"experts", "places"}
SERVING = BELOW_SERVICES | EXPERT_SERVICES | {"orchestrator"}
ALLOWED = {
    "common": set(),
    "geo": set(),
    "artifacts": set(),
    "v1": set(),
    "experts": {"v1"},
    "places": BASE,
    **dict.fromkeys(EXPERT_SERVICES, BELOW_SERVICES),
    "orchestrator": BELOW_SERVICES,
    "evaluation": BASE | {"experts"},
    "client": BASE | {"experts", "places", "evaluation"},
    "training": SERVING | {"evaluation", "tritonserver"},
    "tritonserver": {"common", "embedding"},
    "suite": SERVING | {"evaluation", "training", "tritonserver"},
    "ops": SERVING | {"suite"},
    # The top-level modules: the CLI dispatcher, the smoke run, the package's own __init__.
    "cli": SERVING
    | {"client", "evaluation", "gallery", "ops", "smoke", "suite", "training", "tritonserver", "__version__"},
    "smoke": SERVING | {"evaluation", "suite", "tritonserver"},
    "geoloc": set(),
}


def package_of(module: str) -> str:
    """geoloc.gallery.index -> "gallery"; a top-level module (geoloc.cli) is its own package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "geoloc"


def geoloc_imports(path: Path) -> set[str]:
    """The geoloc modules `path` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("geoloc."))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "geoloc":
                found.update(f"geoloc.{alias.name}" for alias in node.names)
            elif node.module.startswith("geoloc."):
                found.add(node.module)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(GEOLOC_PACKAGE).with_suffix("").parts
    return ".".join(("geoloc", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def package_graph() -> dict[str, dict[str, set[str]]]:
    """{package: {imported package: the modules of `package` that import it}}."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in sorted(GEOLOC_PACKAGE.rglob("*.py")):
        source = package_of(module_name(path))
        edges = graph.setdefault(source, {})
        for target in {package_of(m) for m in geoloc_imports(path)} - {source}:
            edges.setdefault(target, set()).add(module_name(path))
    return graph


GRAPH = package_graph()


def test_the_graph_sees_every_package():
    folders = {p.name for p in GEOLOC_PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders <= set(GRAPH)
    assert {"common", "geo", "artifacts", "training", "client", "evaluation", *EXPERT_SERVICES} <= folders


def test_every_package_has_its_layer():
    """A package (or top-level module) nobody placed would be unconstrained: it fails here until it is."""
    packages = {p.name for p in GEOLOC_PACKAGE.iterdir() if (p / "__init__.py").exists()}
    modules = {p.stem for p in GEOLOC_PACKAGE.glob("*.py") if p.stem != "__init__"}
    unplaced = sorted((packages | modules | set(GRAPH)) - set(ALLOWED))
    assert not unplaced, f"place these in ALLOWED (tests/test_layers.py) and docs/architecture.md: {unplaced}"


def test_no_relative_imports():
    """The graph reads absolute imports only; ruff's TID252 (tests/test_lint.py) bans the others too."""
    relative = [
        f"{path.relative_to(GEOLOC_PACKAGE)}:{node.lineno}"
        for path in sorted(GEOLOC_PACKAGE.rglob("*.py"))
        if "v1" not in path.relative_to(GEOLOC_PACKAGE).parts  # protoc's stubs
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert not relative, f"relative imports: {relative}"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_its_layers(package):
    wrong = {
        target: sorted(modules) for target, modules in GRAPH.get(package, {}).items() if target not in ALLOWED[package]
    }
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package]) or 'nothing of geoloc'}; found {wrong}"


def test_no_package_cycles():
    def cycle_from(start: str, node: str, path: list[str], seen: set[str]) -> list[str] | None:
        for target in GRAPH.get(node, {}):
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                found = cycle_from(start, target, [*path, target], seen)
                if found:
                    return found
        return None

    cycles = [c for package in GRAPH if (c := cycle_from(package, package, [package], set()))]
    assert not cycles, f"package cycles: {cycles}"


def test_the_checker_sees_lazy_imports(tmp_path):
    """The rules are only as good as the parser: an import inside a function counts too."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f():\n    from geoloc.training.loop import train_keeping_best\n    import geoloc.client.load\n"
    )
    assert geoloc_imports(sample) == {"geoloc.training.loop", "geoloc.client.load"}
