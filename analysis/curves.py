"""Whole-curve questions: the curve-level test, the importance criteria, the sanity check.

Curve-level test (family ``curve``). For one model (variant, per_layer, recovery, criterion) and
a pair of strategies (a, b), each seed gives two curves metric(K). Their difference
d(K) = b(K) - a(K) is 0 at K = 0 (both are the unpruned model) and is measured at every K both
strategies share; the seed's summary is the mean of d over K in [0, K_max], by the trapezoid
rule over K = 0 and the measured K values (area between the curves / K_max, in metric units).
Those per-seed numbers are paired t-tested over seeds, like every primary test: it generalises
over training runs and asks "does b sit below a over the K range, on average over K". One
p-value per (model, pair), Holm over the family.

Importance criteria (family ``methods``). With several importance methods on the same
fine-tunes, each gives a per-seed top - bottom curve difference (the area above); the more
negative, the better the criterion separates the heads whose removal hurts from those whose
removal does not. Two criteria are compared by the paired (per seed) difference of their areas.

Sanity check. Over the K range that top and bottom share, removing the most important heads must
hurt more than removing the least important: the curve-level top - bottom area < 0 (its test,
not the single largest K, decides). Where it is not, the ranking is inverted or uninformative,
and the report says so first.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from headsweep.trials.schema import CONDITION, STATS_COLUMNS

from .compare import HIDDEN, REMOVAL, t_test_row
from .conditions import collapse_draws, several_methods, several_tasks
from .stats import difference_range

CURVE_PAIRS = (("bottom", "top"), ("random", "top"), ("bottom", "iterative"))
GROUP = ["task", "model", "variant", "per_layer", "recovery_epochs"]


def _per_seed(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    ps = collapse_draws(results, metric)
    return ps[(ps["arch"] != "single-head") & ps["strategy"].isin(REMOVAL)]


def _curve(g: pd.DataFrame, strategy: str, method: str) -> pd.DataFrame:
    """[seed, K fraction] values of one strategy (random ignores the criterion)."""
    sub = g[(g["strategy"] == strategy) & (g["importance_method"] == ("" if strategy == "random" else method))]
    return sub.pivot_table(index="seed", columns="k_fraction", values="value", aggfunc="mean")


def curve_areas(A: pd.DataFrame, B: pd.DataFrame, ks=None):
    """Per-seed mean over K in [0, K_max] of B - A, with d(0) = 0. Returns (seeds, areas, ks)."""
    ks = sorted((set(A.columns) & set(B.columns)) - {0.0}) if ks is None else list(ks)
    if not ks:
        return [], np.zeros(0), []
    a, b = A.reindex(columns=ks), B.reindex(columns=ks)
    seeds = sorted(set(a.dropna().index) & set(b.dropna().index))
    if not seeds:
        return [], np.zeros(0), ks
    d = b.loc[seeds].to_numpy(float) - a.loc[seeds].to_numpy(float)          # [seeds, K]
    x = np.concatenate([[0.0], ks])
    d = np.concatenate([np.zeros((len(seeds), 1)), d], axis=1)
    areas = np.trapezoid(d, x=x, axis=1) / x[-1]
    return seeds, areas, ks


def _row(fam, model_id, task, model, variant, per_layer, rec, method, ga, gb, sa, sb, k, kf, metric, t, note, n_draws):
    cid = f"{fam}|{model_id}|{gb}|vs|{ga}"
    return {"comparison_id": cid, "family": fam, "task": task, "model": model, "group_a": ga, "group_b": gb,
            "variant_a": variant, "strategy_a": sa, "variant_b": variant, "strategy_b": sb, "arch_b": "multi-head",
            "arch_init_b": "", "importance_method": method, "k": k, "k_fraction": kf, "per_layer": per_layer,
            "layer": -1, "recovery_epochs": rec, "metric": metric, "level": "seeds",
            "test": "curve_t" if fam == "curve" else "paired_t", "primary": True, "n_draws": n_draws,
            "mean_a": math.nan, "mean_b": math.nan, **t, "note": "; ".join(x for x in (note, t["note"]) if x)}


def _suffix(method: str, methods: bool, per_layer: bool, rec: float) -> str:
    return (" (per layer)" if per_layer else "") + (f" [{method}]" if methods and method else "") + \
        (f" +{rec:g}ep" if rec else "")


def curve_tests(results: pd.DataFrame, metric: str, conf: float = 0.95) -> pd.DataFrame:
    """One curve-level row per (model, variant, per_layer, recovery, criterion, pair of strategies)."""
    ps, rows = _per_seed(results, metric), []
    methods, tasks = several_methods(results), several_tasks(results)
    for (task, model, variant, per_layer, rec), g in ps.groupby(GROUP, sort=True):
        model_id = f"{task}:{model}" if tasks else model
        present = set(g["strategy"])
        for m in sorted({x for x in g["importance_method"] if x}) or [""]:
            for a, b in CURVE_PAIRS:
                if a not in present or b not in present:   # nothing to pair (and no pivot to build)
                    continue
                A, B = _curve(g, a, m), _curve(g, b, m)
                seeds, areas, ks = curve_areas(A, B)
                if not seeds:
                    continue
                kmax = ks[-1]
                k = int(g.loc[(g["strategy"] == b) & (g["k_fraction"] == kmax), "k"].max())
                sfx = _suffix(m, methods, per_layer, rec)
                note = (f"mean of ({b} - {a}) over K from 0 to {kmax:.0%} of the heads (trapezoid over K = 0 and "
                        f"{len(ks)} measured K)")
                n_draws = int(g.loc[g["strategy"].isin([a, b]), "n_draws"].max())
                rows.append(_row("curve", model_id, task, model, variant, per_layer, rec, m, f"{a} curve{sfx}",
                                 f"{b} curve{sfx}", a, b, k, kmax, metric, t_test_row(areas, metric, conf), note,
                                 n_draws))
    return pd.DataFrame(rows, columns=[c for c in STATS_COLUMNS if c not in ("p_adjusted", "family_size",
                                                                              "significant")] + HIDDEN)


def method_tests(results: pd.DataFrame, metric: str, conf: float = 0.95) -> pd.DataFrame:
    """Pairs of importance criteria: paired (per seed) difference of their top - bottom areas."""
    ps, rows = _per_seed(results, metric), []
    tasks = several_tasks(results)
    for (task, model, variant, per_layer, rec), g in ps.groupby(GROUP, sort=True):
        ms = sorted({x for x in g["importance_method"] if x})
        if len(ms) < 2:
            continue
        curves = {m: (_curve(g, "bottom", m), _curve(g, "top", m)) for m in ms}
        for m1, m2 in itertools.combinations(ms, 2):
            ks = sorted(set.intersection(*[set(c.columns) for c in curves[m1] + curves[m2]]) - {0.0})
            s1, a1, _ = curve_areas(*curves[m1], ks)
            s2, a2, _ = curve_areas(*curves[m2], ks)
            seeds = sorted(set(s1) & set(s2))
            if not seeds:
                continue
            d = np.array([a2[s2.index(s)] - a1[s1.index(s)] for s in seeds])
            sfx = _suffix("", False, per_layer, rec)
            note = (f"difference of the top - bottom gap (mean over K up to {ks[-1]:.0%}) between criteria; negative: "
                    f"{m2} separates harmful from harmless heads more than {m1}")
            lo, hi = difference_range(metric)   # each area lies in it; a difference of two areas in twice it
            rows.append(_row("methods", f"{task}:{model}" if tasks else model, task, model, variant, per_layer, rec,
                             m2, f"top-bottom gap [{m1}]{sfx}", f"top-bottom gap [{m2}]{sfx}", "top", "top", -1, ks[-1],
                             metric, t_test_row(d, metric, conf, (2 * lo, 2 * hi)), note, 1))
    return pd.DataFrame(rows, columns=[c for c in STATS_COLUMNS if c not in ("p_adjusted", "family_size",
                                                                              "significant")] + HIDDEN)


SANITY_COLUMNS = ["task", "model", "variant", "importance_method", "per_layer", "recovery_epochs", "k", "k_fraction",
                  "difference", "ci_low", "ci_high", "p_adjusted", "n_seeds", "verdict", "comparison_id"]


def sanity_check(stats: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Does removing the top-ranked heads hurt more than removing the bottom-ranked ones? Decided
    by the curve-level test (family curve, top curve minus bottom curve averaged over K from 0 to
    the largest shared K, ``k``), per (model, variant, criterion, per_layer, recovery), not at
    the single largest K, where both sit near chance and noise at the floor would decide.
    verdict: 'ok' (area < 0, Holm-significant), 'weak' (< 0, not significant), 'uninformative'
    (>= 0, not significant, or untestable), 'inverted' (> 0, Holm-significant)."""
    if stats.empty:
        return pd.DataFrame(columns=SANITY_COLUMNS)
    cv = stats[(stats["family"] == "curve") & stats["primary"].astype(bool) & (stats["strategy_a"] == "bottom")
               & (stats["strategy_b"] == "top")]
    rows = []
    for r in cv.to_dict("records"):
        d, p = r["difference"], r["p_adjusted"]
        sig = bool(p < alpha)   # NaN: not significant
        verdict = ("ok" if d < 0 and sig else "weak" if d < 0 else "inverted" if d > 0 and sig else "uninformative")
        rows.append({"task": r["task"], "model": r["model"], "variant": r["variant_b"],
                     "importance_method": r["importance_method"], "per_layer": r["per_layer"],
                     "recovery_epochs": r["recovery_epochs"], "k": r["k"], "k_fraction": r["k_fraction"],
                     "difference": d, "ci_low": r["ci_low"], "ci_high": r["ci_high"], "p_adjusted": p,
                     "n_seeds": r["n_seeds"], "verdict": verdict, "comparison_id": r["comparison_id"]})
    out = pd.DataFrame(rows, columns=SANITY_COLUMNS)
    return out.sort_values(["task", "model", "variant", "importance_method", "per_layer", "recovery_epochs"],
                           kind="stable").reset_index(drop=True)


