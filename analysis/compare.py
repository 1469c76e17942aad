"""Families of comparisons and their tests, Holm-corrected per (family, test).

Families (each one question a reader asks):
  curve              per model: do top-K heads hurt more than bottom-K / random-K over the whole K
                     range? (analysis/curves.py; the report's opening lines)
  vs_baseline        every pruned condition against the unpruned model
  noninferiority     top / bottom / random / iterative at every grid K: is the loss smaller than the
                     margin? (one-sided; analysis/equivalence.py, the prunable fraction)
  top_bottom_random  top vs bottom vs random (and iterative vs bottom) at equal K, pairwise
  multi_vs_single    the single-head strategy and the one-head architecture against the multi-head model
  layer_single_head  one layer at a time reduced to one head: the importance-ranked one, or the best one
                     found on the evaluation set (the oracle of Michel et al. section 3.3, Tables 2-3)
  methods            importance criteria: whose top-bottom gap is larger (analysis/curves.py)

Every comparison a -> b is tested
  across seeds  (level "seeds"):    paired t-test [PRIMARY] and exact sign-flip test
  per example   (level "examples"): paired t-test over examples, the example as the unit
                                    (analysis/examples.py; correctness-based metrics only)
The difference is always b - a (condition minus reference), signed, everywhere. Random-K draws
are averaged within each seed before any test. docs/analysis.md says what each test assumes.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from headsweep.trials.schema import CONDITION, CORRECTNESS_METRICS, STATS_COLUMNS

from .conditions import (as_dict, collapse_draws, conditions, index, key_of, label, paired, reference,
                         several_methods, several_tasks, sweep_metric)
from .equivalence import DEFAULT_MARGIN, points
from .stats import (MIN_SEEDS_INTERVAL, cohens_dz, difference_range, holm_adjust, min_sign_flip_p, paired_t,
                    sign_flip_p, t_bounds)

FAMILIES = ("curve", "vs_baseline", "noninferiority", "top_bottom_random", "multi_vs_single", "layer_single_head",
            "methods")
PRIMARY_TEST = "paired_t"
PRIMARY_TESTS = ("paired_t", "curve_t", "noninferiority_t")      # the p-value that counts, per family
TESTS = ("curve_t", "paired_t", "noninferiority_t", "sign_flip", "example_t")
# Removed alone, one head at a time: per_head.csv (analysis/per_head.py, BH-FDR over a model's heads),
# not a family here (it would swamp vs_baseline's Holm correction with every head of every model).
NOT_PLANNED = ("each-head",)
# (a, b) pairs at equal K; difference = b - a.
TRIO_PAIRS = (("bottom", "top"), ("random", "top"), ("random", "bottom"), ("bottom", "iterative"))
REMOVAL = ("top", "bottom", "random", "iterative")
PLAN_COLUMNS = ["comparison_id", "family", "task", "model", "group_a", "group_b", "variant_a", "strategy_a",
                "variant_b", "strategy_b", "arch_b", "arch_init_b", "importance_method", "k", "k_fraction",
                "per_layer", "layer", "recovery_epochs", "note", "cond_a", "cond_b"]
# What the simultaneous intervals are computed from (the standard error, its degrees of freedom and
# the range of the quantity), dropped from stats.csv.
HIDDEN = ["_se", "_df", "_lo", "_hi"]

__all__ = ["FAMILIES", "PRIMARY_TEST", "collapse_draws", "compare", "plan_comparisons", "power_warnings",
           "primary", "seed_tests", "sweep_metric"]


def plan_comparisons(results: pd.DataFrame) -> pd.DataFrame:
    """One row per comparison (family, condition a, condition b); no tests yet."""
    conds = conditions(results)
    methods, tasks = several_methods(results), several_tasks(results)
    rows = []

    def add(family, a, b, note=""):
        la, lb = label(a, methods), label(b, methods)
        model = f"{b['task']}:{b['model']}" if tasks else b["model"]
        rows.append({"comparison_id": f"{family}|{model}|{lb}|vs|{la}", "family": family, "task": b["task"],
                     "model": b["model"], "group_a": la, "group_b": lb, "variant_a": a["variant"],
                     "strategy_a": a["strategy"], "variant_b": b["variant"], "strategy_b": b["strategy"],
                     "arch_b": b["arch"], "arch_init_b": b["arch_init"], "importance_method": b["importance_method"],
                     "k": b["k"], "k_fraction": b["k_fraction"], "per_layer": b["per_layer"], "layer": b["layer"],
                     "recovery_epochs": b["recovery_epochs"], "note": note, "cond_a": key_of(a), "cond_b": key_of(b)})

    family_of = {"single-head": "multi_vs_single", "layer-single-head": "layer_single_head"}
    for c in conds:
        if (c["strategy"] == "none" and c["arch"] != "single-head") or c["strategy"] in NOT_PLANNED:
            continue
        ref, note = reference(c, conds)
        if ref is None:
            continue
        fam = "multi_vs_single" if c["arch"] == "single-head" else family_of.get(c["strategy"], "vs_baseline")
        add(fam, ref, c, note)
    trio: dict = {}
    for c in conds:
        if c["arch"] != "single-head" and c["strategy"] in REMOVAL:
            g = (c["task"], c["model"], c["variant"], c["per_layer"], c["k"], c["recovery_epochs"])
            trio.setdefault(g, {})[(c["strategy"], c["importance_method"])] = c
    first = first_steps(results)
    for _, by in trio.items():
        ms = sorted({m for (_, m) in by if m}) or [""]
        for m in ms:
            for a, b in TRIO_PAIRS:
                ca, cb = by.get((a, "" if a == "random" else m)), by.get((b, "" if b == "random" else m))
                if ca is None or cb is None or (a == "random" and b == "random"):
                    continue
                if b == "iterative" and key_of(cb) in first:   # the same heads as bottom-K: identical
                    continue
                add("top_bottom_random", ca, cb)
    plan = pd.DataFrame(rows, columns=PLAN_COLUMNS).drop_duplicates("comparison_id")
    order = {f: i for i, f in enumerate(FAMILIES)}
    return plan.sort_values("family", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def first_steps(results: pd.DataFrame) -> set:
    """Condition keys of iterative's first step: it removes exactly bottom-K's heads (the same
    ranking, nothing re-scored yet), so bottom vs iterative there is identical by construction and
    not a comparison. From the ``step`` column (step 1); without it, iterative's smallest K."""
    it = results[results["strategy"] == "iterative"]
    if it.empty:
        return set()
    if "step" in it.columns and pd.to_numeric(it["step"], errors="coerce").notna().any():
        it = it[pd.to_numeric(it["step"], errors="coerce") == 1]
    else:
        group = [c for c in CONDITION if c not in ("k", "layer", "head")]
        it = it[it["k"] == it.groupby(group)["k"].transform("min")]
    return {key_of(as_dict(r)) for r in it.drop_duplicates(CONDITION).to_dict("records")}


