"""Comparison families on synthetic sweeps with planted effects."""

import numpy as np
import pytest
from scipy import stats as st

from headsweep import analysis
from headsweep.analysis.synthetic import default_effect, null_effect, synthetic_sweep


def _bottom_is_null(model, strategy, kf, rec, arch):
    return 0.0 if strategy == "bottom" else default_effect(model, strategy, kf, rec, arch)


@pytest.fixture
def planted(rng):
    return synthetic_sweep(rng, effect=_bottom_is_null)


@pytest.fixture
def planted_stats(planted):
    res, _ = analysis.clean_results(planted.results)
    return res, analysis.compare(res, planted.predictions.get)


def _row(stats, cid, test="paired_t"):
    r = stats[(stats["comparison_id"] == cid) & (stats["test"] == test)]
    assert len(r) == 1, cid
    return r.iloc[0]


def test_large_planted_drop_is_found_with_right_sign(planted_stats):
    _, stats = planted_stats
    for model, k in (("gpt2", 8), ("distilbert", 6)):  # top 50%: planted -30 points
        r = _row(stats, f"vs_baseline|{model}|top k={k}|vs|none")
        assert r["primary"]
        assert r["p_adjusted"] < 0.01
        assert r["difference"] < -0.2 and r["ci_high"] < 0
        assert r["effect_size"] < 0
        ex = _row(stats, r["comparison_id"], "example_t")
        assert ex["p_adjusted"] < 0.01 and ex["difference"] < -0.2 and ex["ci_high"] < 0


def test_null_comparison_is_not_rejected(planted_stats):
    _, stats = planted_stats
    for model, k in (("gpt2", 8), ("distilbert", 6)):
        r = _row(stats, f"vs_baseline|{model}|bottom k={k}|vs|none")
        assert r["p_adjusted"] > 0.05 and not r["significant"]
        assert r["ci_low"] < 0 < r["ci_high"]


def test_difference_is_b_minus_a_paired_by_seed(planted_stats):
    res, stats = planted_stats
    r = _row(stats, "vs_baseline|gpt2|random k=4|vs|none")
    a = res[(res.model == "gpt2") & (res.strategy == "none") & (res.arch == "multi-head")].set_index("seed")
    b = res[(res.model == "gpt2") & (res.strategy == "random") & (res.k == 4)].set_index("seed")
    d = (b["accuracy"] - a["accuracy"]).dropna()
    ref = st.ttest_1samp(d, 0)
    assert r["difference"] == pytest.approx(d.mean())
    assert r["p"] == pytest.approx(ref.pvalue)
    assert r["effect_size"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert r["n"] == 5
    half = st.t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5)   # inside [-1, 1] here, so not truncated
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))


def test_adjusted_p_never_below_raw(planted_stats):
    _, stats = planted_stats
    ok = stats["p"].notna()
    assert ok.sum() > 50
    assert (stats.loc[ok, "p_adjusted"] >= stats.loc[ok, "p"] - 1e-15).all()
    assert ((stats.loc[ok, "p_adjusted"] >= 0) & (stats.loc[ok, "p_adjusted"] <= 1)).all()


def test_family_membership_and_one_primary_per_comparison(planted_stats):
    _, stats = planted_stats
    prim = analysis.primary(stats)
    assert prim["comparison_id"].is_unique
    assert set(stats["comparison_id"]) == set(prim["comparison_id"])
    counts = prim.groupby(["family", "model"]).size()
    # per model: 3 strategies x 2 K; 3 pairs x 2 K; single-head strategy + one-head arch; 2 curve pairs
    assert counts.loc[("vs_baseline", "gpt2")] == 6
    assert counts.loc[("top_bottom_random", "gpt2")] == 6
    assert counts.loc[("multi_vs_single", "gpt2")] == 2
    assert counts.loc[("curve", "gpt2")] == 2
    assert counts.loc[("noninferiority", "gpt2")] == 6   # top / bottom / random at both grid K
    # Holm families span models: m is the whole family's size
    assert set(prim.loc[prim.family == "vs_baseline", "family_size"]) == {12}
    assert set(prim.loc[prim.family == "noninferiority", "family_size"]) == {12}
    assert set(stats["test"]) == {"curve_t", "paired_t", "noninferiority_t", "sign_flip", "example_t"}


