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

from headsweep import analysis
from headsweep.analysis.__main__ import main
from headsweep.analysis.synthetic import make_sweep_dir

REQUIRED_STATS = ["family", "model", "group_a", "group_b", "recovery_epochs", "n", "difference", "ci_low",
                  "ci_high", "ci_kind", "sim_ci_low", "sim_ci_high", "effect_size", "test", "p", "p_adjusted"]
FULL_FIGURES = ["gap_vs_k", "heads_by_layer", "importance_heatmaps", "metric_vs_k", "rank_stability", "single_vs_multi"]


def test_analyze_returns_the_contract_paths(analyzed, full_sweep):
    from PIL import Image

    assert {"notebook", "report", "stats", "figures", "summary"} <= set(analyzed)
    out = full_sweep / "analysis"
    assert analyzed["notebook"] == out / "analysis.ipynb" and analyzed["report"] == out / "report.md"
    assert analyzed["stats"] == out / "stats.csv" and analyzed["figures"] == out / "figures"
    assert analyzed["prunable"] == out / "prunable.csv" and "per_head" not in analyzed   # no each-head trials here
    assert sorted(p.stem for p in analyzed["figures"].glob("*.png")) == FULL_FIGURES
    assert sorted(p.stem for p in analyzed["figures"].glob("*.pdf")) == FULL_FIGURES   # a PDF beside every PNG
    for p in analyzed["figures"].glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert min(Image.open(p).info["dpi"]) >= 149.9
    for p in analyzed["figures"].glob("*.pdf"):
        assert p.read_bytes()[:5] == b"%PDF-"
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temp files behind