def base_row(p: dict, metric: str, level: str, test: str) -> dict:
    keep = [c for c in PLAN_COLUMNS if c not in ("note", "cond_a", "cond_b")]
    return {**{c: p[c] for c in keep}, "metric": metric, "level": level, "test": test,
            "primary": test in PRIMARY_TESTS, "note": p.get("note", "")}


def _join(*parts) -> str:
    return "; ".join(x for x in parts if x)


ZERO_VARIANCE = "the same difference in every seed (zero variance): t undefined, p set to 1, no interval"


def t_test_row(d: np.ndarray, metric: str, conf: float, rng: tuple[float, float] | None = None) -> dict:
    """Paired t over seeds of the differences d, with the bounded interval (n >= 3) and dz (n >= 3).

    ``rng``: the range the quantity can take (default: a difference of the metric; the methods
    family passes the range of a difference of two curve areas, twice as wide)."""
    rng = difference_range(metric) if rng is None else rng
    d = np.asarray(d, float).copy()
    d[np.abs(d) < 1e-12] = 0.0  # float noise (0.85 - 0.85) must not read as a tiny drop
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    sd = (0.0 if np.ptp(d) == 0 else float(d.std(ddof=1))) if n > 1 else math.nan   # exact: no float residue
    se = sd / math.sqrt(n) if n > 1 else math.nan
    t, p = paired_t(d)
    lo = hi = math.nan
    notes = []
    if n < 2:
        notes.append(f"{n} paired seed(s): not testable across seeds")
    elif sd == 0:
        notes.append(ZERO_VARIANCE)
    if n < MIN_SEEDS_INTERVAL:
        notes.append(f"fewer than {MIN_SEEDS_INTERVAL} seeds: no interval and no effect size")
    elif sd > 0:
        lo, hi = (float(x) for x in t_bounds(mean, se, n - 1, conf, rng))
    return {"n": n, "n_seeds": n, "n_examples": math.nan, "difference": mean, "sd": sd, "ci_low": lo, "ci_high": hi,
            "effect_size": cohens_dz(d), "effect_size_name": "cohen_dz", "statistic": t, "df": n - 1 if n > 1 else
            math.nan, "p": p, "_se": se, "_df": n - 1, "_lo": rng[0], "_hi": rng[1], "note": "; ".join(notes)}


