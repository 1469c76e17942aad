"""Issue 11, items 10-14 and the acceptance list: the headline, random-K draws, the newer strategies
(iterative, layer-single-head), the figures' rules, several sweeps in one analysis, and bad input
refused with one line and exit 2 before anything is written."""

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from headsweep import analysis
from headsweep.analysis.__main__ import main
from headsweep.analysis.synthetic import synthetic_sweep, write_sweep
from headsweep.trials import layout
from headsweep.trials.schema import STRATEGY_ORDER

SMALL = {"m": (3, 4)}


def _sweep(tmp_path, name="s", seed=0, **kw):
    kw.setdefault("models", SMALL)
    kw.setdefault("predictions", False)
    syn = synthetic_sweep(np.random.default_rng(seed), **kw)
    return write_sweep(tmp_path / name, syn, predictions=kw["predictions"], name=name,
                       task=kw.get("task", "synthetic")), syn


# ---------------------------------------------------------------- headline
def test_headline_against_direct_computation():
    syn = synthetic_sweep(np.random.default_rng(21), models={"a": (2, 4), "b": (3, 4)}, predictions=False)
    res, _ = analysis.clean_results(syn.results)
    stats, summary = analysis.compare(res), analysis.summarize(res)
    h = analysis.headline(stats, summary)
    assert list(h["model"]) == ["a", "b"] and (h["k_fraction"] == 0.5).all()
    for r in h.itertuples(index=False):
        m = res[(res.model == r.model) & (res.arch == "multi-head")]
        base = m[m.strategy == "none"].set_index("seed")["accuracy"]
        assert r.baseline_mean == pytest.approx(base.mean()) and r.baseline_n == 5
        for s in ("top", "bottom", "random"):
            x = m[(m.strategy == s) & (m.k == r.k)].set_index("seed")["accuracy"]
            assert getattr(r, f"{s}_mean") == pytest.approx(x.mean())
            d = x - base
            assert getattr(r, f"{s}_difference") == pytest.approx(d.mean())
            p = st.ttest_rel(x, base).pvalue
            assert getattr(r, f"{s}_p_adjusted") >= p - 1e-12    # Holm never lowers a p
            row = stats[(stats.comparison_id == f"vs_baseline|{r.model}|{s} k={r.k}|vs|none") & stats.primary]
            assert getattr(r, f"{s}_p_adjusted") == pytest.approx(row["p_adjusted"].iloc[0])
            assert row["p"].iloc[0] == pytest.approx(p)
    # planted: top hurts, bottom barely
    assert (h["top_difference"] < -0.1).all() and (h["top_p_adjusted"] < 0.05).all()
    assert (h["bottom_difference"].abs() < 0.03).all()


def test_headline_from_the_tables_analyze_wrote(tmp_path):
    path, _ = _sweep(tmp_path, recovery_epochs=(0, 1))
    paths = analysis.analyze(path, execute=False)
    h = analysis.headline(analysis.read_table(paths["stats"]), analysis.read_table(paths["summary"]))
    assert len(h) == 2 and sorted(h["recovery_epochs"]) == [0.0, 1.0]
    assert h[["baseline_mean", "top_mean", "top_difference", "top_p_adjusted"]].notna().all().all()
    report = paths["report"].read_text()
    assert report.index("**At the largest K**") < report.index("evaluated trials")
    assert analysis.headline(pd.DataFrame(columns=analysis.compare(pd.DataFrame()).columns),
                             analysis.summarize(pd.DataFrame())).empty


