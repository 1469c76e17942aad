"""The contracts have one owner each (trials/layout.py, trials/schema.py, the registries).

- No Python file outside the layout and schema modules (and the tests) spells a sweep-directory
  file name as a string literal; docstrings and comments don't count.
- The strategy registry, the schema's strategy order and the validation agree.
- Nothing installs a top-level package the user did not ask for.
"""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from trials import layout, schema

REPO = Path(__file__).resolve().parents[1]
OWNERS = {REPO / "trials" / "layout.py", REPO / "trials" / "schema.py"}
CODE_DIRS = ("orchestrator", "trials", "analysis", "bench")


def _names() -> set[str]:
    """Every file name (and path prefix) of the sweep directory, from the layout module itself."""
    names = set()
    for attr in dir(layout):
        v = getattr(layout, attr)
        if attr.isupper() and isinstance(v, str) and "." in v.strip("."):
            names.add(v.rsplit("/", 1)[-1])
    names |= {"stage_a.over", f"{layout.TRIALS}/", f"{layout.PREDICTIONS}/", f"{layout.CHECKPOINTS}/",
              f"{layout.RAY}/", f"{layout.ANALYSIS}/"}
    return names


def _docstring_nodes(tree) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _literals(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    docs = _docstring_nodes(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value


def test_the_layout_names_are_found():
    names = _names()
    for expected in ("result.json", "status.json", "results.parquet", "importance.parquet", "spec.yaml",
                     "analysis.ipynb", "report.md", "stats.csv", "trials/", "predictions/"):
        assert expected in names


def test_no_file_outside_the_owners_spells_a_sweep_directory_name():
    names = _names()
    found = []
    for d in CODE_DIRS:
        for path in sorted((REPO / d).rglob("*.py")):
            if path in OWNERS:
                continue
            for line, text in _literals(path):
                hits = [n for n in names if n in text]
                if hits:
                    found.append(f"{path.relative_to(REPO)}:{line}: {hits} in {text[:60]!r}")
    assert not found, "use trials.layout instead of spelling these:\n" + "\n".join(found)


def test_the_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('"""result.json in a docstring is fine."""\nx = f"trials/{k}/result.json"\n')
    hits = [(ln, t) for ln, t in _literals(bad) if any(n in t for n in _names())]
    assert hits and hits[0][0] == 2


def test_strategy_registry_matches_the_schema_order():
    from trials.strategies import STRATEGIES
    assert list(STRATEGIES) == list(schema.STRATEGY_ORDER)
    assert set(schema.REMOVAL_STRATEGIES) <= set(STRATEGIES)


@pytest.mark.parametrize("kind", ["strategies", "importance", "adapters", "metrics", "presets"])
def test_registries_refuse_a_second_entry_and_suggest_names(kind):
    from trials.registry import Registry
    reg = {"strategies": "trials.strategies:STRATEGIES", "importance": "trials.importance:IMPORTANCE_METHODS",
           "adapters": "trials.adapters:ADAPTERS", "metrics": "trials.metrics:METRICS",
           "presets": "trials.presets:PRESETS"}[kind]
    import importlib
    module, name = reg.split(":")
    registry = getattr(importlib.import_module(module), name)
    assert isinstance(registry, Registry)
    first = next(iter(registry))
    with pytest.raises(ValueError, match="registered twice"):
        registry.add(first, object())
    err = registry.error(first[:-1] + "#")
    assert f"did you mean '{first}'" in str(err) and "available:" in str(err)


def test_results_rows_come_from_the_schema():
    row = schema.result_row(model="m", strategy="none", seed=0)
    assert list(row) == list(schema.RESULT_NAMES)
    assert set(schema.CONTRACT_COLUMNS) <= set(row)
    with pytest.raises(KeyError, match="status"):
        schema.result_row(model="m", status="ok")


def test_installed_packages_are_the_three_the_user_asked_for():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["tool"]["setuptools"]["packages"] == ["orchestrator", "trials", "analysis"]
    from orchestrator.plan import demo_path
    assert demo_path().is_file()
    assert (REPO / "configs" / "demo.yaml").resolve() == (REPO / "orchestrator" / "demo.yaml").resolve()
