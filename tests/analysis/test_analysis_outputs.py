"""analyze(): executed notebook, figures, stats.csv and report.md that agree, CLI, imports."""

import math
import os
import re
import shutil
import subprocess
import sys

import nbformat
import pandas as pd
import pytest

import analysis
from analysis.__main__ import main
from analysis.synthetic import make_sweep_dir

REQUIRED_STATS = ["family", "model", "group_a", "group_b", "recovery_epochs", "n", "difference", "ci_low",
                  "ci_high", "effect_size", "test", "p", "p_adjusted"]


def test_analyze_returns_the_contract_paths(analyzed, full_sweep):
    assert {"notebook", "report", "stats", "figures"} <= set(analyzed)
    out = full_sweep / "analysis"
    assert analyzed["notebook"] == out / "analysis.ipynb" and analyzed["report"] == out / "report.md"
    assert analyzed["stats"] == out / "stats.csv" and analyzed["figures"] == out / "figures"
    pngs = sorted(p.name for p in analyzed["figures"].glob("*.png"))
    assert pngs == ["accuracy_vs_k.png", "importance_heatmaps.png", "rank_stability.png", "single_vs_multi.png"]
    for p in analyzed["figures"].glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temp files behind


def test_notebook_executed_with_figures_and_no_errors(analyzed):
    nb = nbformat.read(analyzed["notebook"], as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert all(c.execution_count for c in code)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4
    assert nb.metadata.kernelspec.name == "python3"


def test_notebook_structure(analyzed, full_sweep):
    nb = nbformat.read(analyzed["notebook"], as_version=4)
    params = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in params.metadata.tags and repr(str(full_sweep)) in params.source
    for prev, cell in zip(nb.cells, nb.cells[1:]):
        if cell.cell_type == "code":  # every part is introduced by a markdown cell
            assert prev.cell_type == "markdown"
    text = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "paired t-test over seeds" in text and "Holm" in text and "McNemar" in text
    assert "analysis.compare(" in " ".join(c.source for c in nb.cells)


def test_stats_csv_has_every_comparison(analyzed):
    stats = pd.read_csv(analyzed["stats"])
    assert set(REQUIRED_STATS) <= set(stats.columns)
    assert set(stats["family"]) == set(analysis.FAMILIES)
    prim = stats[stats["primary"]]
    assert prim["comparison_id"].is_unique and (prim["test"] == "paired_t").all()
    ok = stats["p"].notna()
    assert (stats.loc[ok, "p_adjusted"] >= stats.loc[ok, "p"]).all()


def _pts(x):
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}"


def _p(p):
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def test_report_agrees_with_stats_csv(analyzed):
    stats = pd.read_csv(analyzed["stats"])
    report = analyzed["report"].read_text()
    bullets = re.findall(r"^- (.*) <!-- id: (.*) -->$", report, flags=re.M)
    prim = stats[stats["primary"]].set_index("comparison_id")
    assert sorted(cid for _, cid in bullets) == sorted(prim.index)  # one finding per comparison
    for text, cid in bullets:
        r = prim.loc[cid]
        d = r["difference"]
        assert f"by {_pts(abs(d))} points" in text, cid
        lo, hi = (-r["ci_high"], -r["ci_low"]) if d < 0 else (r["ci_low"], r["ci_high"])
        assert f"95% CI {_pts(lo)} to {_pts(hi)}" in text, cid
        assert f"Holm {_p(r['p_adjusted'])}" in text and f"over {int(r['n'])} seeds" in text, cid
        assert ("lowers accuracy" in text) == (d < 0) and ("raises accuracy" in text) == (d > 0), cid
        ex = stats[(stats["comparison_id"] == cid) & (stats["level"] == "examples")].set_index("test")
        assert f"McNemar pooled over seeds Holm {_p(ex.loc['mcnemar', 'p_adjusted'])}" in text, cid
        b = ex.loc["bootstrap"]
        assert (f"bootstrap difference {_pts(b['difference'])} points (95% CI {_pts(b['ci_low'])} to "
                f"{_pts(b['ci_high'])})") in text, cid


def test_report_states_planted_findings(analyzed):
    report = analyzed["report"].read_text()
    line = next(l for l in report.splitlines() if "id: vs_baseline|gpt2|top k=8|vs|none" in l)
    assert "removing the 50% most important heads" in line and "lowers accuracy" in line
    assert "significant at 0.05" in line and "not significant" not in line
    assert "## Head importance" in report and "L0H0" in report


def test_kernel_runs_this_interpreter(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import sys, os\nprint(sys.executable)\nprint(os.getcwd())")])
    out = analysis.execute_notebook(nb, tmp_path, timeout=120)
    text = out.cells[0].outputs[0].text.splitlines()
    assert text[0] == sys.executable and text[1] == str(tmp_path)
    if shutil.which("ps"):  # the kernel is shut down, not left running
        kids = subprocess.run(["ps", "-o", "args=", "--ppid", str(os.getpid())], capture_output=True, text=True)
        assert "ipykernel_launcher" not in kids.stdout


def test_failing_notebook_is_saved_and_raises(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('boom')")])
    with pytest.raises(RuntimeError, match="notebook execution failed"):
        analysis.execute_notebook(nb, tmp_path, timeout=120, save_to=tmp_path / "x.ipynb")
    saved = nbformat.read(tmp_path / "x.ipynb", as_version=4)
    assert saved.cells[0].outputs[0].output_type == "error"


def test_cli_entry_point(tmp_path, capsys):
    sweep = make_sweep_dir(tmp_path / "s", models={"m": (2, 2)}, seeds=(0, 1, 2), predictions=False)
    assert main([str(sweep), "--no-execute"]) == 0
    printed = capsys.readouterr().out
    for key in ("notebook", "report", "stats", "figures"):
        assert f"{key}: {sweep / 'analysis'}" in printed
    assert (sweep / "analysis" / "figures" / "accuracy_vs_k.png").exists()
    assert main([str(tmp_path / "missing")]) == 2
    assert "no results.parquet" in capsys.readouterr().err


def test_import_pulls_in_neither_torch_nor_ray():
    code = ("import sys, analysis\nassert 'torch' not in sys.modules, 'torch'\n"
            "assert 'ray' not in sys.modules, 'ray'\nimport analysis.figures, analysis.synthetic\n"
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules\nprint('ok')")
    root = str(analysis.__path__[0]).rsplit("/", 1)[0]
    res = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
