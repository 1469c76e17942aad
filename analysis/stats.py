"""Statistical building blocks: bounded intervals, paired tests, Holm, per-condition summaries.

Each function takes arrays or a DataFrame and returns numbers or a DataFrame; no state is kept.
scipy and statsmodels do the tests; this module decides which test fits and handles the
degenerate cases real sweeps produce (one or two seeds, zero variance, identical predictions).

Intervals (docs/analysis.md, "Intervals"), with fewer than MIN_SEEDS_INTERVAL values none at all
(a t-interval on 1 degree of freedom is ±12.7 sd: it says nothing):
  - a mean over seeds of a bounded metric: a Student-t interval on the logit scale of the
    metric mapped to (0, 1), mapped back (``mean_interval``). It cannot leave the range, and near
    the bound, where seed accuracies are skewed, it keeps its coverage better than a t-interval
    (tests/analysis/test_defects.py checks >= 92.5% at 95% for 4 seeds of a skewed Beta; the
    percentile bootstrap over 3-5 seeds covers only 70-80% there);
  - a difference (paired over seeds or examples): a Student-t interval intersected with the range
    a difference can take, [lo - hi, hi - lo]. The true difference lies in that range, so the
    intersection covers it exactly as often as the t-interval, and it keeps the exact duality with
    the t-test (it excludes 0 exactly when p < 1 - conf), which the simultaneous intervals rely on.
"""

from __future__ import annotations

import gc
import math

import numpy as np
import pandas as pd
from scipy import stats as st
from statsmodels.stats.contingency_tables import mcnemar as _sm_mcnemar
from statsmodels.stats.multitest import multipletests

from headsweep.trials.schema import CONDITION, METRIC_RANGES, SUMMARY_COLUMNS

# Below this many discordant pairs the chi-square approximation of McNemar is poor (exact binomial).
MCNEMAR_EXACT_BELOW = 25
# Above this many seeds the sign-flip test is Monte Carlo instead of 2**n enumeration.
SIGN_FLIP_EXACT_MAX = 16
# Fewest values with which an interval (and a standardised effect size) is reported.
MIN_SEEDS_INTERVAL = 3
NO_INTERVAL = f"fewer than {MIN_SEEDS_INTERVAL} seeds: no interval"


def metric_range(metric: str) -> tuple[float, float]:
    return METRIC_RANGES.get(metric, (-math.inf, math.inf))


def difference_range(metric: str) -> tuple[float, float]:
    lo, hi = metric_range(metric)
    return (lo - hi, hi - lo)


def bounded(low: float, high: float, rng: tuple[float, float]) -> tuple[float, float]:
    """[low, high] intersected with rng (NaN stays NaN)."""
    if math.isnan(low) or math.isnan(high):
        return (math.nan, math.nan)
    return (max(low, rng[0]), min(high, rng[1]))


def t_bounds(mean, se, df, conf: float, rng=(-math.inf, math.inf)):
    """mean ± t(conf, df) se, intersected with rng; works elementwise on arrays."""
    mean, se, df = np.asarray(mean, float), np.asarray(se, float), np.asarray(df, float)
    with np.errstate(invalid="ignore"):
        half = st.t.ppf(0.5 + conf / 2, np.where(df > 0, df, np.nan)) * se
    return np.clip(mean - half, *rng), np.clip(mean + half, *rng)


def _present(x) -> tuple[np.ndarray, int, float]:
    """(the values that are not NaN, their count, their mean; NaN when there are none)."""
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    return x, len(x), float(x.mean()) if len(x) else math.nan


def t_interval(x, conf: float = 0.95, rng=(-math.inf, math.inf), min_n: int = 2) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval for the mean, intersected with ``rng``. NaN bounds
    with fewer than ``min_n`` values."""
    x, n, mean = _present(x)
    if n < max(2, min_n):
        return (mean, math.nan, math.nan)
    lo, hi = t_bounds(mean, x.std(ddof=1) / math.sqrt(n), n - 1, conf, rng)
    return (mean, float(lo), float(hi))


def mean_interval(x, metric: str = "accuracy", conf: float = 0.95, n_eval: float | None = None):
    """(mean, low, high) for a mean over seeds of a metric with range [lo, hi]: the t-interval of
    logit((x - lo) / (hi - lo)) mapped back (module docstring). Values at a bound are moved in by
    half an example (0.5 / n_eval, the empirical-logit correction; 1e-3 without n_eval) so their
    logit is finite. The interval always contains the arithmetic mean it is reported with.
    Unbounded metrics (loss) get the t-interval, floored at the range's lower end."""
    x, n, mean = _present(x)
    if n < MIN_SEEDS_INTERVAL:
        return (mean, math.nan, math.nan)
    lo_r, hi_r = metric_range(metric)
    if not (math.isfinite(lo_r) and math.isfinite(hi_r)):
        return t_interval(x, conf, (lo_r, hi_r), min_n=MIN_SEEDS_INTERVAL)
    eps = 0.5 / n_eval if n_eval and n_eval > 0 else 1e-3
    u = np.clip((x - lo_r) / (hi_r - lo_r), eps, 1 - eps)
    z = np.log(u / (1 - u))
    zl, zh = t_bounds(z.mean(), z.std(ddof=1) / math.sqrt(n), n - 1, conf)
    low = lo_r + (hi_r - lo_r) / (1 + math.exp(-float(zl)))
    high = lo_r + (hi_r - lo_r) / (1 + math.exp(-float(zh)))
    return (mean, min(low, mean), max(high, mean))