def test_per_example_rows_match_direct_computation(planted, planted_stats):
    """The example-level test is scipy's paired t-test on per-example correctness averaged over seeds."""
    res, stats = planted_stats
    cid = "top_bottom_random|distilbert|top k=3|vs|bottom k=3"
    ex = _row(stats, cid, "example_t")
    keys = lambda s: res[(res.model == "distilbert") & (res.strategy == s) & (res.k == 3)].set_index("seed")["trial_key"]
    ka, kb = keys("bottom"), keys("top")
    A = np.stack([planted.predictions[ka[s]]["correct"].to_numpy() for s in ka.index], axis=1)
    B = np.stack([planted.predictions[kb[s]]["correct"].to_numpy() for s in ka.index], axis=1)
    ca, cb = A.mean(axis=1), B.mean(axis=1)
    ref = st.ttest_rel(cb, ca)
    assert ex["p"] == pytest.approx(ref.pvalue) and ex["statistic"] == pytest.approx(ref.statistic)
    assert ex["difference"] == pytest.approx(B.mean() - A.mean())
    assert ex["n"] == ex["n_examples"] == A.shape[0] and ex["n_seeds"] == 5
    assert ex["ci_low"] < ex["difference"] < ex["ci_high"]
    # the paired bootstrap over examples agrees with it (a cross-check of the normal approximation)
    boot = analysis.paired_bootstrap(ca, cb, n_boot=4000, seed=1)
    assert boot["ci_low"] == pytest.approx(ex["ci_low"], abs=0.01) and boot["ci_high"] == pytest.approx(ex["ci_high"], abs=0.01)
    per_seed = analysis.mcnemar_by_seed(res, planted.predictions.get)
    ps = per_seed[per_seed.comparison_id == cid]
    assert len(ps) == 5
    assert ps["n01"].sum() == int((A & ~B).sum()) and ps["n10"].sum() == int((~A & B).sum())


def test_missing_trial_reduces_pairing(planted):
    res, _ = analysis.clean_results(planted.results)
    drop = (res.model == "gpt2") & (res.strategy == "top") & (res.k == 4) & (res.seed == 3)
    stats = analysis.compare(res[~drop], planted.predictions.get)
    r = _row(stats, "vs_baseline|gpt2|top k=4|vs|none")
    assert r["n"] == 4
    assert _row(stats, r["comparison_id"], "example_t")["n_seeds"] == 4


def test_recovery_compares_against_the_baseline_fine_tuned_for_as_long(rng):
    syn = synthetic_sweep(rng, models={"m": (2, 4)}, strategies=("none", "top", "bottom"), k_fractions=(0.5,),
                          recovery_epochs=(0, 2), single_head_arch=False, predictions=False)
    res, _ = analysis.clean_results(syn.results)
    assert set(res.loc[res.strategy == "none", "recovery_epochs"]) == {0.0, 2.0}
    prim = analysis.primary(analysis.compare(res))
    vb = prim[prim.family == "vs_baseline"]
    assert sorted(vb["recovery_epochs"]) == [0.0, 0.0, 2.0, 2.0]
    assert set(vb.loc[vb.recovery_epochs == 2, "group_a"]) == {"none +2ep"}
    assert set(vb.loc[vb.recovery_epochs == 0, "group_a"]) == {"none"}
    assert (vb["note"] == "").all()
    trio = prim[prim.family == "top_bottom_random"]
    assert len(trio) == 2 and set(trio["group_b"]) == {"top k=4", "top k=4 +2ep"}
    assert set(trio["group_a"]) == {"bottom k=4", "bottom k=4 +2ep"}  # never across recovery settings
    # a sweep without the recovered baseline falls back to recovery 0, and says so
    res2 = res[~((res.strategy == "none") & (res.recovery_epochs == 2))]
    vb2 = analysis.primary(analysis.compare(res2))
    vb2 = vb2[(vb2.family == "vs_baseline") & (vb2.recovery_epochs == 2)]
    assert set(vb2["group_a"]) == {"none"} and vb2["note"].str.contains("recovery-0 baseline").all()


