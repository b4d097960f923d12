"""The package layers, read from the source: who may import whom inside geoloc.

Every `import geoloc.…` and `from geoloc… import` in services/geoloc/ (at module level or inside a
function: a lazy import is still a dependency) is a directed edge between two subpackages.
The rules:

- `common` is the base layer: it imports no other geoloc package.
- `v1` (the generated API stubs) imports nothing of geoloc but itself; `api` (the enums' short
  names) only v1; `places` (offline place names and country shapes) only common and v1.
- serving packages (the six services and the Triton launcher) import only those and one
  another: never training, client, evaluation or the tools (suite, ops, the CLIs).
- `evaluation` scores answers; it imports only common, v1 and api (never a service's internals).
- `client` talks to the suite over its API: the base, places, and evaluation's data readers.
- `training` and the tools sit on top and may import any of the above.
- the package graph has no cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[1] / "services" / "geoloc"
SERVING = {"embedding", "gallery", "sampler", "tokens", "text", "orchestrator", "tritonserver"}
BASE = {"common", "v1", "api"}
ALLOWED = {
    "common": set(),
    "v1": set(),
    "api": {"v1"},
    "places": {"common", "v1"},
    **{name: BASE | {"places"} | SERVING for name in SERVING},
    "evaluation": BASE,
    "client": BASE | {"places", "evaluation"},
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
    parts = path.relative_to(SERVICES).with_suffix("").parts
    return ".".join(("geoloc", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def package_graph() -> dict[str, dict[str, set[str]]]:
    """{package: {imported package: the modules of `package` that import it}}."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in sorted(SERVICES.rglob("*.py")):
        source = package_of(module_name(path))
        edges = graph.setdefault(source, {})
        for target in {package_of(m) for m in geoloc_imports(path)} - {source}:
            edges.setdefault(target, set()).add(module_name(path))
    return graph


GRAPH = package_graph()


def test_the_graph_sees_every_package():
    folders = {p.name for p in SERVICES.iterdir() if (p / "__init__.py").exists()}
    assert folders <= set(GRAPH)
    assert {"common", "training", "client", "evaluation", *SERVING} <= folders


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
