"""The contracts have one owner each (trials/layout.py, trials/schema.py, the registries).

- No Python file outside the layout and schema modules (and the tests) spells a sweep-directory
  file name as a string literal; docstrings and comments don't count.
- The strategy registry, the schema's strategy order and the validation agree.
- One top-level import name, ``headsweep``: the wheel installs nothing else, and no module
  imports a part (trials, orchestrator, analysis) as a top-level name.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from headsweep.trials import layout, schema

REPO = Path(__file__).resolve().parents[1]
OWNERS = {REPO / "trials" / "layout.py", REPO / "trials" / "schema.py"}
PARTS = ("orchestrator", "trials", "analysis")
CODE_DIRS = (*PARTS, "bench")


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
    from headsweep.trials.strategies import STRATEGIES
    assert list(STRATEGIES) == list(schema.STRATEGY_ORDER)
    assert set(schema.REMOVAL_STRATEGIES) <= set(STRATEGIES)


@pytest.mark.parametrize("kind", ["strategies", "importance", "adapters", "metrics", "presets"])
def test_registries_refuse_a_second_entry_and_suggest_names(kind):
    from headsweep.trials.registry import Registry
    reg = {"strategies": "headsweep.trials.strategies:STRATEGIES", "importance": "headsweep.trials.importance:IMPORTANCE_METHODS",
           "adapters": "headsweep.trials.adapters:ADAPTERS", "metrics": "headsweep.trials.metrics:METRICS",
           "presets": "headsweep.trials.presets:PRESETS"}[kind]
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


def test_no_module_imports_a_top_level_part():
    """Inside the package every import names ``headsweep.<part>`` (or is relative), so a user's own
    ``trials/`` or ``analysis/`` can never stand in for ours."""
    bare = []
    for d in CODE_DIRS + ("tests", "examples", "src"):
        for path in sorted((REPO / d).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                        else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                bare += [f"{path.relative_to(REPO)}:{node.lineno}: {m}" for m in mods
                         if m.split(".")[0] in PARTS]
    assert not bare, "import headsweep.<part> instead:\n" + "\n".join(bare)


def test_the_wheel_installs_one_top_level_import_name(tmp_path):
    """``pip install .`` installs exactly ``headsweep`` (and its dist-info): the three parts are
    subpackages, with their data (the demo sweep file, the presets' weights)."""
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("headsweep-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"headsweep"}
    for part in PARTS:
        shipped = {n.split("/", 2)[2] for n in names if n.startswith(f"headsweep/{part}/")}
        expected = {str(p.relative_to(REPO / part)) for p in (REPO / part).rglob("*.py")}
        assert expected <= shipped, sorted(expected - shipped)
    assert "headsweep/orchestrator/demo.yaml" in names
    assert any(n.startswith("headsweep/trials/preset_weights/tiny-gpt2/") for n in names)


def test_the_shipped_demo_is_the_configs_demo():
    from headsweep.orchestrator.plan import demo_path
    assert demo_path().is_file()
    assert (REPO / "configs" / "demo.yaml").resolve() == (REPO / "orchestrator" / "demo.yaml").resolve()