HEADLINE_STRATEGIES = ("top", "bottom", "random")
HEADLINE_COLUMNS = (["task", "model", "variant", "importance_method", "per_layer", "recovery_epochs", "metric", "k",
                     "k_fraction", "baseline_mean", "baseline_n"]
                    + [f"{s}_{x}" for s in HEADLINE_STRATEGIES for x in ("mean", "difference", "p_adjusted")])


def headline(stats: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The answer in one row per model (and criterion, per_layer, recovery setting): the unpruned
    baseline's mean, and for top / bottom / random at the largest K they share (the largest K any
    of them has where they share none) the mean over seeds, the difference to the baseline and the
    Holm-adjusted p of the primary test against it (family vs_baseline).

    Read from summary.csv and stats.csv only (one source of numbers): means from summary, the
    difference and p from the vs_baseline row, whose baseline is conditions.reference (the `none`
    fine-tuned for as long). NaN where a strategy was not run at that K or its test was not possible."""
    from .conditions import as_dict, reference

    if summary.empty:
        return pd.DataFrame(columns=HEADLINE_COLUMNS)
    s = summary[~summary["extra_eval"].astype(bool)] if "extra_eval" in summary.columns else summary
    conds = [as_dict(r) for r in s.to_dict("records")]
    mean_of = {tuple(as_dict(r)[c] for c in CONDITION): r for r in s.to_dict("records")}
    prim = stats[(stats["family"] == "vs_baseline") & stats["primary"].astype(bool)] if len(stats) else stats
    multi = s[(s["arch"] != "single-head") & s["strategy"].isin(HEADLINE_STRATEGIES)]
    rows = []
    groups = multi[multi["strategy"] != "random"][["task", "model", "variant", "importance_method", "per_layer",
                                                   "recovery_epochs"]].drop_duplicates()
    if groups.empty:   # random only: one group per model without a criterion
        groups = multi[["task", "model", "variant", "importance_method", "per_layer",
                        "recovery_epochs"]].drop_duplicates()
    for g in groups.to_dict("records"):
        sel = multi[(multi["task"] == g["task"]) & (multi["model"] == g["model"]) & (multi["variant"] == g["variant"])
                    & (multi["per_layer"] == g["per_layer"]) & (multi["recovery_epochs"] == g["recovery_epochs"])
                    & multi["importance_method"].isin([g["importance_method"], ""])]
        ks = [set(sel.loc[sel["strategy"] == st_, "k"]) for st_ in HEADLINE_STRATEGIES
              if (sel["strategy"] == st_).any()]
        shared = set.intersection(*ks) if ks else set()
        k = max(shared) if shared else int(sel["k"].max())
        at = sel[sel["k"] == k]
        row = {**g, "metric": s["metric"].iloc[0], "k": int(k), "k_fraction": float(at["k_fraction"].iloc[0]),
               "baseline_mean": math.nan, "baseline_n": 0}
        ref, _ = reference(as_dict(at.iloc[0]), conds)
        if ref is not None:
            b = mean_of.get(tuple(ref[c] for c in CONDITION))
            row.update(baseline_mean=float(b["mean"]), baseline_n=int(b["n"]))
        for st_ in HEADLINE_STRATEGIES:
            r = at[at["strategy"] == st_]
            t = prim[(prim["task"] == g["task"]) & (prim["model"] == g["model"]) & (prim["variant_b"] == g["variant"])
                     & (prim["strategy_b"] == st_) & (prim["k"] == k) & (prim["per_layer"] == g["per_layer"])
                     & (prim["recovery_epochs"] == g["recovery_epochs"])
                     & (prim["importance_method"] == ("" if st_ == "random" else g["importance_method"]))] \
                if len(prim) else prim
            row[f"{st_}_mean"] = float(r["mean"].iloc[0]) if len(r) else math.nan
            row[f"{st_}_difference"] = float(t["difference"].iloc[0]) if len(t) else math.nan
            row[f"{st_}_p_adjusted"] = float(t["p_adjusted"].iloc[0]) if len(t) else math.nan
        rows.append(row)
    out = pd.DataFrame(rows, columns=HEADLINE_COLUMNS)
    return out.sort_values(["task", "model", "variant", "importance_method", "per_layer", "recovery_epochs"],
                           kind="stable").reset_index(drop=True)