def test_notebook_executed_with_figures_and_no_errors(analyzed):
    nb = nbformat.read(analyzed["notebook"], as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert all(c.execution_count for c in code)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == len(FULL_FIGURES)
    assert nb.metadata.kernelspec.name == "python3"


def test_notebook_reads_the_tables_it_shows(analyzed, full_sweep):
    """One source of numbers: the notebook reads stats.csv / summary.csv / report.md, it computes none."""
    nb = nbformat.read(analyzed["notebook"], as_version=4)
    params = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in params.metadata.tags and repr(str(full_sweep)) in params.source
    for prev, cell in zip(nb.cells, nb.cells[1:]):
        if cell.cell_type == "code":  # every part is introduced by a markdown cell
            assert prev.cell_type == "markdown"
    src = " ".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "read_table(out / 'stats.csv')" in src and "read_table(out / 'summary.csv')" in src
    assert "report.md" in src
    for fn in ("analysis.compare(", "analysis.summarize(", "build_report("):
        assert fn not in src
    text = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "paired t-test over examples" in text
    assert "Holm" in text and "unadjusted" in text and "example" in text
    # the table the notebook read back equals the one analyze wrote
    stats = analysis.read_table(analyzed["stats"])
    assert stats["primary"].dtype == bool and (stats["arch_init_b"] == "").any()


def test_stats_csv_has_every_comparison(analyzed):
    stats = analysis.read_table(analyzed["stats"])
    assert set(REQUIRED_STATS) <= set(stats.columns)
    assert set(stats["family"]) == {"curve", "vs_baseline", "noninferiority", "top_bottom_random", "multi_vs_single"}
    assert set(stats["family"]) <= set(analysis.FAMILIES)
    prim = stats[stats["primary"]]
    assert prim["comparison_id"].is_unique and prim["test"].isin(["paired_t", "curve_t", "noninferiority_t"]).all()
    ok = stats["p"].notna()
    assert (stats.loc[ok, "p_adjusted"] >= stats.loc[ok, "p"]).all()
    both = stats[stats["ci_low"].notna()]
    assert both["ci_kind"].str.startswith("unadjusted").all()
    assert ((both["ci_low"] >= -1) & (both["ci_high"] <= 1)).all()
    summary = analysis.read_table(analyzed["summary"])
    ci = summary[summary["ci_low"].notna()]
    assert len(ci) and ((ci["ci_low"] >= 0) & (ci["ci_high"] <= 1)).all()


def _pts(x, signed=False):
    if math.isnan(x):
        return "n/a"
    if round(100 * x, 1) == 0:
        return "0.0"   # no "+0.0" or "-0.0" for a value below the printed precision
    return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def _p(p):
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def test_report_agrees_with_stats_csv(analyzed):
    stats = analysis.read_table(analyzed["stats"])
    report = analyzed["report"].read_text()
    bullets = re.findall(r"^- (.*) <!-- id: (.*) -->$", report, flags=re.M)
    prim = stats[stats["primary"] & (stats["family"] != "noninferiority")].set_index("comparison_id")
    assert sorted(cid for _, cid in bullets) == sorted(prim.index)  # one finding per comparison
    for text, cid in bullets:
        r = prim.loc[cid]
        d = r["difference"]
        assert f"{_pts(d, True)} points" in text, cid
        if not math.isnan(r["ci_low"]):
            assert f"unadjusted 95% CI {_pts(r['ci_low'])} to {_pts(r['ci_high'])}" in text, cid
        if not math.isnan(r["sim_ci_low"]):
            assert f"{_pts(r['sim_ci_low'])} to {_pts(r['sim_ci_high'])}" in text, cid
        assert f"Holm {_p(r['p_adjusted'])}" in text and f"over {int(r['n'])} seeds" in text, cid
        shown = round(100 * d, 1)
        assert (", lower (" in text) == (shown < 0) and (", higher (" in text) == (shown > 0), cid
        ex = stats[(stats["comparison_id"] == cid) & (stats["level"] == "examples")]
        if len(ex):
            e = ex.iloc[0]
            assert (f"Per example ({int(e['n_examples'])} examples, correctness averaged over {int(e['n_seeds'])} "
                    f"seed(s)): {_pts(e['difference'], True)} points") in text, cid
            assert f"paired t-test over examples, Holm {_p(e['p_adjusted'])}" in text, cid


def test_report_opens_with_sanity_check_and_curve_tests(analyzed):
    report = analyzed["report"].read_text()
    lines = [ln for ln in report.splitlines() if ln.strip()]
    assert lines[0].startswith("# ")
    assert "Sanity check" in lines[1]
    assert report.index("**Curve-level tests**") < report.index("evaluated trials")
    sanity = [ln for ln in lines if "Sanity check" in ln]
    assert all("passed" in ln for ln in sanity)   # planted: top hurts far more than bottom
    # decided by the curve-level test (its area and Holm p), not by the largest K
    stats = analysis.read_table(analyzed["stats"])
    cv = stats[(stats.family == "curve") & (stats.strategy_a == "bottom") & (stats.strategy_b == "top")]
    for r in cv.itertuples(index=False):
        line = next(ln for ln in sanity if f"for {r.model}:" in ln)
        assert (f"averaged over K from 0 to {100 * r.k_fraction:.0f}% of the heads, the top-K curve minus the bottom-K "
                f"curve is {_pts(r.difference, True)} points (curve-level test over {r.n_seeds} seed(s), Holm "
                f"{_p(r.p_adjusted)})") in line


def test_report_states_planted_findings(analyzed):
    report = analyzed["report"].read_text()
    line = next(l for l in report.splitlines() if "id: vs_baseline|gpt2|top k=8|vs|none" in l)
    assert "removing the 50% most important heads" in line and ", lower (" in line
    assert "significant at 0.05" in line and "not significant" not in line
    assert "## Head importance" in report and "L0H0" in report
    assert "agree strongly" in report   # planted: seeds share weights and rank heads alike
    assert "init pretrained" in report and "not whether one head is as good as many" in report


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
    assert (sweep / "analysis" / "figures" / "metric_vs_k.png").exists()
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such directory" in err and "Traceback" not in err


def test_import_pulls_in_neither_torch_nor_ray():
    code = ("import sys, analysis\nassert 'torch' not in sys.modules, 'torch'\n"
            "assert 'ray' not in sys.modules, 'ray'\nimport analysis.figures, analysis.figures_importance, "
            "analysis.figures_heads, analysis.per_head, analysis.equivalence, analysis.report_pruning, "
            "analysis.synthetic\nassert 'torch' not in sys.modules and 'ray' not in sys.modules\n"
            "assert 'transformers' not in sys.modules\nprint('ok')")
    root = str(analysis.__path__[0]).rsplit("/", 1)[0]
    res = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