def test_null_rejection_rate_near_nominal(rng):
    """200 independent draws (one model each, in one table) where nothing matters:
    the primary test rejects at about alpha, and Holm keeps each draw's family-wise
    rate (2 nulls per family) at or below it."""
    models = {f"m{i:03d}": (2, 2) for i in range(200)}
    syn = synthetic_sweep(rng, models=models, strategies=("none", "top", "bottom"), k_fractions=(0.5,),
                          seeds=range(6), single_head_arch=False, effect=null_effect, predictions=False)
    res, _ = analysis.clean_results(syn.results)
    stats = analysis.holm_adjust(analysis.seed_tests(res), by=("family", "test", "model"))  # one family per draw
    assert (stats["p_adjusted"] >= stats["p"]).all()
    t = stats[(stats.family == "vs_baseline") & (stats.test == "paired_t")]
    assert len(t) == 400 and t["p"].notna().all()
    first = t.groupby("model").head(1)  # one null per draw for the per-comparison rate
    assert np.mean(first["p"] < 0.05) <= 0.08
    assert t.groupby("model")["p_adjusted"].min().lt(0.05).mean() <= 0.08
    # p-values of a valid test are uniform under the null
    assert st.kstest(t["p"], "uniform").pvalue > 0.001
    sf = stats[(stats.family == "vs_baseline") & (stats.test == "sign_flip")]
    assert np.mean(sf.groupby("model").head(1)["p"] < 0.05) <= 0.08  # exact: at most alpha


def test_example_test_calibrated_under_homogeneous_null(rng):
    """Per-example test under a per-example null where every example is alike (same model quality per seed)."""
    models = {f"m{i:03d}": (2, 2) for i in range(150)}
    syn = synthetic_sweep(rng, models=models, strategies=("none", "top"), k_fractions=(0.5,), seeds=range(3),
                          single_head_arch=False, effect=null_effect, trial_sd=0.0, n_eval=150)
    res, _ = analysis.clean_results(syn.results)
    ex = analysis.example_tests(res, syn.predictions.get)
    assert len(ex) == 150 and (ex["test"] == "example_t").all()
    assert np.mean(ex["p"] < 0.05) <= 0.08


def test_one_seed_skips_seed_tests_with_a_warning(rng):
    syn = synthetic_sweep(rng, seeds=(0,))
    res, _ = analysis.clean_results(syn.results)
    stats = analysis.compare(res, syn.predictions.get)
    seeds = stats[stats.level == "seeds"]
    assert seeds["p"].isna().all() and seeds["p_adjusted"].isna().all()
    assert seeds["note"].str.contains("not testable").all()
    assert stats.loc[stats.level == "examples", "p"].notna().all()  # per-example tests still run
    warnings = analysis.power_warnings(stats)
    assert any("Fewer than 2 paired seeds" in w for w in warnings)


def test_power_warning_when_exact_tests_cannot_reach_significance(planted_stats):
    _, stats = planted_stats
    warnings = analysis.power_warnings(stats)
    text = " ".join(warnings)
    assert "0.0625" in text and "vs_baseline" in text
    # with 5 seeds and 12 comparisons, the first Holm step is 12 * 0.0625 = 0.75
    assert "0.75 >" in text
    sf = stats[stats.test == "sign_flip"]
    assert (sf["p"] >= 0.0625 - 1e-12).all()
