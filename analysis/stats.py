"""Statistical building blocks: intervals, paired tests, McNemar, bootstrap, Holm.

Each function takes arrays or a DataFrame and returns numbers or a DataFrame; no
state is kept anywhere. scipy and statsmodels do the actual tests; this module
only decides which test fits and handles the degenerate cases (one seed, zero
variance, no discordant pairs) that real sweeps produce.
"""

from __future__ import annotations

import gc
import math

import numpy as np
import pandas as pd
from scipy import stats as st
from statsmodels.stats.contingency_tables import mcnemar as _sm_mcnemar
from statsmodels.stats.multitest import multipletests

from trials.schema import CONDITION, SUMMARY_COLUMNS

# Below this many discordant pairs the chi-square approximation of McNemar is
# poor, so the exact binomial version is used (a common rule of thumb).
MCNEMAR_EXACT_BELOW = 25
# Above this many seeds the sign-flip test is Monte Carlo instead of 2**n enumeration.
SIGN_FLIP_EXACT_MAX = 16


def t_interval(x, conf: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval for the mean. NaN bounds when n < 2."""
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return (mean, math.nan, math.nan)
    half = st.t.ppf(0.5 + conf / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return (mean, mean - half, mean + half)


def summarize(results: pd.DataFrame, metric: str = "accuracy", conf: float = 0.95) -> pd.DataFrame:
    """Per condition (model, variant, arch, strategy, per_layer, K, recovery): mean,
    std, n and the t-interval over seeds."""
    cols = CONDITION + ["k_fraction"]
    rows = []
    for key, g in results.groupby(cols, sort=True, dropna=False):
        x = g[metric].to_numpy(float)
        mean, lo, hi = t_interval(x, conf)
        std = float(np.std(x, ddof=1)) if len(x) > 1 else math.nan
        rows.append({**dict(zip(cols, key)), "metric": metric, "n": len(x), "mean": mean, "std": std,
                     "sem": std / math.sqrt(len(x)) if len(x) > 1 else math.nan, "ci_low": lo, "ci_high": hi,
                     "seeds": ",".join(str(s) for s in sorted(g["seed"]))})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def cohens_dz(d) -> float:
    """Standardised mean of paired differences (mean / sd). NaN if sd is 0 or n < 2."""
    d = np.asarray(d, dtype=float)
    if len(d) < 2:
        return math.nan
    sd = d.std(ddof=1)
    return float(d.mean() / sd) if sd > 0 else math.nan


def paired_t(d) -> tuple[float, float]:
    """(t, two-sided p) of a one-sample t-test on paired differences d.

    NaN when n < 2 or all differences are identical (t is undefined there and a
    p of 0 would overstate what two identical numbers can show)."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    if n < 2 or np.ptp(d) == 0:
        return (math.nan, math.nan)
    # Same as scipy.stats.ttest_1samp(d, 0) (the tests check it), without its
    # per-call overhead, which dominates when thousands of comparisons are run.
    t = d.mean() / (d.std(ddof=1) / math.sqrt(n))
    return (float(t), float(2 * st.t.sf(abs(t), n - 1)))


def sign_flip_p(d, *, max_exact: int = SIGN_FLIP_EXACT_MAX, n_resamples: int = 100_000, seed: int = 0) -> float:
    """Two-sided paired permutation (sign-flip) test of mean(d) = 0.

    Under H0 each paired difference is symmetric around 0, so every pattern of
    signs is equally likely. Exact: enumerate all 2**n patterns (n <= max_exact),
    p = share whose |mean| reaches the observed |mean|. The smallest possible p
    is 2 / 2**n, e.g. 0.0625 with 5 seeds: this is what caps small sweeps.
    """
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
    """McNemar on the discordant counts (n01: a right b wrong, n10: a wrong b right).

    Exact binomial when there are fewer than MCNEMAR_EXACT_BELOW discordant pairs,
    chi-square with continuity correction otherwise. Returns (statistic, p, method).
    """
    n01, n10 = int(n01), int(n10)
    if n01 + n10 == 0:
        return (0.0, 1.0, "no discordant pairs")
    exact = n01 + n10 < MCNEMAR_EXACT_BELOW
    res = _sm_mcnemar([[0, n01], [n10, 0]], exact=exact, correction=True)
    return (float(res.statistic), float(min(1.0, res.pvalue)), "exact binomial" if exact else "chi2 (cc)")


def matched_odds_ratio(n01: int, n10: int) -> float:
    """n10 / n01 with a 0.5 continuity correction so it stays finite."""
    return float((n10 + 0.5) / (n01 + 0.5))


def paired_bootstrap(ca, cb, *, n_boot: int = 2000, conf: float = 0.95, seed: int = 0) -> dict:
    """Paired bootstrap over examples of mean(cb - ca).

    ca, cb: per-example correctness of a and b (0/1, or averaged over seeds).
    Resampling whole examples keeps the pairing. Returns difference, percentile
    CI and a two-sided p from the null-centred bootstrap distribution.
    """
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

    statsmodels calls gc.collect() inside its Holm branch, which walks the whole
    heap (~0.1 s with pandas and scipy loaded, per family); freezing the heap for
    the call makes that collection trivial and changes no result."""
    gc.freeze()
    try:
        return multipletests(np.asarray(p, dtype=float), method="holm")[1]
    finally:
        gc.unfreeze()


def holm_adjust(df: pd.DataFrame, by=("family", "test"), p: str = "p", out: str = "p_adjusted") -> pd.DataFrame:
    """Holm-adjust column p within each group of `by` (one group = one family of
    comparisons for one test). NaN p-values (untestable comparisons) are left out
    of the family and stay NaN. Also adds family_size (m used for the correction)."""
    df = df.copy()
    df[out] = np.nan
    df["family_size"] = 0
    for _, idx in df.groupby(list(by), sort=False).groups.items():
        sub = df.loc[idx, p]
        ok = sub.notna()
        if ok.any():
            adj = holm(sub[ok].to_numpy(float))
            df.loc[sub[ok].index, out] = adj
        df.loc[idx, "family_size"] = int(ok.sum())
    return df