def seed_tests(results: pd.DataFrame, plan: pd.DataFrame | None = None, metric: str | None = None,
               conf: float = 0.95) -> pd.DataFrame:
    """Paired-by-seed tests (paired t, exact sign-flip) for every planned comparison."""
    metric = metric or sweep_metric(results)
    plan = plan_comparisons(results) if plan is None else plan
    idx, rows = index(results, metric), []
    for p in plan.to_dict("records"):
        m = paired(idx, p["cond_a"], p["cond_b"])
        t = t_test_row(m["b"] - m["a"], metric, conf)
        common = {"n_draws": m["n_draws"], "mean_a": float(m["a"].mean()) if len(m["a"]) else math.nan,
                  "mean_b": float(m["b"].mean()) if len(m["b"]) else math.nan}
        rows.append({**base_row(p, metric, "seeds", "paired_t"), **common, **t, "note": _join(p["note"], t["note"])})
        n = t["n"]
        d = m["b"] - m["a"]
        rows.append({**base_row(p, metric, "seeds", "sign_flip"), **common, **t, "ci_low": math.nan,
                     "ci_high": math.nan, "effect_size": math.nan, "effect_size_name": "", "_se": math.nan,
                     "statistic": t["difference"], "df": math.nan, "p": sign_flip_p(d) if n >= 2 else math.nan,
                     "note": _join(p["note"], "" if n >= 2 else t["note"])})
    return pd.DataFrame(rows, columns=[c for c in STATS_COLUMNS if c not in ("p_adjusted", "family_size",
                                                                              "significant")] + HIDDEN)


def compare(results: pd.DataFrame, predictions=None, *, metric: str | None = None, alpha: float = 0.05,
            conf: float = 0.95, n_boot: int = 2000, seed: int = 0, by=("family", "test"),
            margin: float | None = DEFAULT_MARGIN) -> pd.DataFrame:
    """All families, all tests, Holm-adjusted within each `by` group (default: family x test).
    ``margin``: the non-inferiority margin in metric units (None: no noninferiority family).

    Returns one row per (comparison, test); rows with primary == True carry THE p-value of a
    comparison. ci_low/ci_high are unadjusted (ci_kind says so); sim_ci_low/sim_ci_high are
    simultaneous over the comparison's Holm family (Bonferroni), so one that excludes 0 always
    goes with a Holm-significant p. (n_boot and seed are accepted for compatibility; no test
    resamples any more.)"""
    from .curves import curve_tests, method_tests
    from .equivalence import noninferiority_tests
    from .examples import example_tests

    metric = metric or sweep_metric(results)
    if results.empty:
        return pd.DataFrame(columns=STATS_COLUMNS)
    plan = plan_comparisons(results)
    parts = [curve_tests(results, metric, conf), seed_tests(results, plan, metric, conf)]
    if margin:
        parts.append(noninferiority_tests(results, metric, margin, conf))
    if predictions is not None and metric in CORRECTNESS_METRICS and results["trial_key"].notna().any():
        parts.append(example_tests(results, predictions, plan, conf=conf))
    parts.append(method_tests(results, metric, conf))
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=STATS_COLUMNS)
    df = pd.concat(parts, ignore_index=True)
    df = holm_adjust(df, by=by)
    df["significant"] = df["p_adjusted"] < alpha
    df = simultaneous(df, metric, conf)
    fam = {f: i for i, f in enumerate(FAMILIES)}
    test = {t: i for i, t in enumerate(TESTS)}
    first = {cid: i for i, cid in enumerate(dict.fromkeys(df["comparison_id"]))}
    df = df.assign(_f=df["family"].map(fam), _c=df["comparison_id"].map(first), _t=df["test"].map(test))
    df = df.sort_values(["_f", "_c", "_t"], kind="stable")
    return df[STATS_COLUMNS].reset_index(drop=True)