# ---------------------------------------------------------------- random-K draws, new strategies
def test_random_draws_are_averaged_within_seed():
    syn = synthetic_sweep(np.random.default_rng(22), models=SMALL, strategies=("none", "top", "random"),
                          random_draws=4, draw_sd=0.03, predictions=False, single_head_arch=False)
    res, _ = analysis.clean_results(syn.results)
    assert res.loc[res.strategy == "random", "draw"].nunique() == 4
    summ = analysis.summarize(res)
    r = summ[(summ.strategy == "random") & (summ.k == 6)].iloc[0]
    rnd = res[(res.strategy == "random") & (res.k == 6)]
    per_seed = rnd.groupby("seed")["accuracy"].mean()
    assert r["n"] == 5 and r["n_draws"] == 4                     # n counts seeds, not draws
    assert r["mean"] == pytest.approx(per_seed.mean()) and r["std"] == pytest.approx(per_seed.std())
    assert r["draw_sd"] == pytest.approx(rnd.groupby("seed")["accuracy"].std().mean())
    stats = analysis.compare(res)
    row = stats[(stats.comparison_id == "vs_baseline|m|random k=6|vs|none") & stats.primary].iloc[0]
    base = res[res.strategy == "none"].set_index("seed")["accuracy"]
    assert row["n"] == 5 and row["n_draws"] == 4
    assert row["p"] == pytest.approx(st.ttest_rel(per_seed, base).pvalue)
    assert "## Random-K draws" in analysis.build_report("t", res, stats, summ)


def test_iterative_and_layer_single_head(tmp_path):
    path, syn = _sweep(tmp_path, strategies=STRATEGY_ORDER, single_head_arch=False)
    paths = analysis.analyze(path, execute=False)
    stats = analysis.read_table(paths["stats"])
    prim = stats[stats["primary"]]
    # iterative rows are a curve over K: compared with bottom at every K and over the whole curve
    it = prim[(prim.strategy_b == "iterative")]
    assert set(it["family"]) == {"vs_baseline", "noninferiority", "top_bottom_random", "curve"}
    assert set(it.loc[it.family == "top_bottom_random", "k"]) == {3, 6}   # every grid K (step 1 is K = 1 here)
    assert set(it.loc[it.family == "noninferiority", "k"]) == {3, 6}      # grid K only, not the further steps
    assert set(it.loc[it.family == "vs_baseline", "k"]) == set(range(1, 9))
    # layer-single-head: one comparison per layer and kept head (ranked, or the oracle's best) against the
    # baseline, in its own family
    lay = prim[prim.strategy_b == "layer-single-head"]
    assert set(lay["family"]) == {"layer_single_head"} and sorted(lay["layer"]) == [0, 0, 1, 1, 2, 2]
    assert (lay["group_a"] == "none").all() and lay["family_size"].eq(6).all()
    assert sorted(lay.loc[lay.importance_method == "oracle", "group_b"]) == [
        f"layer-single-head L{i} [oracle: best head]" for i in range(3)]
    res, _ = analysis.clean_results(syn.results)
    base = res[res.strategy == "none"].set_index("seed")["accuracy"]
    l1 = res[(res.strategy == "layer-single-head") & (res.layer == 1) & (res.importance_method == "gradient")]
    ranked = lay[(lay.layer == 1) & (lay.importance_method == "gradient")]
    assert ranked["difference"].iloc[0] == pytest.approx((l1.set_index("seed")["accuracy"] - base).mean())
    report = paths["report"].read_text()
    assert "## One layer at a time" in report and "| ranked first by gradient | 2 |" in report
    assert "| best (oracle, on the evaluation set) | 2 |" in report and "an **oracle**" in report
    assert (paths["figures"] / "layer_single_head.png").exists()


