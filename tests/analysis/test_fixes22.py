"""Issue 22 item 7 (analysis side): power warnings with the exact-test seed floor and a minimum
detectable effect, interval ranges per quantity, zero variance and tiny differences in words,
identical-by-construction comparisons left out, the oracle labelled."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from headsweep import analysis
from headsweep.analysis.compare import exact_seed_floor, t_test_row
from headsweep.analysis.report import _seed_evidence, direction, finding, fmt_pts
from headsweep.analysis.synthetic import synthetic_sweep


def _res(conds, model="m", heads_total=16):
    rows = [{"model": model, "strategy": s, "k": k, "k_fraction": k / heads_total, "seed": i, "accuracy": v,
             "heads_total": heads_total} for (s, k), vals in conds.items() for i, v in enumerate(vals)]
    res, _ = analysis.clean_results(pd.DataFrame(rows))
    return res


def test_exact_seed_floor_is_the_smallest_n_whose_sign_flip_p_can_pass_holm():
    for m in (1, 2, 5, 25, 144):
        n = exact_seed_floor(m)
        assert n == math.ceil(math.log2(2 * m / 0.05))
        assert m * 2 / 2**n < 0.05 <= m * 2 / 2 ** (n - 1)   # n seeds can, n - 1 cannot
    assert exact_seed_floor(25) == 10 and exact_seed_floor(144) == 13


def test_power_warnings_give_the_seed_floor_and_a_minimum_detectable_effect():
    from statsmodels.stats.power import TTestPower

    rng = np.random.default_rng(1)
    base = rng.normal(0.9, 0.01, 5)
    conds = {("none", 0): base, **{("top", k): base - 0.01 * k + rng.normal(0, 0.01, 5) for k in (2, 4, 6, 8)}}
    stats = analysis.compare(_res(conds))
    w = analysis.power_warnings(stats)
    assert not any("5+ seeds" in x for x in w)
    sf = next(x for x in w if x.startswith("vs_baseline: with 5 seeds the exact sign-flip"))
    assert f"= {exact_seed_floor(4)} seeds would be needed" in sf
    mde = next(x for x in w if x.startswith("vs_baseline: minimum detectable effect"))
    vs = stats[(stats.family == "vs_baseline") & stats.primary]
    sd = vs["sd"].median()
    dz = TTestPower().solve_power(nobs=5, alpha=0.05 / 4, power=0.8, alternative="two-sided")
    assert f"about {100 * dz * sd:.2f} points" in mde and f"{100 * sd:.2f} points" in mde
    # the power of the paired t-test at that effect is 80% (non-central t, by hand)
    crit = st.t.ppf(1 - 0.05 / 8, 4)
    nc = dz * math.sqrt(5)
    assert st.nct.sf(crit, 4, nc) + st.nct.cdf(-crit, 4, nc) == pytest.approx(0.8, abs=1e-3)
    one = analysis.power_warnings(analysis.compare(_res({("none", 0): [0.9], ("top", 2): [0.8]})))
    assert any(f"({exact_seed_floor(1)} for m = 1)" in x for x in one)


def test_interval_ranges_follow_the_quantity():
    """A curve area lies in the difference range; a difference of two areas (methods) in twice it:
    its interval is not clipped to [-1, 1]."""
    d = np.array([-1.5, -1.2, -1.8, -1.1])
    clipped = t_test_row(d, "accuracy", 0.95)
    wide = t_test_row(d, "accuracy", 0.95, (-2.0, 2.0))
    half = st.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert clipped["ci_low"] == -1.0 and wide["ci_low"] == pytest.approx(d.mean() - half)
    assert wide["ci_high"] == pytest.approx(d.mean() + half)
    syn = synthetic_sweep(np.random.default_rng(3), models={"m": (2, 4)}, methods=("gradient", "ablation"),
                          predictions=False, single_head_arch=False, strategies=("none", "top", "bottom"))
    res, _ = analysis.clean_results(syn.results)
    stats = analysis.compare(res)
    meth = stats[stats.family == "methods"].iloc[0]
    assert "within [-2, 2]" in meth["ci_kind"]
    assert "within [-1, 1]" in stats[stats.family == "curve"].iloc[0]["ci_kind"]


def test_zero_variance_is_said_in_words_not_as_an_interval():
    res = _res({("none", 0): [0.9, 0.9, 0.9], ("top", 2): [0.85, 0.86, 0.84]})
    s = analysis.summarize(res).set_index("strategy")
    assert math.isnan(s.loc["none", "ci_low"]) and "zero variance" in s.loc["none", "note"]
    assert not math.isnan(s.loc["top", "ci_low"])
    report = analysis.build_report("t", res, analysis.compare(res), analysis.summarize(res))
    assert "n/a (zero variance)" in report


def test_a_tiny_difference_is_never_plus_zero_higher():
    assert fmt_pts(0.0004, True) == "0.0" and fmt_pts(-0.0004, True) == "0.0" and fmt_pts(0.0006, True) == "+0.1"
    assert direction(0.0004) == "less than 0.05 points either way" and direction(0.002) == "higher"
    r = pd.Series({**t_test_row(np.array([0.0001, 0.0008, 0.0003]), "accuracy", 0.95), "family": "vs_baseline",
                   "metric": "accuracy", "model": "m", "strategy_b": "bottom", "k": 2, "k_fraction": 0.125,
                   "per_layer": False, "arch_b": "multi-head", "variant_b": "m", "arch_init_b": "",
                   "importance_method": "gradient", "recovery_epochs": 0.0, "group_b": "bottom k=2",
                   "group_a": "none", "layer": -1, "comparison_id": "x", "sim_ci_low": math.nan,
                   "sim_ci_high": math.nan, "family_size": 1, "p_adjusted": 0.2})
    text = finding(r, pd.DataFrame(columns=["test"]))
    assert "accuracy 0.0 points, less than 0.05 points either way (" in text and "+0.0" not in text
    assert "higher" not in text and "lower" not in text
    assert "Holm p = 0.200" in _seed_evidence(r, 0.05)


def test_oracle_rows_are_labelled_and_are_not_a_criterion():
    syn = synthetic_sweep(np.random.default_rng(8), models={"m": (2, 4)}, predictions=False, single_head_arch=False,
                          strategies=("none", "top", "bottom", "layer-single-head"))
    res, _ = analysis.clean_results(syn.results)
    assert set(res.loc[res.strategy == "layer-single-head", "importance_method"]) == {"gradient", "oracle"}
    assert not analysis.conditions.several_methods(res)   # oracle ranks nothing: one criterion here
    stats = analysis.compare(res)
    assert not stats["family"].eq("methods").any()
    report = analysis.build_report("t", res, stats, analysis.summarize(res))
    assert "[oracle]" not in report.replace("[oracle: best head]", "")
    assert "best (oracle, on the evaluation set)" in report and "keep: best" in report


def test_identical_by_construction_is_not_planned_and_other_iterative_k_are():
    syn = synthetic_sweep(np.random.default_rng(9), models={"m": (2, 4)}, predictions=False, single_head_arch=False,
                          strategies=("none", "bottom", "iterative"), k_fractions=(0.25, 0.5, 0.75), iterative_step=0.25)
    res, _ = analysis.clean_results(syn.results)
    it, bo = (res[res.strategy == s].set_index(["seed", "k"])["accuracy"] for s in ("iterative", "bottom"))
    assert (it.loc[(slice(None), 2)] == bo.loc[(slice(None), 2)]).all()   # step 1 = bottom-2, the same numbers
    plan = analysis.plan_comparisons(res)
    pairs = plan[(plan.family == "top_bottom_random") & (plan.strategy_b == "iterative")]
    assert sorted(pairs["k"]) == [4, 6]
