"""Issue 11, defects 1-9: one test (or a few) per defect, each written to fail on the analysis as it
was before the fix. They use only the public entry points (summarize, compare, example_tests,
seed_tests, build_report, analyze) and build their inputs by hand or with the synthetic generator."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from headsweep import analysis
from headsweep.analysis.synthetic import synthetic_sweep, write_sweep

from .simulate import as_sweep, correctness

ROOT = Path(__file__).resolve().parents[2]
BULLET = re.compile(r"^- (.*) <!-- id: (.*) -->$", flags=re.M)
PAIR = re.compile(r"([+-]?\d+\.\d) to ([+-]?\d+\.\d)")


def _hand(conds: dict, model: str = "m", heads_total: int = 16, **extra) -> pd.DataFrame:
    """{(strategy, k): [metric per seed]} -> a cleaned results table of one model."""
    rows = []
    for (strategy, k), values in conds.items():
        for seed, v in enumerate(values):
            rows.append({"model": model, "strategy": strategy, "k": k, "k_fraction": k / heads_total, "seed": seed,
                         "accuracy": v, "heads_total": heads_total, "trial_key": f"{model}-{strategy}-{k}-{seed}",
                         **extra})
    res, _ = analysis.clean_results(pd.DataFrame(rows))
    return res


def _bullets(report: str) -> dict:
    return {cid: text.replace("\u2212", "-") for text, cid in BULLET.findall(report)}


def _report(res, stats, summary=None, importance=None):
    summary = analysis.summarize(res) if summary is None else summary
    return analysis.build_report("t", res, stats, summary, importance)


# ---------------------------------------------------------------- 1. unbounded intervals
def test_defect1_no_seed_interval_with_two_seeds():
    res = _hand({("none", 0): [0.832, 0.40], ("top", 4): [0.5, 0.9]})
    summ = analysis.summarize(res)
    assert summ["ci_low"].isna().all() and summ["ci_high"].isna().all()
    assert summ["note"].str.contains("3 seeds").all()  # says why


def test_defect1_mean_intervals_stay_in_the_metric_range():
    res = _hand({("none", 0): [0.99, 0.999, 0.5], ("top", 4): [0.01, 0.02, 0.6]})
    summ = analysis.summarize(res)
    assert ((summ["ci_low"] >= 0) & (summ["ci_high"] <= 1)).all()
    assert ((summ["ci_low"] <= summ["mean"]) & (summ["mean"] <= summ["ci_high"])).all()
    mcc = res.assign(mcc=[0.95, 0.99, -0.9, -0.99, -0.95, 0.9])
    s2 = analysis.summarize(mcc, metric="mcc")
    assert ((s2["ci_low"] >= -1) & (s2["ci_high"] <= 1)).all()


def test_defect1_difference_intervals_stay_in_range():
    res = _hand({("none", 0): [0.99, 0.99, 0.99], ("top", 4): [0.01, 0.9, 0.05]})
    row = analysis.primary(analysis.compare(res)).iloc[0]
    assert -1 <= row["ci_low"] <= row["difference"] <= row["ci_high"] <= 1


def test_defect1_bounded_interval_keeps_its_coverage(rng):
    """2000 conditions of 4 seeds, skewed near the top of the range (Beta(40, 1.5), true mean
    0.964): every interval inside [0, 1] and at least 92.5% of them cover the true mean (a plain
    t-interval, clipped or not, covers about 90% here; the chosen interval about 94%)."""
    n, seeds, true = 2000, 4, 40 / 41.5
    x = rng.beta(40, 1.5, size=(n, seeds))
    rows = [{"model": f"m{i}", "strategy": "none", "k": 0, "k_fraction": 0.0, "seed": s, "accuracy": x[i, s]}
            for i in range(n) for s in range(seeds)]
    res, _ = analysis.clean_results(pd.DataFrame(rows))
    summ = analysis.summarize(res)
    assert ((summ["ci_low"] >= 0) & (summ["ci_high"] <= 1)).all()
    assert ((summ["ci_low"] <= true) & (true <= summ["ci_high"])).mean() >= 0.925


# ---------------------------------------------------------------- 2. signs
@pytest.fixture(scope="module")
def planted():
    syn = synthetic_sweep(np.random.default_rng(11))
    res, _ = analysis.clean_results(syn.results)
    stats = analysis.compare(res, syn.predictions.get, n_boot=200)
    return syn, res, stats


def test_defect2_one_sign_convention_in_table_and_words(planted):
    syn, res, stats = planted
    bullets = _bullets(_report(res, stats))
    prim = analysis.primary(stats)
    prim = prim[prim["family"] != "noninferiority"].set_index("comparison_id")   # a table of its own
    assert len(bullets) == len(prim)
    for cid, text in bullets.items():
        r = prim.loc[cid]
        d = r["difference"]
        tiny = round(100 * d, 1) == 0   # below the printed precision: "0.0", no sign and no direction word
        assert (" 0.0 points" if tiny else f"{100 * d:+.1f}") in text, (cid, text)   # signed, condition minus reference
        rows = stats[stats["comparison_id"] == cid]
        signed = set()
        for _, x in rows.iterrows():
            for lo, hi in (("ci_low", "ci_high"), ("sim_ci_low", "sim_ci_high")):
                if lo in x and not (math.isnan(x[lo]) or math.isnan(x[hi])):
                    signed.add(tuple("0.0" if v == "-0.0" else v for v in (f"{100 * x[lo]:.1f}", f"{100 * x[hi]:.1f}")))
        for a, b in PAIR.findall(text):
            assert float(a) <= float(b), (cid, text)
            assert (f"{float(a):.1f}", f"{float(b):.1f}") in signed, (cid, a, b, text)
        if tiny:
            assert "less than 0.05 points either way" in text and "+0.0" not in text and "-0.0" not in text, text
        elif d < 0:
            assert "lower" in text and "higher" not in text, text
        elif d > 0:
            assert "higher" in text and "lower" not in text, text


# ---------------------------------------------------------------- 3. intervals vs the adjusted p
def test_defect3_intervals_match_the_correction_or_say_unadjusted():
    d = np.array([-0.02, -0.01, -0.015, -0.005, -0.012])
    base = np.array([0.80, 0.82, 0.79, 0.81, 0.80])
    conds = {("none", 0): base}
    for k in range(1, 15):
        conds[("random", k)] = base + d + 0.0005 * k
    res = _hand(conds)
    stats = analysis.compare(res)
    prim = analysis.primary(stats)
    excl = (prim["ci_high"] < 0) | (prim["ci_low"] > 0)
    assert (excl & ~prim["significant"]).any()  # the situation of the defect happens here
    bullets = _bullets(_report(res, stats))
    for _, r in prim[excl & ~prim["significant"]].iterrows():
        assert "unadjusted" in r["ci_kind"]
        assert "unadjusted" in bullets[r["comparison_id"]]
    sim = prim[prim["sim_ci_low"].notna()]
    assert len(sim)
    sim_excl = (sim["sim_ci_high"] < 0) | (sim["sim_ci_low"] > 0)
    assert sim.loc[sim_excl, "significant"].all()  # a simultaneous interval never contradicts Holm


# ---------------------------------------------------------------- 4. pooled McNemar
def test_defect4_example_level_test_is_calibrated_under_heterogeneous_null():
    """400 simulated comparisons, 200 examples x 5 seeds, each example with its own direction of
    difference (the same in every seed): every example-level test rejects at most 7% at 0.05."""
    a, b = correctness(np.random.default_rng(4), 400, 200, 5)
    raw, preds = as_sweep(a, b)
    res, _ = analysis.clean_results(raw)
    ex = analysis.example_tests(res, preds.get, n_boot=200)
    assert len(ex)
    for test, g in ex.groupby("test"):
        assert len(g) == 400 and g["p"].notna().all(), test
        assert np.mean(g["p"] < 0.05) <= 0.07, (test, np.mean(g["p"] < 0.05))


def test_defect4_example_level_test_finds_a_planted_effect():
    a, b = correctness(np.random.default_rng(5), 100, 200, 5, effect=-0.6)
    raw, preds = as_sweep(a, b)
    res, _ = analysis.clean_results(raw)
    ex = analysis.example_tests(res, preds.get, n_boot=200)
    for test, g in ex.groupby("test"):
        assert np.mean(g["p"] < 0.05) >= 0.8, test
        assert (g["difference"] < 0).mean() > 0.95


def test_seed_level_primary_test_calibrated_and_powered():
    """The primary test across seeds under the same kind of null, on a fixed evaluation set whose
    expected difference is zero (antithetic examples), and against a planted drop."""
    a, b = correctness(np.random.default_rng(6), 400, 200, 5, antithetic=True)
    res, _ = analysis.clean_results(as_sweep(a, b, with_predictions=False)[0])
    t = analysis.seed_tests(res)
    t = t[t["test"] == analysis.PRIMARY_TEST]
    assert len(t) == 400 and t["p"].notna().all()
    assert np.mean(t["p"] < 0.05) <= 0.07
    assert st.kstest(t["p"], "uniform").pvalue > 0.001
    a, b = correctness(np.random.default_rng(7), 200, 400, 5, effect=-0.5, antithetic=True)
    res, _ = analysis.clean_results(as_sweep(a, b, with_predictions=False)[0])
    t = analysis.seed_tests(res)
    t = t[t["test"] == analysis.PRIMARY_TEST]
    assert np.mean(t["p"] < 0.05) >= 0.8


# ---------------------------------------------------------------- 5. per-layer K
def test_defect5_per_layer_k_is_the_total():
    base = [0.9, 0.91, 0.89]
    res = _hand({("none", 0): base, ("top", 8): [0.6, 0.62, 0.58], ("bottom", 8): [0.88, 0.9, 0.87]},
                per_layer=True, k_requested="2")
    stats = analysis.compare(res)
    assert not stats["group_b"].str.contains("k=8/layer").any()
    assert not stats["group_a"].str.contains("k=8/layer").any()
    report = _report(res, stats)
    assert not re.search(r"\b8 (most|least) important heads in each layer", report)
    assert not re.search(r"\b8 random heads in each layer", report)
    top = next(t for c, t in _bullets(report).items() if c.startswith("vs_baseline") and "top" in c)
    assert "K = 8" in top and "each layer" in top and "50%" in top


# ---------------------------------------------------------------- 6. single-head twice
def test_defect6_single_head_is_in_one_family(planted):
    _, _, stats = planted
    sh = stats[(stats["strategy_b"] == "single-head") & (stats["arch_b"] != "single-head")]
    assert len(sh) and sh.groupby("model")["family"].nunique().eq(1).all()


# ---------------------------------------------------------------- 7. baselines
def test_defect7_figures_and_statistics_use_one_baseline(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    syn = synthetic_sweep(np.random.default_rng(3), models={"m": (2, 4)}, strategies=("none", "top", "bottom"),
                          k_fractions=(0.5,), recovery_epochs=(0, 2), single_head_arch=False, predictions=False)
    r = syn.results
    rec = r[r["strategy"] == "none"].copy()
    rec["recovery_epochs"] = 2.0
    rec["accuracy"] = rec["accuracy"] - 0.2   # the unpruned model fine-tuned 2 more epochs: a different baseline
    rec["trial_key"] = rec["trial_key"] + "-r2"
    rec["stage"] = "B"
    syn.results = pd.concat([r, rec], ignore_index=True)
    sweep = write_sweep(tmp_path / "s", syn, predictions=False)
    drawn = []
    orig = Figure.savefig

    def capture(self, fname, *a, **kw):
        name = Path(str(fname)).name
        if "_vs_k" in name and "gap" not in name:   # the metric-vs-K figure (accuracy_vs_k before the fix)
            drawn.append(self)
        return orig(self, fname, *a, **kw)

    monkeypatch.setattr(Figure, "savefig", capture)
    paths = analysis.analyze(sweep, execute=False, n_boot=100)
    stats = pd.read_csv(paths["stats"])
    vb = stats[(stats["family"] == "vs_baseline") & (stats["recovery_epochs"] == 2) & stats["primary"]]
    assert len(vb)
    used = vb["mean_a"].unique()
    assert len(used) == 1
    res, _ = analysis.clean_results(syn.results)
    assert used[0] == pytest.approx(res.loc[(res.strategy == "none") & (res.recovery_epochs == 2), "accuracy"].mean())
    panels = [ax for f in drawn for ax in f.axes if "recovery 2" in ax.get_title()]
    assert panels
    for ax in panels:
        lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("none")]
        assert lines, [ln.get_label() for ln in ax.get_lines()]
        for ln in lines:
            assert np.asarray(ln.get_ydata(), float)[0] == pytest.approx(used[0])
    doc = (ROOT / "docs" / "analysis.md").read_text()
    assert "always has recovery 0" not in doc


# ---------------------------------------------------------------- 8. rank stability
def _with_config(syn, names: dict):
    r = syn.results.copy()
    r["config"] = [json.dumps({"model": {"name": names[m], "label": m, "tokenizer": None}, "seed": int(s)})
                   for m, s in zip(r["model"], r["seed"])]
    syn.results = r
    return syn


def test_defect8_no_rank_stability_across_seed_initialised_weights(tmp_path):
    syn = _with_config(synthetic_sweep(np.random.default_rng(8), predictions=False),
                       {"gpt2": "preset:tiny-gpt2-random", "distilbert": "preset:tiny-distilbert-random"})
    paths = analysis.analyze(write_sweep(tmp_path / "s", syn, predictions=False), execute=False)
    report = paths["report"].read_text()
    assert not re.search(r"seeds? agree", report)
    assert "do not share" in report
    figs = {p.stem for p in paths["figures"].glob("*.png")}
    assert "rank_stability" not in figs and "importance_heatmaps" not in figs


def test_defect8_wording_follows_the_value(tmp_path):
    syn = _with_config(synthetic_sweep(np.random.default_rng(9), predictions=False),
                       {"gpt2": "gpt2", "distilbert": "distilbert-base-uncased"})
    imp = syn.importance.copy()
    odd = imp["seed"] % 2 == 1
    imp.loc[odd, "score"] = 1.0 / imp.loc[odd, "score"]   # odd seeds rank the heads in reverse
    syn.importance = imp
    stab = analysis.stability_summary(analysis.rank_stability(imp))
    assert (stab["spearman_mean"] < 0).all()
    report = analysis.analyze(write_sweep(tmp_path / "s", syn, predictions=False), execute=False)["report"].read_text()
    lines = [ln for ln in report.splitlines() if "Spearman" in ln and ("gpt2" in ln or "distilbert" in ln)]
    assert lines
    for ln in lines:
        assert not re.search(r"\bagree", ln), ln


# ---------------------------------------------------------------- 9. effect sizes
def test_defect9_no_effect_size_from_two_seeds():
    res = _hand({("none", 0): [0.9, 0.91], ("top", 4): [0.5, 0.52], ("bottom", 4): [0.89, 0.9]})
    stats = analysis.compare(res)
    seeds = stats[stats["level"] == "seeds"]
    assert seeds["effect_size"].isna().all()
    assert seeds.loc[seeds["test"] == analysis.PRIMARY_TEST, "note"].str.contains("effect size").all()
    assert not re.search(r"dz = -?\d", _report(res, stats))