# ---------------------------------------------------------------- figures
def test_figures_follow_the_rules(tmp_path, monkeypatch):
    """Axes inside the metric's range, K = 0 on every curve, one colour per strategy in every
    figure, PNG >= 150 dpi beside a PDF."""
    from matplotlib.colors import to_hex
    from matplotlib.figure import Figure
    from PIL import Image

    from headsweep.analysis import figures

    path, _ = _sweep(tmp_path, strategies=STRATEGY_ORDER, random_draws=2, k_fractions=(0.25, 0.5, 0.75),
                     base_accuracy=0.97, single_head_arch=True)
    drawn = {}
    orig = Figure.savefig

    def capture(self, fname, *a, **kw):
        drawn.setdefault(Path(str(fname)).name.lstrip(".").split(".")[0], self)   # atomic: .<name>.png.*.tmp
        return orig(self, fname, *a, **kw)

    monkeypatch.setattr(Figure, "savefig", capture)
    paths = analysis.analyze(path, execute=False)
    for png in paths["figures"].glob("*.png"):
        assert png.with_suffix(".pdf").exists()
        assert min(Image.open(png).info["dpi"]) >= 149.9
    curves = drawn["metric_vs_k"]
    for ax in curves.axes:
        lo, hi = ax.get_ylim()
        assert 0 <= lo < hi <= 1
        for ln in ax.get_lines():
            name = ln.get_label()
            if name.split(" ")[0] in ("top", "bottom", "random", "iterative"):
                x = np.asarray(ln.get_xdata(), float)
                assert x[0] == 0.0, name                                  # every curve starts at K = 0
                assert to_hex(ln.get_color()) == to_hex(figures.color(name.split(" ")[0])), name
    for ax in drawn["gap_vs_k"].axes:
        lo, hi = ax.get_ylim()
        assert -1 <= lo < hi <= 1
        for ln in ax.get_lines():
            if " − " in ln.get_label():
                assert np.asarray(ln.get_xdata(), float)[0] == 0.0
                assert np.asarray(ln.get_ydata(), float)[0] == 0.0
    legend = {t.get_text(): h for lg in drawn["gap_vs_k"].legends for t, h in zip(lg.texts, lg.legend_handles)}
    assert set(legend) == {"top − bottom", "top − random"}
    for ax in drawn["layer_single_head"].axes:
        colls = [c for c in ax.collections if len(c.get_offsets())]
        assert colls and all(to_hex(c.get_edgecolor()[0]) == to_hex(figures.color("layer-single-head"))
                             for c in colls if c.get_label() in ("not significant",))
    assert len({to_hex(figures.color(s)) for s in STRATEGY_ORDER}) == len(STRATEGY_ORDER)


def test_every_interval_in_the_demo_outputs_is_inside_the_range(tmp_path):
    path, _ = _sweep(tmp_path, models={"gpt2": (4, 4), "distilbert": (3, 4)}, seeds=(0, 1, 2), predictions=True,
                     base_accuracy=0.985, seed_sd=0.03)
    paths = analysis.analyze(path, execute=False)
    summ, stats = analysis.read_table(paths["summary"]), analysis.read_table(paths["stats"])
    s = summ[summ["ci_low"].notna()]
    assert len(s) and ((s["ci_low"] >= 0) & (s["ci_high"] <= 1)).all()
    for lo, hi in (("ci_low", "ci_high"), ("sim_ci_low", "sim_ci_high")):
        x = stats[stats[lo].notna()]
        assert len(x) and ((x[lo] >= -1) & (x[hi] <= 1) & (x[lo] <= x["difference"])
                           & (x["difference"] <= x[hi])).all()