def simultaneous(df: pd.DataFrame, metric: str, conf: float) -> pd.DataFrame:
    """ci_kind labels, and Bonferroni-simultaneous intervals per Holm family: level
    1 - (1 - conf) / m. A t-interval at level 1 - g excludes 0 exactly when p < g, and
    p < alpha / m implies Holm p_adjusted <= m p < alpha. Each row's interval lies in the range
    of its own quantity (``_lo``, ``_hi``). Non-inferiority rows (one-sided) get a one-sided lower
    bound: above -margin exactly when their one-sided p < (1 - conf) / m (analysis/equivalence.py)."""
    from .equivalence import NONINF_TEST, one_sided_lower

    df = df.copy()
    default = difference_range(metric)
    for col, v in (("_lo", default[0]), ("_hi", default[1])):
        df[col] = df[col].fillna(v) if col in df.columns else v
    has = df["ci_low"].notna()
    one = df["test"] == NONINF_TEST
    rng_txt = [f"within [{lo:g}, {hi:g}]" for lo, hi in zip(df["_lo"], df["_hi"])]
    df["ci_kind"] = np.where(~has, "", np.where(one, [f"unadjusted one-sided {conf:.0%} t lower bound (the upper end "
                                                      f"is the range's), {r}" for r in rng_txt],
                                                [f"unadjusted {conf:.0%} t-interval, {r}" for r in rng_txt]))
    m = df["family_size"].clip(lower=1).astype(float)
    ok = has & df["_se"].notna() & (df["_se"] > 0) & df["p"].notna()
    level = 1 - (1 - conf) / m
    df["sim_ci_low"], df["sim_ci_high"], df["sim_ci_kind"] = math.nan, math.nan, ""
    if ok.any():
        lo, hi = [], []
        sub = df[ok]
        for test, mean, se, dof, rlo, rhi, lev in zip(sub["test"], sub["difference"], sub["_se"], sub["_df"],
                                                      sub["_lo"], sub["_hi"], level[ok]):
            if test == NONINF_TEST:
                a, b = one_sided_lower(mean, se, dof, lev, rlo), rhi
            else:
                a, b = t_bounds(mean, se, dof, lev, (rlo, rhi))
            lo.append(float(a))
            hi.append(float(b))
        df.loc[ok, "sim_ci_low"], df.loc[ok, "sim_ci_high"] = lo, hi
        df.loc[ok, "sim_ci_kind"] = [f"simultaneous {conf:.0%} {'one-sided lower bound ' if t == NONINF_TEST else ''}"
                                     f"over the {int(k)} comparison(s) of its Holm family (Bonferroni)"
                                     for k, t in zip(df.loc[ok, "family_size"], df.loc[ok, "test"])]
    return df


def primary(stats: pd.DataFrame) -> pd.DataFrame:
    """The rows that carry each comparison's primary p-value."""
    if stats.empty:
        return stats
    return stats[stats["primary"].astype(bool)].reset_index(drop=True)


def exact_seed_floor(m: int, alpha: float = 0.05) -> int:
    """The fewest seeds with which the exact two-sided sign-flip test can reach Holm significance in a
    family of m: its smallest p is 2 / 2**n, and the first Holm step needs p < alpha / m."""
    return math.ceil(math.log2(2 * max(1, m) / alpha))


def _solve(**kw) -> float:
    """statsmodels' t-test power solver; NaN where it does not converge (tiny n, tiny alpha)."""
    from statsmodels.stats.power import TTestPower

    try:
        with np.errstate(all="ignore"):
            v = TTestPower().solve_power(**kw)
        return float(np.squeeze(v))
    except (ValueError, RuntimeError, ArithmeticError):
        return math.nan


