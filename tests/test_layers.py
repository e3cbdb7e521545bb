"""Layers point one way, for the whole package: every module of ``ssl_pipeline/`` is parsed (imports inside
functions included, ``if TYPE_CHECKING:`` blocks excluded, since they never run), and

* no import cycle exists between modules — the one exception is named: the backbone registry
  ``ssl_pipeline/backbones/__init__.py`` imports its plugin modules inside ``load_backbone``/``describe_backbone``,
  and each plugin imports the registry's ``BackboneInfo`` and ``Preprocess`` (a plugin pattern, like timm's);
* every import from one top-level package or module to another goes strictly down ``LAYERS``;
* every top-level package and module has a layer (a new one must be placed here before it can land).

``theory/`` keeps its stricter rule: it imports nothing of the pipeline but ``errors``.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ssl_pipeline"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("atomic", "digests", "validation", "allocator", "blas", "npz"),  # small helpers: no pipeline imports but errors
    ("theory",),  # arrays in, arrays out
    ("config",),  # the schema and its validation
    ("records", "resume"),  # the results contract, progress bars; grid checkpoints of a run dir
    ("data",),  # labelled features, δ-pair samplers, datasets
    ("backbones",),
    ("features",),  # extraction, the feature cache, a run's features
    ("heads",),  # settings, modules, grids, fitting
    ("scoring",),
    ("checking",),  # the GMM checks' statistics
    ("reporting",),  # tables, figures, HTML, W&B
    ("rundir",),
    ("fit_stage",),
    ("experiment", "checks"),  # the commands
    ("cli",),
    ("__init__",),
)
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}
PLUGIN_REGISTRY = "ssl_pipeline.backbones"


def pipeline_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every ``ssl_pipeline`` name that ``source`` (the module named ``module``) imports, wherever the import
    statement sits (functions included) except under ``if TYPE_CHECKING:``, with relative imports resolved;
    ``from a import b`` yields ``a.b`` (b may be a module or a name in a)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join(parts + ([node.module] if node.module else []))
            names.extend(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return [name for name in names if name == "ssl_pipeline" or name.startswith("ssl_pipeline.")]


def package_modules() -> dict[str, tuple[Path, bool]]:
    """{dotted module name: (file, is a package __init__)} of every module of ``ssl_pipeline``."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def owning_module(name: str, modules: dict) -> str:
    """The module an imported name lives in: the longest prefix of ``name`` that is a module."""
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


def import_graph() -> dict[str, set[str]]:
    """{module: the other modules it imports}, over the whole package."""
    modules = package_modules()
    return {
        module: {owning_module(n, modules) for n in pipeline_imports(path.read_text(), module, is_package)} - {module}
        for module, (path, is_package) in modules.items()
    }