def bounded_interval(x, metric: str = "accuracy", conf: float = 0.95, difference: bool = False,
                     n_eval: float | None = None):
    """The interval the analysis reports for a mean over seeds, or (difference=True) for a mean
    of paired differences."""
    if difference:
        return t_interval(x, conf, difference_range(metric), min_n=MIN_SEEDS_INTERVAL)
    return mean_interval(x, metric, conf, n_eval)


def summarize(results: pd.DataFrame, metric: str | None = None, conf: float = 0.95) -> pd.DataFrame:
    """Per condition: n seeds, mean, std, sem and the bounded t-interval over seeds.

    Random-K draws are averaged within each seed first (n counts seeds, not draws); n_draws and
    draw_sd (the mean within-seed SD over draws) show their spread."""
    from .conditions import collapse_draws, sweep_metric

    metric = metric or sweep_metric(results)
    cols = CONDITION + ["k_fraction"]
    if results.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    per_seed = collapse_draws(results, metric)
    rows = []
    split = str(results["eval_split"].dropna().iloc[0]) if "eval_split" in results.columns and \
        results["eval_split"].notna().any() else ""
    n_eval = {}
    if "n_eval" in results.columns:
        ne = results.groupby(cols, sort=False, dropna=False)["n_eval"].mean()
        n_eval = {k: float(v) for k, v in ne.items() if pd.notna(v)}
    for key, g in per_seed.groupby(cols, sort=True, dropna=False):
        x = g["value"].to_numpy(float)
        mean, lo, hi = mean_interval(x, metric, conf, n_eval.get(key))
        n = len(x)
        std = float(np.std(x, ddof=1)) if n > 1 else math.nan
        same = n >= MIN_SEEDS_INTERVAL and np.ptp(x) == 0
        if same:   # a zero-width "interval" would claim certainty: said in words instead
            lo = hi = math.nan
        draws = g["n_draws"].to_numpy(int)
        rows.append({**dict(zip(cols, key)), "metric": metric, "eval_split": split, "extra_eval": False, "n": n,
                     "mean": mean, "std": std, "sem": std / math.sqrt(n) if n > 1 else math.nan,
                     "ci_low": lo, "ci_high": hi,
                     "interval": (f"logit-scale t {conf:.0%} over seeds, within [{metric_range(metric)[0]:g}, "
                                  f"{metric_range(metric)[1]:g}]" if not math.isnan(lo) else "none"),
                     "n_draws": float(draws.mean()), "draw_sd": float(np.nanmean(g["draw_sd"])) if draws.max() > 1
                     else math.nan, "seeds": ",".join(str(s) for s in sorted(g["seed"])),
                     "note": NO_INTERVAL if n < MIN_SEEDS_INTERVAL else same_value(n) if same else ""})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def same_value(n: int) -> str:
    """The words for a condition (or difference) with zero variance over its seeds."""
    return f"the same value in all {n} seeds (zero variance): no interval"


def cohens_dz(d, min_n: int = MIN_SEEDS_INTERVAL) -> float:
    """Standardised mean of paired differences (mean / sd). NaN with fewer than ``min_n`` pairs
    (an sd from one degree of freedom makes dz meaningless) or a zero sd."""
    d = np.asarray(d, dtype=float)
    if len(d) < max(2, min_n) or np.ptp(d) == 0:   # identical values: sd 0 (not a float residue of 1e-17)
        return math.nan
    sd = d.std(ddof=1)
    return float(d.mean() / sd) if sd > 0 else math.nan


