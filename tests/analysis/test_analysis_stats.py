"""Statistical primitives checked against independent computations."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st
from statsmodels.stats.multitest import multipletests

from headsweep import analysis
from headsweep.analysis import stats as S


def test_t_interval_matches_hand_computation(rng):
    x = rng.normal(0.8, 0.05, size=7)
    mean, lo, hi = S.t_interval(x)
    half = st.t.ppf(0.975, 6) * np.std(x, ddof=1) / math.sqrt(7)
    assert mean == pytest.approx(x.mean())
    assert (lo, hi) == pytest.approx((x.mean() - half, x.mean() + half))
    # 90% interval is narrower and uses the 0.95 quantile
    _, lo90, hi90 = S.t_interval(x, conf=0.90)
    assert hi90 - lo90 == pytest.approx(2 * st.t.ppf(0.95, 6) * np.std(x, ddof=1) / math.sqrt(7))


def test_t_interval_one_value_has_no_bounds():
    mean, lo, hi = S.t_interval([0.9])
    assert mean == 0.9 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in S.t_interval([]))


def test_summarize_agrees_with_groupby(rng):
    rows = [{"model": m, "variant": m, "arch": "multi-head", "strategy": s, "per_layer": False, "k": k,
             "recovery_epochs": 0.0, "k_fraction": k / 8, "seed": seed, "accuracy": rng.uniform(0.5, 1),
             "n_eval": 200} for m in ("a", "b") for s, k in (("none", 0), ("top", 4)) for seed in range(4)]
    df, _ = analysis.clean_results(pd.DataFrame(rows).iloc[:-1])  # one condition with 3 seeds only
    summ = S.summarize(df)
    assert len(summ) == 4
    for _, r in summ.iterrows():
        x = df[(df.model == r.model) & (df.strategy == r.strategy)]["accuracy"].to_numpy()
        assert r.n == len(x)
        assert r["mean"] == pytest.approx(x.mean())
        assert r["std"] == pytest.approx(x.std(ddof=1))
        # by hand: t-interval of logit(accuracy), mapped back
        z = np.log(x / (1 - x))
        half = st.t.ppf(0.975, len(x) - 1) * z.std(ddof=1) / math.sqrt(len(x))
        lo, hi = 1 / (1 + np.exp(-(z.mean() - half))), 1 / (1 + np.exp(-(z.mean() + half)))
        assert (r.ci_low, r.ci_high) == pytest.approx((min(lo, x.mean()), max(hi, x.mean())))
        assert 0 <= r.ci_low <= r["mean"] <= r.ci_high <= 1


def test_mean_interval_at_the_bound_and_for_signed_metrics():
    mean, lo, hi = S.mean_interval([1.0, 1.0, 0.99], "accuracy", n_eval=100)
    assert 0 < lo <= mean <= hi <= 1
    mean, lo, hi = S.mean_interval([-0.9, -0.95, 0.2], "mcc")
    assert -1 <= lo <= mean <= hi <= 1
    assert all(math.isnan(v) for v in S.mean_interval([0.5, 0.6], "accuracy")[1:])   # < 3 seeds: none
    mean, lo, hi = S.bounded_interval([-0.98, -0.09, -0.94], "accuracy", difference=True)
    assert -1 <= lo <= mean <= hi <= 1 and lo == -1.0   # the t-interval reaches past -1: intersected


def _brute_sign_flip(d):
    d = np.asarray(d, float)
    obs = abs(d.sum())
    hits = [abs(np.dot(s, d)) >= obs - 1e-12 for s in itertools.product([1, -1], repeat=len(d))]
    return np.mean(hits)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_sign_flip_exact_matches_brute_force(rng, n):
    for _ in range(5):
        d = rng.normal(0.01, 0.02, size=n)
        assert S.sign_flip_p(d) == pytest.approx(_brute_sign_flip(d))
    d = np.round(rng.normal(0, 1, size=n), 0)  # ties and zeros
    assert S.sign_flip_p(d) == pytest.approx(_brute_sign_flip(d))


def test_sign_flip_floor_is_two_over_two_to_the_n():
    assert S.sign_flip_p([0.1, 0.2, 0.15, 0.3, 0.25]) == pytest.approx(0.0625)
    assert S.min_sign_flip_p(5) == pytest.approx(0.0625)
    assert S.min_sign_flip_p(10) == pytest.approx(2 / 1024)


def test_sign_flip_monte_carlo_close_to_exact(rng):
    d = rng.normal(0.3, 1.0, size=14)
    exact = S.sign_flip_p(d)
    mc = S.sign_flip_p(d, max_exact=0, n_resamples=50_000, seed=1)
    assert abs(mc - exact) < 0.01


def test_paired_t_matches_scipy(rng):
    a, b = rng.normal(0.8, 0.02, 6), rng.normal(0.75, 0.02, 6)
    t, p = S.paired_t(b - a)
    ref = st.ttest_rel(b, a)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert all(math.isnan(v) for v in S.paired_t([0.1]))
    # zero variance: t undefined, p = 1 (kept in its Holm family, as the sign-flip test keeps identical zeros)
    t, p = S.paired_t([0.1, 0.1, 0.1])
    assert math.isnan(t) and p == 1.0
    assert S.sign_flip_p([0.0, 0.0, 0.0]) == 1.0


def test_cohens_dz_by_hand(rng):
    d = rng.normal(-0.1, 0.03, 5)
    assert S.cohens_dz(d) == pytest.approx(d.mean() / d.std(ddof=1))
    assert math.isnan(S.cohens_dz([0.2]))


@pytest.mark.parametrize("n01,n10", [(0, 0), (3, 9), (1, 12), (10, 10)])
def test_mcnemar_exact_is_binomial(n01, n10):
    stat, p, method = S.mcnemar_test(n01, n10)
    if n01 + n10 == 0:
        assert p == 1.0
        return
    assert method == "exact binomial"
    assert p == pytest.approx(st.binomtest(n10, n01 + n10, 0.5).pvalue)


def test_mcnemar_large_counts_use_corrected_chi2():
    n01, n10 = 40, 70
    stat, p, method = S.mcnemar_test(n01, n10)
    chi2 = (abs(n01 - n10) - 1) ** 2 / (n01 + n10)
    assert method.startswith("chi2")
    assert stat == pytest.approx(chi2) and p == pytest.approx(st.chi2.sf(chi2, 1))


def test_paired_bootstrap_is_reproducible_and_near_normal_ci(rng):
    ca = rng.random(2000) < 0.85
    cb = rng.random(2000) < 0.80
    r1 = S.paired_bootstrap(ca, cb, n_boot=2000, seed=3)
    r2 = S.paired_bootstrap(ca, cb, n_boot=2000, seed=3)
    assert r1 == r2
    d = cb.astype(float) - ca.astype(float)
    assert r1["difference"] == pytest.approx(d.mean())
    se = d.std(ddof=1) / math.sqrt(len(d))
    assert r1["ci_low"] == pytest.approx(d.mean() - 1.96 * se, abs=0.004)
    assert r1["ci_high"] == pytest.approx(d.mean() + 1.96 * se, abs=0.004)
    assert r1["p"] < 0.01  # a 5-point drop on 2000 examples


def _holm_by_hand(p):
    p = np.asarray(p, float)
    order = np.argsort(p)
    m = len(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def test_holm_matches_hand_and_statsmodels(rng):
    p = rng.uniform(0, 0.2, size=9)
    assert S.holm(p) == pytest.approx(_holm_by_hand(p))
    assert S.holm(p) == pytest.approx(multipletests(p, method="holm")[1])


def test_holm_adjust_groups_and_skips_nan():
    df = pd.DataFrame({"family": ["x", "x", "x", "y", "y"], "test": ["t"] * 5,
                       "p": [0.01, 0.04, np.nan, 0.03, 0.5]})
    out = S.holm_adjust(df)
    assert out["p_adjusted"].iloc[:2].tolist() == pytest.approx(_holm_by_hand([0.01, 0.04]).tolist())
    assert math.isnan(out["p_adjusted"].iloc[2])
    assert out["p_adjusted"].iloc[3:].tolist() == pytest.approx(_holm_by_hand([0.03, 0.5]).tolist())
    assert out["family_size"].tolist() == [2, 2, 2, 2, 2]
    ok = out["p"].notna()
    assert (out.loc[ok, "p_adjusted"] >= out.loc[ok, "p"]).all()
