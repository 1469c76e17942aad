"""Partial, odd and broken sweeps must load and analyse without crashing (item 6)."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from headsweep import analysis
from headsweep.analysis.synthetic import make_sweep_dir, synthetic_sweep, write_sweep
from headsweep.trials import layout
from headsweep.trials.errors import UserError


def _run(path):
    paths = analysis.analyze(path, execute=False)
    for key in ("notebook", "report", "stats", "figures"):
        assert paths[key].exists(), key
    return paths, pd.read_csv(paths["stats"]), paths["report"].read_text()


def test_partial_sweep_missing_trials(tmp_path, rng):
    syn = synthetic_sweep(rng)
    keep = rng.random(len(syn.results)) > 0.3
    syn.results = syn.results[keep].reset_index(drop=True)
    _, stats, report = _run(write_sweep(tmp_path / "s", syn))
    assert len(stats) > 0
    assert (stats["n_seeds"].dropna() <= 5).all()
    assert "## Against the unpruned baseline" in report


def test_one_seed(tmp_path):
    paths, stats, report = _run(make_sweep_dir(tmp_path / "s", seeds=(0,)))
    seeds = stats[stats.level == "seeds"]
    assert seeds["p"].isna().all()
    assert "not testable across seeds with 1 seed(s)" in report
    assert "Fewer than 2 paired seeds" in report
    assert stats.loc[stats.level == "examples", "p"].notna().all()


def test_one_model_no_single_head(tmp_path):
    p = make_sweep_dir(tmp_path / "s", models={"gpt2": (2, 4)}, strategies=("none", "top", "bottom"),
                       single_head_arch=False)
    paths, stats, report = _run(p)
    assert set(stats["model"]) == {"gpt2"}
    assert "multi_vs_single" not in set(stats["family"])
    assert not (paths["figures"] / "single_vs_multi.png").exists()
    assert (paths["figures"] / "metric_vs_k.png").exists()
    section = report.split("## Multi-head vs single-head")[1].split("\n## ")[0]
    assert "No comparisons of this kind" in section


def test_no_predictions_no_importance(tmp_path):
    p = make_sweep_dir(tmp_path / "s", predictions=False, importance=False)
    paths, stats, report = _run(p)
    assert set(stats["level"]) == {"seeds"}
    assert "no predictions/ directory" in report and "no importance.parquet" in report
    assert not (paths["figures"] / "importance_heatmaps.png").exists()
    assert "No importance scores in this sweep." in report


def test_nan_metrics_dropped(tmp_path, rng):
    """Rows are built by the real schema (no status column: an errored trial writes no row, and a
    NaN metric is the only trace of a broken evaluation)."""
    syn = synthetic_sweep(rng, predictions=False)
    r = syn.results.copy()
    assert "status" not in r.columns
    r.loc[[0, 5, 7], "accuracy"] = np.nan
    syn.results = r
    sweep_dir = write_sweep(tmp_path / "s", syn, predictions=False)
    sweep = analysis.load(sweep_dir)
    assert len(sweep.results) == len(r) - 3
    assert any("3 trial(s) with a NaN accuracy" in n for n in sweep.notes)
    _, stats, report = _run(sweep_dir)
    assert "3 trial(s) with a NaN accuracy" in report


def test_sweep_still_running_fewer_rows_and_csv_only(tmp_path, rng):
    syn = synthetic_sweep(rng, predictions=False)
    syn.results = syn.results.iloc[:25]  # the first trials to finish
    p = write_sweep(tmp_path / "s", syn, predictions=False)
    (p / layout.RESULTS).unlink()  # the parquet is rewritten last; the csv is there
    _, stats, report = _run(p)
    assert len(stats) > 0 and "## accuracy per condition" in report


def test_all_trials_failed(tmp_path, rng):
    syn = synthetic_sweep(rng, predictions=False)
    syn.results = syn.results.assign(status="error", accuracy=np.nan)
    _, stats, report = _run(write_sweep(tmp_path / "s", syn, predictions=False))
    assert stats.empty and "No finished trials yet" in report


def test_minimal_columns_get_defaults(tmp_path):
    df = pd.DataFrame({"model": ["m"] * 6, "strategy": ["none"] * 3 + ["top"] * 3, "k": [0] * 3 + [2] * 3,
                       "seed": [0, 1, 2] * 2, "accuracy": [0.9, 0.91, 0.89, 0.7, 0.72, 0.69]})
    res, notes = analysis.clean_results(df)
    assert set(res["arch"]) == {"multi-head"} and set(res["variant"]) == {"m"}
    assert (res["recovery_epochs"] == 0).all() and not res["per_layer"].any()
    assert any("k_fraction missing" in n for n in notes)
    stats = analysis.compare(res)
    # vs_baseline and its non-inferiority test (K is on the grid: top's only K)
    assert sorted(analysis.primary(stats)["family"]) == ["noninferiority", "vs_baseline"]
    with pytest.raises(ValueError, match="accuracy"):
        analysis.clean_results(df.drop(columns="accuracy"))


def test_duplicate_trials_keep_last(rng):
    syn = synthetic_sweep(rng, predictions=False, models={"m": (2, 2)})
    dup = syn.results.iloc[[0]].assign(accuracy=0.123)
    res, notes = analysis.clean_results(pd.concat([syn.results, dup]))
    assert len(res) == len(syn.results) and any("duplicate" in n for n in notes)
    first = syn.results.iloc[0]
    assert 0.123 in res.loc[(res.strategy == first.strategy) & (res.seed == first.seed) & (res.k == first.k),
                            "accuracy"].tolist()


def test_missing_sweep_dir_raises(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        analysis.load(tmp_path / "nope")


def test_loader_reads_predictions_lazily(tmp_path):
    p = make_sweep_dir(tmp_path / "s", models={"m": (2, 2)}, seeds=(0, 1))
    sweep = analysis.load(p)
    assert sweep.name == "synthetic" and sweep.has_predictions
    key = sweep.results["trial_key"].iloc[0]
    assert not sweep._cache
    df = sweep.predictions(key)
    assert list(df.columns[:2]) == ["example_id", "correct"] and len(sweep._cache) == 1
    assert sweep.predictions("no-such-trial") is None
    r = sweep.results
    assert json.loads(r.loc[r.strategy == "none", "heads_removed"].iloc[0]) == []
    top = r[(r.strategy == "top")].iloc[0]
    assert len(json.loads(top["heads_removed"])) == top["k"]


def test_one_seed_no_extras_notebook_executes(tmp_path):
    """The executed notebook must cope with the thinnest sweep too."""
    import nbformat

    p = make_sweep_dir(tmp_path / "s", models={"m": (2, 2)}, seeds=(0,), predictions=False, importance=False,
                       single_head_arch=False, strategies=("none", "top"))
    paths = analysis.analyze(p, execute=True, timeout=300)
    nb = nbformat.read(paths["notebook"], as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "figure skipped" in text and "no importance scores" in text


def test_identical_differences_are_named_as_such_not_blamed_on_the_seed_count():
    """Three seeds that all lose exactly 47.7 points: t is undefined because nothing varies,
    not because three seeds are too few (a neighbouring row with three seeds is tested). p is 1
    (the comparison stays in its Holm family), and no zero-width interval is printed."""
    from headsweep.analysis.compare import t_test_row
    from headsweep.analysis.report import _seed_evidence
    t = t_test_row([-0.477, -0.477, -0.477], "accuracy", 0.95)
    assert t["p"] == 1.0 and t["sd"] == 0.0 and math.isnan(t["ci_low"]) and math.isnan(t["effect_size"])
    row = {**t, "sim_ci_low": math.nan, "sim_ci_high": math.nan, "family_size": 4, "p_adjusted": 1.0}
    text = _seed_evidence(row, 0.05)
    assert "the same difference in all 3 seeds (zero variance): no interval" in text
    assert "p is set to 1" in text and "Holm p = 1.000, not significant" in text
    assert "CI" not in text and "dz" not in text
    assert "with 3 seed(s)" not in text
    varied = {**t_test_row([-0.40, -0.47, -0.52], "accuracy", 0.95), "sim_ci_low": math.nan,
              "sim_ci_high": math.nan, "family_size": 4, "p_adjusted": 0.01}
    assert "paired t-test over 3 seeds, Holm p = 0.010" in _seed_evidence(varied, 0.05)