def power_warnings(stats: pd.DataFrame, alpha: float = 0.05, margin: float = DEFAULT_MARGIN) -> list[str]:
    """Plain-language warnings when the design cannot reach significance, and per family the
    minimum detectable effect: the true difference the primary paired t-test finds with 80% power
    at Holm's first step (alpha / m), from the observed seed SD of the differences (the median over
    the family) and its number of seeds (statsmodels' TTestPower)."""
    msgs = []
    if stats.empty:
        return msgs
    seeds = stats[stats["level"] == "seeds"]
    m_max = int(seeds["family_size"].max()) if len(seeds) else 1
    if len(seeds) and seeds["p"].isna().all():
        msgs.append("Fewer than 2 paired seeds in every comparison: tests across seeds were skipped. "
                    "Only per-example tests remain, and they speak about these particular fine-tuned "
                    "models, not about the training procedure. Run 3 or more seeds for intervals; the exact "
                    f"sign-flip test needs ceil(log2(2m/alpha)) seeds to be able to reach significance in a Holm "
                    f"family of m comparisons ({exact_seed_floor(max(1, m_max), alpha)} for m = {max(1, m_max)}).")
    for fam, g in seeds[seeds["test"] == "sign_flip"].groupby("family", sort=False):
        ok = g[g["p"].notna()]
        if ok.empty:
            continue
        m = int(ok["family_size"].max())
        n = int(ok["n"].max())
        floor = min(1.0, m * min_sign_flip_p(n))
        if floor > alpha:
            msgs.append(f"{fam}: with {n} seeds the exact sign-flip test cannot give p below "
                        f"{min_sign_flip_p(n):.4g}; with {m} comparison(s) in the Holm family the smallest "
                        f"possible adjusted p is {floor:.3g} > {alpha}, so it cannot reach significance "
                        f"whatever the data (ceil(log2(2m/alpha)) = {exact_seed_floor(m, alpha)} seeds would be "
                        "needed).")
    prim = seeds[seeds["primary"].astype(bool)]
    for fam, g in prim.groupby("family", sort=False):
        ok = g[g["p"].notna()]
        if len(ok) and int(ok["n"].max()) < MIN_SEEDS_INTERVAL:
            n = int(ok["n"].max())
            msgs.append(f"{fam}: only {n} seeds per comparison: the paired t-test has {n - 1} degree(s) of "
                        "freedom, no interval or effect size can be given, and normality cannot be checked; "
                        "treat its p-values as rough.")
            continue
        sd = ok["sd"][(ok["sd"] > 0) & np.isfinite(ok["sd"])] if "sd" in ok.columns else pd.Series(dtype=float)
        if ok.empty or sd.empty:
            continue
        n, m, s = int(ok["n"].median()), int(ok["family_size"].max()), float(sd.median())
        if fam == "noninferiority":
            dz = _solve(effect_size=None, nobs=n, alpha=alpha / m, power=0.8, alternative="larger")
            reach = margin - dz * s   # a true difference above -reach is shown non-inferior with 80% power
            need = _solve(effect_size=margin / s, nobs=None, alpha=alpha / m, power=0.8, alternative="larger")
            if math.isnan(dz):
                continue
            if reach <= 0:
                msgs.append(f"noninferiority: with {n} seeds (median seed SD of the differences {100 * s:.2f} points) "
                            f"and {m} comparisons in the family, even a condition exactly as good as the unpruned "
                            f"model is shown within the {points(margin)} margin with less than 80% probability"
                            + (f"; about {math.ceil(need)} seeds would give 80%" if math.isfinite(need) else "")
                            + ". A K that is not shown non-inferior is not shown to lose more than the margin "
                            "either.")
            else:
                msgs.append(f"noninferiority: with {n} seeds and {m} comparisons, a condition is shown within the "
                            f"{points(margin)} margin with 80% probability only if its true difference to the "
                            f"unpruned model is above {-100 * reach:+.2f} points (median seed SD of the differences "
                            f"{100 * s:.2f} points).")
            continue
        dz = _solve(effect_size=None, nobs=n, alpha=alpha / m, power=0.8, alternative="two-sided")
        if math.isfinite(dz):
            msgs.append(f"{fam}: minimum detectable effect about {100 * dz * s:.2f} points (80% power for the paired "
                        f"t-test over {n} seeds at Holm's first step, alpha/m = {alpha / m:.2g} with m = {m}, from the "
                        f"median seed SD of the differences, {100 * s:.2f} points). Smaller true differences will "
                        "mostly come out not significant, which is not evidence that there is none.")
    return msgs