# ---------------------------------------------------------------- several sweeps
def test_two_tasks_combine_with_importance_agreement(tmp_path, capsys):
    a, _ = _sweep(tmp_path, "sst2", seed=1, task="sst2")
    b, _ = _sweep(tmp_path, "mnli", seed=2, task="mnli")
    assert main([str(a), str(b), "--no-execute", "--out", str(tmp_path / "both")]) == 0
    out = tmp_path / "both" / layout.ANALYSIS
    stats = analysis.read_table(out / "stats.csv")
    assert set(stats["task"]) == {"sst2", "mnli"}
    assert stats.loc[stats["primary"], "comparison_id"].is_unique
    assert stats["comparison_id"].str.contains(r"\|sst2:m\|").any()
    sweep = analysis.load([a, b])
    imp = analysis.shared_only(sweep.importance, analysis.seed_correspondence(sweep.results))
    ta = analysis.task_agreement(imp)
    assert len(ta) == 1 and ta.iloc[0][["task_a", "task_b"]].tolist() == ["mnli", "sst2"]
    m = imp.groupby(["task", "layer", "head"])["score"].mean().unstack("task")
    assert ta.iloc[0]["spearman"] == pytest.approx(st.spearmanr(m["mnli"], m["sst2"]).statistic)
    cut = math.ceil(0.1 * len(m))
    top = len(set(m["mnli"].nlargest(cut).index) & set(m["sst2"].nlargest(cut).index)) / cut
    assert ta.iloc[0]["top_overlap"] == pytest.approx(top)
    # rank stability stays within a task: never seed 0 of one task against seed 1 of the other
    rs = analysis.rank_stability(imp)
    assert set(rs["task"]) == {"sst2", "mnli"} and len(rs) == 2 * 10
    report = (out / "report.md").read_text()
    assert "Across tasks: Spearman correlation" in report and "mnli / sst2" in report
    assert "Combined analysis of 2 sweeps" in report
    for task in ("sst2", "mnli"):   # every finding says which task it is about
        assert re.search(rf"^- Sanity check .*for {task}: m\b", report, flags=re.M), task
        assert re.search(rf"^\| {task}: m \|", report, flags=re.M), task   # the headline table


def test_more_seeds_added_later_are_pooled(tmp_path):
    a, sa = _sweep(tmp_path, "first", seed=3, seeds=(0, 1, 2))
    b, sb = _sweep(tmp_path, "later", seed=4, seeds=(3, 4))
    sweep = analysis.load([a, b])
    assert sorted(sweep.results["seed"].unique()) == [0, 1, 2, 3, 4]
    stats = analysis.compare(sweep.results)
    assert (analysis.primary(stats).query("family == 'vs_baseline'")["n"] == 5).all()


def _expect_refusal(capsys, argv, *patterns):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for p in patterns:
        assert re.search(p, err), err


def test_incompatible_sweeps_are_refused_with_nothing_written(tmp_path, capsys):
    a, _ = _sweep(tmp_path, "a", seed=5, seeds=(0, 1, 2))
    b, _ = _sweep(tmp_path, "b", seed=6, seeds=(3, 4))
    spec = b / layout.SPEC
    spec.write_text(spec.read_text().replace('"lr": 2e-05', '"lr": 5e-05'))
    _expect_refusal(capsys, [str(a), str(b), "--no-execute"], r"finetune\.lr", "different protocols")
    syn = synthetic_sweep(np.random.default_rng(7), models=SMALL, seeds=(0, 1), predictions=False)
    syn.results["trial_key"] += "-other"    # the same seeds again, run as different trials
    c = write_sweep(tmp_path / "c", syn, predictions=False, name="c")
    _expect_refusal(capsys, [str(a), str(c), "--no-execute"], "seed", "both")
    d, _ = _sweep(tmp_path, "d", seed=8, metric="f1")
    _expect_refusal(capsys, [str(a), str(d), "--no-execute"], "metric")
    e, _ = _sweep(tmp_path, "e", seed=9, task="mnli", model_names={"m": "bert-base-uncased"})
    _expect_refusal(capsys, [str(a), str(e), "--no-execute"], r"models\[m\]\.name", "two different models")
    for p in (a, b, c, d, e):
        assert not (p / layout.ANALYSIS).exists()


def test_bad_input_one_line_and_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    _expect_refusal(capsys, [str(empty)], "sweep_dir", "no results")
    p, syn = _sweep(tmp_path, "preds", seed=9, predictions=True)
    gone = sorted((p / layout.PREDICTIONS).glob("*.parquet"))[3]
    gone.unlink()
    _expect_refusal(capsys, [str(p), "--no-execute"], "predictions", "missing for 1 of")
    q = tmp_path / "nocol"
    q.mkdir()
    syn.results.drop(columns="seed").to_parquet(q / layout.RESULTS)
    _expect_refusal(capsys, [str(q), "--no-execute"], "results", "seed", "lacks required column")
    for d in (empty, p, q):
        assert not (d / layout.ANALYSIS).exists()
