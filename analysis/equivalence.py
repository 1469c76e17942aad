"""How many heads can go: non-inferiority against the unpruned model, and the prunable fraction.

"40% of the heads can be pruned" is an equivalence statement; a p > 0.05 for a drop is not one
(with 5 seeds and Holm over many comparisons almost anything is "not significant"). So:

Margin. ``analysis.margin`` in the sweep file (default 0.01, one point of the primary metric, in
metric units), declared before the sweep and recorded in spec.yaml; the analysis reads it from
there (``margin_of``), and combined sweeps must have declared the same one.

Non-inferiority test (family ``noninferiority``, test ``noninferiority_t``). For every (model,
strategy, K on the sweep's grid) and its reference (conditions.reference: the unpruned model
fine-tuned for as long), the per-seed differences d_s = condition - baseline (random draws
averaged within a seed) are tested one-sided:  H0: mean(d) <= -margin  against  H1: mean(d) >
-margin, by a one-sample t-test over seeds (= scipy.stats.ttest_1samp(d, -margin,
alternative="greater")). Holm within the family, as every family. A rejected H0 says "the loss
is smaller than the margin", with the error rate controlled; a non-rejection says nothing.
Beside it: the unadjusted one-sided lower bound mean - t(conf, n-1) se, and the simultaneous one
at level 1 - (1 - conf) / m (Bonferroni over the family, analysis.compare.simultaneous): it lies
above -margin exactly when p < (1 - conf) / m, which implies a Holm-significant p.
Identical differences in every seed give p = 1 (t undefined; kept in the family), fewer than 2
seeds p = NaN (untestable, out of the family).

Prunable fraction (``prunable``). Per (model, strategy, criterion, per_layer, recovery): the
largest grid K such that every grid K up to it is non-inferior (Holm p < alpha); 0 when the
smallest is not. Its 95% interval is a seed bootstrap: each of ``n_boot`` resamples draws the
model's seeds with replacement (one draw per model, shared by all its conditions, so the curve
keeps its shape), and recomputes every per-seed mean difference and SD, every non-inferiority
t-test of the family, their Holm adjustment, and the prunable K; the interval is the 2.5% and
97.5% percentiles of those K (values the bootstrap produced, so grid values).
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats as st

from headsweep.trials import layout
from headsweep.trials.errors import UserError
from headsweep.trials.schema import PRUNABLE_COLUMNS

from .conditions import index, paired, sweep_metric
from .stats import MIN_SEEDS_INTERVAL, cohens_dz, difference_range

DEFAULT_MARGIN = 0.01            # one point of the primary metric (orchestrator.sweep.AnalysisSpec)
NONINF_FAMILY = "noninferiority"
NONINF_TEST = "noninferiority_t"
CURVE_STRATEGIES = ("top", "bottom", "random", "iterative")
GRID_STRATEGIES = ("top", "bottom", "random")    # their K are the sweep's grid
GRID_GROUP = ["task", "model", "variant_b", "per_layer", "recovery_epochs"]
PRUNE_GROUP = GRID_GROUP + ["strategy_b", "importance_method"]


def points(margin: float) -> str:
    """0.01 -> '1-point'; 0.005 -> '0.5-point'."""
    return f"{100 * margin:g}-point"


def margin_of(specs) -> tuple[float, list[str]]:
    """The margin the sweep(s) declared in spec.yaml (analysis.margin), and notes. Combined sweeps
    must agree; a spec without the key (written before it existed) gets the default, with a note."""
    found, notes = {}, []
    for i, spec in enumerate(specs or [None]):
        name = str((spec or {}).get("name") or f"sweep {i + 1}")
        sec = (spec or {}).get("analysis")
        value = sec.get("margin") if isinstance(sec, dict) else None
        if value is None:
            notes.append(f"{name}: {layout.SPEC} declares no analysis.margin: the default {DEFAULT_MARGIN:g} "
                         f"({points(DEFAULT_MARGIN)}) is used")
            value = DEFAULT_MARGIN
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise UserError("analysis.margin", value, f"{name}: must be a number in (0, 1), in metric units "
                                                      "(0.01 = 1 point)")
        found[name] = float(value)
    if len(set(found.values())) > 1:
        raise UserError("analysis.margin", ", ".join(f"{k}: {v:g}" for k, v in found.items()),
                        "combined sweeps declared different non-inferiority margins; analyse them separately")
    return next(iter(found.values())), notes


def one_sided_lower(mean, se, dof, level: float, lo: float = -math.inf) -> float:
    """mean - t(level, dof) se, not below lo (the range's lower end)."""
    if not (dof > 0 and se > 0) or math.isnan(mean):
        return math.nan
    return max(lo, float(mean - st.t.ppf(level, dof) * se))


def noninferiority_p(d, margin: float) -> tuple[float, float]:
    """(t, one-sided p) of H0: mean(d) <= -margin. p = 1 for identical differences, NaN for n < 2."""
    d = np.asarray(d, float)
    if len(d) < 2:
        return (math.nan, math.nan)
    if np.ptp(d) == 0:
        return (math.nan, 1.0)
    res = st.ttest_1samp(d, -margin, alternative="greater")
    return (float(res.statistic), float(res.pvalue))


def noninferiority_plan(results: pd.DataFrame) -> pd.DataFrame:
    """The vs_baseline comparisons of the curve strategies at the K of the sweep's grid (top /
    bottom / random's K per model; iterative's own K where none of them ran), as a plan of the
    non-inferiority family (analysis.compare.plan_comparisons' columns)."""
    from .compare import PLAN_COLUMNS, plan_comparisons

    plan = plan_comparisons(results)
    plan = plan[(plan["family"] == "vs_baseline") & plan["strategy_b"].isin(CURVE_STRATEGIES)
                & (plan["arch_b"] != "single-head")]
    if plan.empty:
        return pd.DataFrame(columns=PLAN_COLUMNS)
    keep = []
    for _, g in plan.groupby(GRID_GROUP, sort=False):
        grid = set(g.loc[g["strategy_b"].isin(GRID_STRATEGIES), "k"]) or set(g["k"])
        keep += list(g.index[g["k"].isin(grid)])
    out = plan.loc[sorted(keep)].copy()
    out["family"] = NONINF_FAMILY
    out["comparison_id"] = NONINF_FAMILY + out["comparison_id"].str.removeprefix("vs_baseline")
    return out.reset_index(drop=True)


def noninferiority_row(d, metric: str, margin: float, conf: float) -> dict:
    """One non-inferiority test as the fields of a stats row (beside compare.t_test_row's)."""
    lo_r, hi_r = difference_range(metric)
    d = np.asarray(d, float).copy()
    d[np.abs(d) < 1e-12] = 0.0
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    sd = (0.0 if np.ptp(d) == 0 else float(d.std(ddof=1))) if n > 1 else math.nan   # exact: no float residue
    se = sd / math.sqrt(n) if n > 1 else math.nan
    t, p = noninferiority_p(d, margin)
    notes = [f"one-sided: H0 mean difference <= -{margin:g} (the {points(margin)} margin); Holm p < alpha: "
             "non-inferior"]
    if n < 2:
        notes.append(f"{n} paired seed(s): not testable across seeds")
    elif sd == 0:
        notes.append("the same difference in every seed (zero variance): t undefined, p set to 1, no bound")
    lo = hi = math.nan
    if n >= MIN_SEEDS_INTERVAL and sd > 0:
        lo, hi = one_sided_lower(mean, se, n - 1, conf, lo_r), hi_r
    elif n < MIN_SEEDS_INTERVAL:
        notes.append(f"fewer than {MIN_SEEDS_INTERVAL} seeds: no bound and no effect size")
    return {"n": n, "n_seeds": n, "n_examples": math.nan, "difference": mean, "sd": sd, "ci_low": lo, "ci_high": hi,
            "effect_size": cohens_dz(d), "effect_size_name": "cohen_dz", "statistic": t,
            "df": n - 1 if n > 1 else math.nan, "p": p, "_se": se, "_df": n - 1, "_lo": lo_r, "_hi": hi_r,
            "note": "; ".join(notes)}


def noninferiority_tests(results: pd.DataFrame, metric: str | None = None, margin: float = DEFAULT_MARGIN,
                         conf: float = 0.95, plan: pd.DataFrame | None = None) -> pd.DataFrame:
    """One stats row per planned non-inferiority comparison (before Holm)."""
    from headsweep.trials.schema import STATS_COLUMNS

    from .compare import HIDDEN, _join, base_row

    metric = metric or sweep_metric(results)
    plan = noninferiority_plan(results) if plan is None else plan
    idx, rows = index(results, metric), []
    for p in plan.to_dict("records"):
        m = paired(idx, p["cond_a"], p["cond_b"])
        r = noninferiority_row(m["b"] - m["a"], metric, margin, conf)
        rows.append({**base_row(p, metric, "seeds", NONINF_TEST), "n_draws": m["n_draws"],
                     "mean_a": float(m["a"].mean()) if len(m["a"]) else math.nan,
                     "mean_b": float(m["b"].mean()) if len(m["b"]) else math.nan, **r,
                     "note": _join(p["note"], r["note"])})
    return pd.DataFrame(rows, columns=[c for c in STATS_COLUMNS if c not in ("p_adjusted", "family_size",
                                                                              "significant")] + HIDDEN)


# ---------------------------------------------------------------------------- the prunable fraction

def holm_reject(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's step-down at alpha, column by column: p [m, B] -> rejected [m, B] (NaN: left out of
    the family, never rejected). Rejected exactly where statsmodels' Holm-adjusted p < alpha (a
    test checks); vectorised because the bootstrap runs it for every resample."""
    p = np.asarray(p, float)
    if p.ndim == 1:
        return holm_reject(p[:, None], alpha)[:, 0]
    order = np.argsort(p, axis=0, kind="stable")          # NaN sorts last
    ps = np.take_along_axis(p, order, axis=0)
    m = np.sum(~np.isnan(p), axis=0)                        # [B]
    i = np.arange(p.shape[0])[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        thr = alpha / (m[None, :] - i)
    passed = np.logical_and.accumulate((ps < thr) & (i < m[None, :]), axis=0)
    out = np.zeros_like(passed)
    np.put_along_axis(out, order, passed, axis=0)
    return out


def _p_matrix(d: np.ndarray, margin: float) -> np.ndarray:
    """One-sided p of every row of d [C, B, n] (NaN = a seed the condition lacks) -> [C, B]."""
    n = np.sum(~np.isnan(d), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # a condition without any drawn seed: NaN
        mean = np.nanmean(d, axis=-1)
        sd = np.sqrt(np.nansum((d - mean[..., None]) ** 2, axis=-1) / (n - 1))
        t = (mean + margin) / (sd / np.sqrt(n))
        p = st.t.sf(t, n - 1)
        same = np.nanmax(d, axis=-1) == np.nanmin(d, axis=-1)   # zero variance, as noninferiority_p
    p = np.where(same, 1.0, p)
    return np.where(n < 2, np.nan, p)


def _prunable_k(rejected: dict, grid: list[int]) -> np.ndarray:
    """rejected: k -> bool [B]; the largest grid K up to which every K is rejected, per column."""
    ok = np.stack([rejected.get(k, np.zeros_like(next(iter(rejected.values())))) for k in grid])
    run = np.logical_and.accumulate(ok, axis=0).sum(axis=0)         # how many leading grid K pass
    return np.where(run > 0, np.asarray([0] + list(grid))[run], 0)


def prunable(results: pd.DataFrame, stats: pd.DataFrame, margin: float = DEFAULT_MARGIN, *, alpha: float = 0.05,
             conf: float = 0.95, n_boot: int = 2000, seed: int = 0, metric: str | None = None,
             by=("family", "test")) -> pd.DataFrame:
    """prunable.csv: per (model, strategy, criterion, per_layer, recovery) the prunable K (from the
    Holm-adjusted non-inferiority p of ``stats``) and its seed-bootstrap interval (module
    docstring). ``by`` must be the grouping ``compare`` used for Holm."""
    metric = metric or sweep_metric(results)
    plan = noninferiority_plan(results)
    if stats.empty or plan.empty:
        return pd.DataFrame(columns=PRUNABLE_COLUMNS)
    fam = stats[(stats["family"] == NONINF_FAMILY) & (stats["test"] == NONINF_TEST)].set_index("comparison_id")
    plan = plan[plan["comparison_id"].isin(fam.index)].reset_index(drop=True)
    plan["p_adjusted"] = fam.loc[plan["comparison_id"], "p_adjusted"].to_numpy(float)
    idx = index(results, metric)
    fam_keys = [c for c in by if c not in ("family", "test")]
    boot = _bootstrap(plan, idx, margin, alpha, n_boot, seed, fam_keys) if n_boot else {}
    rows = []
    q = ((1 - conf) / 2, 1 - (1 - conf) / 2)
    for key, g in plan.groupby(PRUNE_GROUP, sort=True):
        grid_rows = plan
        for col, v in zip(GRID_GROUP, key):
            grid_rows = grid_rows[grid_rows[col] == v]
        grid = sorted(set(grid_rows["k"]))
        ok = {int(k): bool(pa < alpha) for k, pa in zip(g["k"], g["p_adjusted"])}
        k = int(_prunable_k({kk: np.array([v]) for kk, v in ok.items()}, grid)[0])
        kf = dict(zip(grid_rows["k"].astype(int), grid_rows["k_fraction"].astype(float)))
        total = int(round(max(grid) / kf[max(grid)])) if kf.get(max(grid)) else math.nan
        seeds = {s for c in g["cond_a"] for s in idx.get(c, {})}
        lo_k = hi_k = math.nan
        b = boot.get(key)
        if b is not None:
            lo_k, hi_k = (float(x) for x in np.quantile(b, q, method="inverted_cdf"))
        first = kf.get(grid[0], math.nan)
        note = ("every grid K is non-inferior: at least the largest K the sweep measured" if k == max(grid) else
                f"not even the smallest K ({first:.0%} of the heads) was shown non-inferior" if k == 0 else
                f"the next grid K ({kf[grid[grid.index(k) + 1]]:.0%}) was not shown non-inferior")
        frac = (lambda x: x / total if total and not math.isnan(x) else math.nan)
        task, model, variant, per_layer, rec, strategy, method = key
        rows.append({"model": model, "strategy": strategy, "margin": margin, "prunable_k": k,
                     "prunable_k_fraction": frac(k), "ci_low": frac(lo_k), "ci_high": frac(hi_k),
                     "n_seeds": len(seeds), "task": task, "variant": variant, "importance_method": method,
                     "per_layer": bool(per_layer), "recovery_epochs": float(rec), "heads_total": total,
                     "grid_k": json.dumps([int(x) for x in grid]), "ci_low_k": lo_k, "ci_high_k": hi_k,
                     "n_boot": int(n_boot) if b is not None else 0,
                     "interval": (f"seed bootstrap, {conf:.0%} percentile over {n_boot} resamples: each resamples the "
                                  "model's seeds with replacement and recomputes every non-inferiority t-test of the "
                                  "family, its Holm adjustment and the prunable K" if b is not None else "none"),
                     "note": note})
    return pd.DataFrame(rows, columns=PRUNABLE_COLUMNS)


def _bootstrap(plan: pd.DataFrame, idx: dict, margin: float, alpha: float, n_boot: int, seed: int,
               fam_keys: list) -> dict:
    """PRUNE_GROUP key -> prunable K of each of n_boot seed resamples."""
    rng = np.random.default_rng(seed)
    p = np.full((len(plan), n_boot), np.nan)
    for _, g in plan.groupby(["task", "model"], sort=True):
        seeds = sorted({s for c in list(g["cond_a"]) + list(g["cond_b"]) for s in idx.get(c, {})})
        if len(seeds) < 2:
            continue
        d = np.full((len(g), len(seeds)), np.nan)                       # [comparisons, seeds]
        for i, (ca, cb) in enumerate(zip(g["cond_a"], g["cond_b"])):
            a, b = idx.get(ca, {}), idx.get(cb, {})
            for j, s in enumerate(seeds):
                if s in a and s in b:
                    d[i, j] = b[s][0] - a[s][0]
        draw = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))   # one resample of seeds per model
        p[g.index.to_numpy()] = _p_matrix(d[:, draw], margin)          # [comparisons, B]
    rejected = np.zeros_like(p, dtype=bool)
    groups = plan.groupby(fam_keys, sort=False).indices.values() if fam_keys else [np.arange(len(plan))]
    for rows in groups:
        rejected[rows] = holm_reject(p[rows], alpha)
    out = {}
    for key, g in plan.groupby(PRUNE_GROUP, sort=True):
        grid_rows = plan
        for col, v in zip(GRID_GROUP, key):
            grid_rows = grid_rows[grid_rows[col] == v]
        grid = sorted(set(int(k) for k in grid_rows["k"]))
        out[key] = _prunable_k({int(k): rejected[i] for i, k in zip(g.index, g["k"])}, grid)
    return out
