"""Layers point one way, and no module imports itself back: checked on the source with ``ast``.

Every import statement of every module of ``pipeline/`` and ``flows/`` counts, those inside
functions (lazy imports) and under ``if TYPE_CHECKING`` too: a lazy import defers the cost, not
the dependency. The layer rule applies to the module an import names; importing ``a.b.c`` also
runs the ``__init__`` of ``a.b`` (unless the importer lives in ``a.b``), which counts for cycles.

The layers, lowest first; a module may import its own package and anything in a lower layer:

0. ``pipeline.core``: the schema of ``params.yaml``, errors, files, paths, the CLI helpers and
   launcher, stage code dependencies; no torch (tests/test_imports.py).
1. ``pipeline.stages.spec`` (the vocabulary of stage declarations: it imports only core) and
   ``pipeline.runtime`` (the process around torch: device, seeds, DDP).
2. ``pipeline.data`` and ``pipeline.models``: datasets and networks, neither importing the other.
3. What computes on models or results: ``regularizers``, ``attacks``, ``pipeline.readout`` (a
   logistic-regression head) and ``pipeline.report`` (statistics, tables and figures of metric
   files; no torch).
4. ``pipeline.analysis`` (diagnostics of trained networks, using the regularizers' weight norms)
   and ``pipeline.training``: the loop, SSL objectives, checkpoints, fingerprints.
5. ``pipeline.stages`` (one module per DAG stage and their glue), ``pipeline.experiments``
   (the papers' toy experiments, a DVC sub-project of their own) and ``pipeline.shard_tool``
   (``python -m pipeline shard``: any source to shards, outside the DAG).
6. The control code that reads the stage declarations: ``pipeline.plan``, ``pipeline.dvcyaml``
   and the CLI ``pipeline.__main__``; no torch.
7. ``flows``: Prefect flows over the plan.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

LAYERS = {
    "pipeline": 0,  # the root package's __init__ (empty)
    "pipeline.core": 0,
    "pipeline.stages.spec": 1,
    "pipeline.runtime": 1,
    "pipeline.data": 2,
    "pipeline.models": 2,
    "pipeline.regularizers": 3,
    "pipeline.attacks": 3,
    "pipeline.analysis": 4,
    "pipeline.readout": 3,
    "pipeline.report": 3,
    "pipeline.training": 4,
    "pipeline.stages": 5,
    "pipeline.experiments": 5,
    "pipeline.shard_tool": 5,
    "pipeline.plan": 6,
    "pipeline.dvcyaml": 6,
    "pipeline.__main__": 6,
    "flows": 7,
}
# Cycles in code another change owns, each with what breaks it. Listed so this test passes
# meanwhile; it fails once a cycle is gone, so that its entry is removed.
KNOWN_CYCLES: set[frozenset[str]] = set()


def _modules() -> dict[str, Path]:
    """Every module of ``pipeline`` and ``flows`` by dotted name (a package: its ``__init__``)."""
    found = {}
    for root in ("pipeline", "flows"):
        for path in sorted((REPO / root).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imported(name: str, tree: ast.AST) -> tuple[set[str], set[str]]:
    """The project modules import statements anywhere in ``tree`` name (the most specific
    module of each), and the packages above them whose ``__init__`` those imports also run."""
    package = name if _is_package(name) else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importer's package up
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets.add(base)
            targets |= {f"{base}.{alias.name}" for alias in node.names}  # modules among them
    named, parents = set(), set()
    for target in targets:
        parts = target.split(".")
        chain = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        chain = [c for c in chain if c in MODULES]
        if not chain:
            continue  # not the project's
        named.add(chain[-1])
        # Packages the importer lives in are already running when it imports: no edge.
        parents |= {c for c in chain[:-1] if not name.startswith(c + ".")}
    named.discard(name)
    return named, parents - named - {name}


IMPORTS = {name: _imported(name, ast.parse(path.read_text())) for name, path in MODULES.items()}
# For cycles, what an import runs: the module named and the package __init__s above it.
GRAPH = {name: named | parents for name, (named, parents) in IMPORTS.items()}


def _layer_key(name: str) -> str:
    """The most specific entry of LAYERS that names ``name`` or a package above it."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in LAYERS:
            return ".".join(parts[:i])
    raise AssertionError(f"{name} is in no layer: add it to LAYERS in {__file__}")


def test_every_module_has_a_layer_and_the_graph_is_seen():
    assert all(_layer_key(name) for name in MODULES)
    assert "pipeline.core.errors" in GRAPH["pipeline.core.config"]
    assert "pipeline.stages.shared" in GRAPH["pipeline.stages.attack"]
    # A function-local import counts (run_stage imports the config schema inside it).
    assert "pipeline.core.config" in GRAPH["pipeline.__main__"]


def test_imports_point_down_the_layers():
    """The module an import names must be in a lower layer (or the importer's own package)."""
    upward = []
    for name, (targets, _) in IMPORTS.items():
        key = _layer_key(name)
        for target in targets:
            other = _layer_key(target)
            if other != key and LAYERS[other] >= LAYERS[key]:
                upward.append(f"{name} (layer {LAYERS[key]}) imports {target} ({LAYERS[other]})")
    assert not upward, "imports that do not point to a lower layer:\n" + "\n".join(sorted(upward))


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_on_a_known_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e", "d"}}
    assert _cycles(graph) == [{"a", "b", "c"}]


def test_no_module_imports_itself_back():
    cycles = {frozenset(c) for c in _cycles(GRAPH)}
    assert cycles - KNOWN_CYCLES == set(), f"import cycles: {[sorted(c) for c in cycles]}"
    gone = KNOWN_CYCLES - cycles
    assert not gone, f"these cycles are gone: remove them from KNOWN_CYCLES: {gone}"