def paired_t(d) -> tuple[float, float]:
    """(t, two-sided p) of a one-sample t-test on paired differences d (= scipy's ttest_1samp).

    NaN when n < 2 (not testable). When all differences are identical t is undefined (zero
    variance); p is then 1, not NaN: a p of 0 would overstate what identical numbers can show, and
    a NaN would drop the comparison from its Holm family, making the family's size depend on the
    data (the sign-flip test gives p = 1 for identical zeros too)."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    if n < 2:
        return (math.nan, math.nan)
    if np.ptp(d) == 0:
        return (math.nan, 1.0)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(n))
    return (float(t), float(2 * st.t.sf(abs(t), n - 1)))


def example_t(ca, cb) -> dict:
    """Paired t-test with the EXAMPLE as the unit, vectorised over leading axes.

    ca, cb: [..., examples] per-example correctness of a and b, each already averaged over the
    seeds (and random draws) of its condition, so an example counts once however many seeds
    share it. d_i = cb_i - ca_i; H0: the mean of d over the population of examples is 0.
    Returns arrays: difference, se, t, df, p, dz. When every d_i is 0 (identical predictions)
    p = 1; when every d_i is the same non-zero value t is undefined (p NaN)."""
    d = np.asarray(cb, float) - np.asarray(ca, float)
    n = d.shape[-1]
    mean = d.mean(axis=-1)
    sd = d.std(axis=-1, ddof=1) if n > 1 else np.full(mean.shape, np.nan)
    se = sd / math.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, mean / se, np.nan)
        p = np.where(se > 0, 2 * st.t.sf(np.abs(t), max(n - 1, 1)), np.where(mean == 0, 1.0, np.nan))
        dz = np.where(sd > 0, mean / sd, np.nan)
    return {"difference": mean, "se": se, "t": t, "df": np.full(mean.shape, n - 1.0), "p": p, "dz": dz}


def sign_flip_p(d, *, max_exact: int = SIGN_FLIP_EXACT_MAX, n_resamples: int = 100_000, seed: int = 0) -> float:
    """Two-sided paired permutation (sign-flip) test of mean(d) = 0.

    Under H0 each paired difference is symmetric around 0, so every pattern of signs is equally
    likely. Exact: enumerate all 2**n patterns (n <= max_exact). The smallest possible p is
    2 / 2**n, e.g. 0.0625 with 5 seeds: this is what caps small sweeps."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    if n == 0:
        return math.nan
    obs = abs(d.sum())
    tol = 1e-12 * max(1.0, np.abs(d).sum())  # floating ties count as "as extreme"
    if n <= max_exact:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        return float(np.mean(np.abs(signs @ d) >= obs - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n_resamples, n))
    hits = np.sum(np.abs(signs @ d) >= obs - tol)
    return float((hits + 1) / (n_resamples + 1))


def min_sign_flip_p(n: int) -> float:
    """Smallest p the exact two-sided sign-flip test can give with n pairs."""
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


def mcnemar_test(n01: int, n10: int) -> tuple[float, float, str]:
    """McNemar on one seed's discordant counts (n01: a right b wrong, n10: a wrong b right).
    Exact binomial below MCNEMAR_EXACT_BELOW discordant pairs, chi-square with continuity
    correction otherwise. Returns (statistic, p, method). Valid for one pair of fixed models only:
    never sum the counts over seeds (the same example recurs in every seed)."""
    n01, n10 = int(n01), int(n10)
    if n01 + n10 == 0:
        return (0.0, 1.0, "no discordant pairs")
    exact = n01 + n10 < MCNEMAR_EXACT_BELOW
    res = _sm_mcnemar([[0, n01], [n10, 0]], exact=exact, correction=True)
    return (float(res.statistic), float(min(1.0, res.pvalue)), "exact binomial" if exact else "chi2 (cc)")


def paired_bootstrap(ca, cb, *, n_boot: int = 2000, conf: float = 0.95, seed: int = 0) -> dict:
    """Paired bootstrap over examples of mean(cb - ca) (percentile CI; null-centred two-sided p).
    Kept as a cross-check of example_t (the tests compare them); not part of stats.csv."""
    d = np.asarray(cb, dtype=float) - np.asarray(ca, dtype=float)
    n = len(d)
    if n == 0:
        return {"difference": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    block = max(1, 2_000_000 // n)  # bound memory: block resamples of n indices at a time
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        means[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    diff = float(d.mean())
    lo, hi = np.quantile(means, [0.5 - conf / 2, 0.5 + conf / 2])
    extreme = np.sum(np.abs(means - diff) >= abs(diff) - 1e-12)
    return {"difference": diff, "ci_low": float(lo), "ci_high": float(hi), "p": float((extreme + 1) / (n_boot + 1))}


def holm(p) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels' multipletests).

    statsmodels calls gc.collect() inside its Holm branch, which walks the whole heap (~0.1 s with
    pandas and scipy loaded, per family); freezing the heap for the call makes that collection
    trivial and changes no result."""
    gc.freeze()
    try:
        return multipletests(np.asarray(p, dtype=float), method="holm")[1]
    finally:
        gc.unfreeze()


def holm_adjust(df: pd.DataFrame, by=("family", "test"), p: str = "p", out: str = "p_adjusted") -> pd.DataFrame:
    """Holm-adjust column p within each group of `by` (one group = one family of comparisons for
    one test). NaN p-values (untestable comparisons) are left out of the family and stay NaN.
    Also adds family_size (the m used for the correction)."""
    df = df.copy()
    df[out] = np.nan
    df["family_size"] = 0
    if df.empty:
        return df
    for _, idx in df.groupby(list(by), sort=False).groups.items():
        sub = df.loc[idx, p]
        ok = sub.notna()
        if ok.any():
            df.loc[sub[ok].index, out] = holm(sub[ok].to_numpy(float))
        df.loc[idx, "family_size"] = int(ok.sum())
    return df
