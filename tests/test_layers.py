"""Layers point one way: ``ssl_pipeline/theory/`` takes arrays and small dataclasses and imports nothing of the
pipeline above it (config, data, features, heads, scoring, checking, …); only ``ssl_pipeline.errors`` is shared."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ssl_pipeline"


def pipeline_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every ``ssl_pipeline`` module that ``source`` (the module named ``module``) imports, wherever the import
    statement sits (functions included), with relative imports resolved; ``from a import b`` yields ``a.b``
    (b may be a module)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join(parts + ([node.module] if node.module else []))
            names += [f"{base}.{alias.name}" for alias in node.names]
    return [name for name in names if name == "ssl_pipeline" or name.startswith("ssl_pipeline.")]


def outside_theory(names: list[str]) -> list[str]:
    """The names that are neither in ``ssl_pipeline.theory`` nor ``ssl_pipeline.errors``."""
    allowed = ("ssl_pipeline.theory.", "ssl_pipeline.errors.")
    return [name for name in names if not (name + ".").startswith(allowed)]


def test_theory_modules_import_nothing_above_theory():
    modules = sorted((PACKAGE / "theory").glob("*.py"))
    assert {"gmm.py", "gmm_checks.py", "subspaces.py", "surrogate.py"} <= {path.name for path in modules}
    violations = {}
    for path in modules:
        name = f"ssl_pipeline.theory.{path.stem}" if path.stem != "__init__" else "ssl_pipeline.theory"
        bad = outside_theory(pipeline_imports(path.read_text(), name, is_package=path.stem == "__init__"))
        if bad:
            violations[path.name] = bad
    assert violations == {}


def test_the_import_check_flags_every_form_of_an_upward_import():
    source = (
        "import numpy as np\n"
        "import ssl_pipeline.config as config\n"
        "from ssl_pipeline.data.labelled import LabelledFeatures\n"
        "from ssl_pipeline.errors import DataError\n"
        "from ssl_pipeline.theory.subspaces import fisher_cos2\n"
        "from . import gmm\n"
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
    assert sorted(outside_theory(names)) == [
        "ssl_pipeline", "ssl_pipeline.config", "ssl_pipeline.data.labelled.LabelledFeatures",
        "ssl_pipeline.features.cache",
    ]
    assert pipeline_imports("from . import subspaces\n", "ssl_pipeline.theory", is_package=True) == [
        "ssl_pipeline.theory.subspaces"
    ]