def top_level(module: str) -> str:
    """``ssl_pipeline.heads.grid`` → ``heads``; ``ssl_pipeline.cli`` → ``cli``; ``ssl_pipeline`` → ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def is_plugin_edge(module: str, imported: str) -> bool:
    """A backbone plugin importing the registry it plugs into (the one allowed cycle)."""
    return imported == PLUGIN_REGISTRY and module.startswith(PLUGIN_REGISTRY + ".")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``, each as a path a → b → … → a (a imports b), found one by one, cutting one
    edge of each before looking for the next; empty when the graph is acyclic."""
    found = []
    remaining = {module: set(targets) for module, targets in graph.items()}
    while True:
        try:
            graphlib.TopologicalSorter(remaining).prepare()
            return found
        except graphlib.CycleError as error:
            # graphlib reads the graph as {node: its predecessors} and reports the cycle that way round
            cycle = error.args[1][::-1]  # a → b → … → a: a imports b
            found.append(cycle)
            remaining[cycle[0]].discard(cycle[1])  # cut one edge and look for the next cycle


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a → b`` for every import from a top-level package or module to another that is not strictly below it."""
    found = []
    for module, targets in graph.items():
        for imported in targets:
            mine, theirs = top_level(module), top_level(imported)
            if mine != theirs and LAYER_OF[theirs] >= LAYER_OF[mine]:
                found.append(f"{module} → {imported} ({mine} is layer {LAYER_OF[mine]}, {theirs} {LAYER_OF[theirs]})")
    return sorted(found)


def test_every_top_level_package_and_module_has_a_layer():
    names = {top_level(module) for module in package_modules()}
    assert {"theory", "config", "heads", "scoring", "experiment", "cli"} <= names
    assert sorted(names - set(LAYER_OF)) == []
    assert sorted(set(LAYER_OF) - names) == []  # no stale entry


def test_no_import_cycle_anywhere_in_the_package():
    graph = import_graph()
    plugin_edges = sorted(f"{m} → {i}" for m, targets in graph.items() for i in targets if is_plugin_edge(m, i))
    assert plugin_edges, "the backbone plugins no longer import their registry: drop the named exception"
    acyclic = {m: {i for i in targets if not is_plugin_edge(m, i)} for m, targets in graph.items()}
    assert cycles(acyclic) == []


def test_imports_between_packages_go_down_the_layers():
    assert upward_imports(import_graph()) == []


def test_theory_modules_import_nothing_above_theory():
    graph = import_graph()
    theory = {m: targets for m, targets in graph.items() if top_level(m) == "theory"}
    assert {"ssl_pipeline.theory.gmm", "ssl_pipeline.theory.subspaces", "ssl_pipeline.theory.surrogate"} <= set(theory)
    outside = {m: sorted(t for t in targets if top_level(t) not in ("theory", "errors")) for m, targets in theory.items()}
    assert {m: t for m, t in outside.items() if t} == {}


def test_the_import_check_flags_every_form_of_an_upward_import():
    source = (
        "from typing import TYPE_CHECKING\n"
        "import numpy as np\n"
        "import ssl_pipeline.config as config\n"
        "from ssl_pipeline.data.labelled import LabelledFeatures\n"
        "from ssl_pipeline.errors import DataError\n"
        "from ssl_pipeline.theory.subspaces import fisher_cos2\n"
        "from . import gmm\n"
        "if TYPE_CHECKING:\n"
        "    from ssl_pipeline.heads.fitted import FittedHead\n"
        "def late():\n"
        "    from ..features import cache\n"
        "    import ssl_pipeline\n"
    )
    names = pipeline_imports(source, "ssl_pipeline.theory.example")
    assert sorted(names) == sorted([
        "ssl_pipeline.config", "ssl_pipeline.data.labelled.LabelledFeatures", "ssl_pipeline.errors.DataError",
        "ssl_pipeline.theory.subspaces.fisher_cos2", "ssl_pipeline.theory.gmm", "ssl_pipeline.features.cache",
        "ssl_pipeline",
    ])
    assert pipeline_imports("from . import subspaces\n", "ssl_pipeline.theory", is_package=True) == [
        "ssl_pipeline.theory.subspaces"
    ]


def test_the_checks_find_a_cycle_and_an_upward_import():
    graph = {
        "ssl_pipeline.scoring.run": {"ssl_pipeline.scoring.clip", "ssl_pipeline.reporting.html"},
        "ssl_pipeline.scoring.clip": {"ssl_pipeline.scoring.run"},
        "ssl_pipeline.reporting.html": set(),
    }
    found = cycles(graph)
    assert len(found) == 1 and set(found[0]) == {"ssl_pipeline.scoring.run", "ssl_pipeline.scoring.clip"}
    three = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"c"}}
    assert [cycle[0] == cycle[-1] and all(cycle[i + 1] in three[cycle[i]] for i in range(len(cycle) - 1))
            for cycle in cycles(three)] == [True, True]
    assert upward_imports(graph) == ["ssl_pipeline.scoring.run → ssl_pipeline.reporting.html (scoring is layer 9, "
                                     "reporting 11)"]
    with pytest.raises(KeyError):  # a package without a layer is an error, not a pass
        upward_imports({"ssl_pipeline.newpackage.x": {"ssl_pipeline.cli"}})
