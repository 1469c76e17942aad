"""Families of comparisons and their tests, Holm-corrected per family.

Three families (each one question a reader asks):
  vs_baseline        every (strategy, K) against the unpruned model (strategy none)
  top_bottom_random  top vs bottom vs random at equal K, pairwise
  multi_vs_single    the multi-head baseline against the single-head strategy and
                     against the one-head architecture (arch == "single-head")

Every comparison a -> b is tested twice over:
  across seeds  (level "seeds"):    paired t-test [PRIMARY] and exact sign-flip test
  per example   (level "examples"): McNemar pooled over seeds, paired bootstrap CI
The difference is always b - a, so a negative number means b is worse.
Holm runs within each (family, test); docs/analysis.md says why.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from trials.schema import CONDITION, STATS_COLUMNS, strategy_rank

from .stats import (cohens_dz, holm_adjust, matched_odds_ratio, mcnemar_test, min_sign_flip_p,
                    paired_bootstrap, paired_t, sign_flip_p, t_interval)

FAMILIES = ("vs_baseline", "top_bottom_random", "multi_vs_single")
PRIMARY_TEST = "paired_t"
TESTS = ("paired_t", "sign_flip", "mcnemar", "bootstrap")
# (a, b) pairs of the top/bottom/random family; difference = b - a.
TRIO_PAIRS = (("bottom", "top"), ("random", "top"), ("random", "bottom"))
SIDE = ["variant", "strategy", "k", "per_layer", "recovery_epochs"]  # identifies a group within a model
def group_label(c) -> str:
    """Human-readable name of a condition (a mapping with CONDITION keys)."""
    if c["arch"] == "single-head":
        s = f"{c['variant']} (one-head arch)"
    elif c["strategy"] == "none":
        s = "none"
    else:
        s = f"{c['strategy']} k={int(c['k'])}" + ("/layer" if c["per_layer"] and c["strategy"] != "single-head" else "")
    if c["recovery_epochs"]:
        s += f" +{c['recovery_epochs']:g}ep"
    return s


def _conditions(results: pd.DataFrame) -> list[dict]:
    """Distinct conditions as plain dicts with Python scalars, in reading order."""
    conds = results.drop_duplicates(CONDITION)[CONDITION + ["k_fraction"]].to_dict("records")
    for c in conds:
        c.update(k=int(c["k"]), per_layer=bool(c["per_layer"]), recovery_epochs=float(c["recovery_epochs"]),
                 k_fraction=float(c["k_fraction"]))
    return sorted(conds, key=lambda c: (c["model"], strategy_rank(c["strategy"]), c["per_layer"], c["k"],
                                        c["recovery_epochs"], c["variant"]))


def plan_comparisons(results: pd.DataFrame) -> pd.DataFrame:
    """One row per comparison (family, group a, group b); no tests yet."""
    rows = []

    def add(family, a, b):
        la, lb = group_label(a), group_label(b)
        row = {"comparison_id": f"{family}|{b['model']}|{lb}|vs|{la}", "family": family, "model": b["model"],
               "group_a": la, "group_b": lb, "arch_b": b["arch"], "k": b["k"], "k_fraction": b["k_fraction"],
               "per_layer": b["per_layer"], "recovery_epochs": b["recovery_epochs"]}
        for side, c in (("a", a), ("b", b)):
            row.update({f"{col}_{side}": c[col] for col in SIDE})
        rows.append(row)

    by_model: dict = {}
    for c in _conditions(results):
        by_model.setdefault(c["model"], []).append(c)
    for conds in by_model.values():
        multi = [c for c in conds if c["arch"] != "single-head"]
        base = sorted((c for c in multi if c["strategy"] == "none"), key=lambda c: c["recovery_epochs"])
        if not base:
            continue  # nothing to compare against

        def base_for(rec):
            # The baseline has recovery 0 and serves every recovery setting.
            return next((c for c in base if c["recovery_epochs"] == rec), base[0])

        for c in multi:
            if c["strategy"] != "none":
                add("vs_baseline", base_for(c["recovery_epochs"]), c)
        trio: dict = {}
        for c in multi:
            if c["strategy"] in ("top", "bottom", "random"):
                trio.setdefault((c["per_layer"], c["k"], c["recovery_epochs"]), {})[c["strategy"]] = c
        for _, by in sorted(trio.items()):
            for a, b in TRIO_PAIRS:
                if a in by and b in by:
                    add("top_bottom_random", by[a], by[b])
        for c in multi:
            if c["strategy"] == "single-head":
                add("multi_vs_single", base_for(c["recovery_epochs"]), c)
        for c in conds:
            if c["arch"] == "single-head":
                add("multi_vs_single", base_for(c["recovery_epochs"]), c)
    cols = ["comparison_id", "family", "model", "group_a", "group_b", "arch_b", "k", "k_fraction", "per_layer",
            "recovery_epochs"] + [f"{c}_{s}" for s in "ab" for c in SIDE]
    order = {f: i for i, f in enumerate(FAMILIES)}
    rows.sort(key=lambda r: order[r["family"]])  # stable: keeps model / strategy / K order within a family
    return pd.DataFrame(rows, columns=cols)


def _paired_seeds(index: dict, row, metric: str) -> dict:
    """Trials of a and b matched by seed (NaN metrics left out).

    Returns plain lists: seed, a, b (metric values), key_a, key_b (trial keys)."""
    da = index.get(tuple(row[f"{c}_a"] for c in SIDE), {})
    db = index.get(tuple(row[f"{c}_b"] for c in SIDE), {})
    seeds = [s for s in sorted(set(da) & set(db)) if not (math.isnan(da[s][0]) or math.isnan(db[s][0]))]
    return {"seed": seeds, "a": [da[s][0] for s in seeds], "b": [db[s][0] for s in seeds],
            "key_a": [da[s][1] for s in seeds], "key_b": [db[s][1] for s in seeds]}


def _index(results: pd.DataFrame, metric: str) -> dict:
    """group (SIDE values) -> {seed: (metric value, trial_key)}; plain dicts keep pairing cheap."""
    out: dict = {}
    if "trial_key" not in results.columns:
        results = results.assign(trial_key=None)
    recs = zip(results["variant"], results["strategy"], results["k"].astype(int), results["per_layer"].astype(bool),
               results["recovery_epochs"].astype(float), results["seed"].astype(int),
               results[metric].astype(float), results["trial_key"])
    for variant, strategy, k, per_layer, rec, seed, value, key in recs:
        out.setdefault((variant, strategy, int(k), bool(per_layer), float(rec)), {})[int(seed)] = (float(value), key)
    return out


def _base_row(row, metric, level, test) -> dict:
    keep = ["comparison_id", "family", "model", "group_a", "group_b", "variant_a", "strategy_a", "variant_b",
            "strategy_b", "arch_b", "k", "k_fraction", "per_layer", "recovery_epochs"]
    return {**{c: row[c] for c in keep}, "metric": metric, "level": level, "test": test,
            "primary": test == PRIMARY_TEST, "note": ""}


def seed_tests(results: pd.DataFrame, plan: pd.DataFrame | None = None, metric: str = "accuracy",
               conf: float = 0.95) -> pd.DataFrame:
    """Paired-by-seed tests (paired t, exact sign-flip) for every planned comparison."""
    plan = plan_comparisons(results) if plan is None else plan
    index, rows = _index(results, metric), []
    for row in plan.to_dict("records"):
        m = _paired_seeds(index, row, metric)
        a, b = np.asarray(m["a"], float), np.asarray(m["b"], float)
        d = b - a
        d[np.abs(d) < 1e-12] = 0.0  # float noise (0.85 - 0.85) must not read as a tiny drop
        mean, lo, hi = t_interval(d, conf)
        common = {"n": len(d), "n_seeds": len(d), "n_examples": math.nan,
                  "mean_a": float(a.mean()) if len(a) else math.nan,
                  "mean_b": float(b.mean()) if len(b) else math.nan,
                  "difference": mean, "ci_low": lo, "ci_high": hi,
                  "effect_size": cohens_dz(d), "effect_size_name": "cohen_dz"}
        note = "" if len(d) >= 2 else f"{len(d)} paired seed(s): not testable across seeds"
        t, p_t = paired_t(d)
        if len(d) >= 2 and math.isnan(p_t):
            note = "identical differences across seeds: t undefined"
        rows.append({**_base_row(row, metric, "seeds", "paired_t"), **common, "statistic": t, "p": p_t, "note": note})
        p_s = sign_flip_p(d) if len(d) >= 2 else math.nan
        rows.append({**_base_row(row, metric, "seeds", "sign_flip"), **common,
                     "statistic": mean, "p": p_s, "note": "" if len(d) >= 2 else note})
    return pd.DataFrame(rows, columns=[c for c in STATS_COLUMNS if c not in ("p_adjusted", "family_size", "significant")])


def _correct(predictions, key, cache: dict):
    """Correctness of one trial as a Series indexed by example_id (cached per call)."""
    if key not in cache:
        df = predictions(key) if key is not None else None
        cache[key] = None if df is None else df.drop_duplicates("example_id").set_index("example_id")["correct"]
    return cache[key]


def _example_matrix(pairs: dict, predictions, cache: dict) -> tuple[list, np.ndarray, np.ndarray]:
    """Correctness of a and b as [example, seed] arrays on the examples every seed shares."""
    seeds, cols_a, cols_b = [], [], []
    for seed, key_a, key_b in zip(pairs["seed"], pairs["key_a"], pairs["key_b"]):
        pa, pb = _correct(predictions, key_a, cache), _correct(predictions, key_b, cache)
        if pa is None or pb is None:
            continue
        seeds.append(seed)
        cols_a.append(pa.rename(seed))
        cols_b.append(pb.rename(seed))
    if not seeds:
        return [], np.zeros((0, 0), bool), np.zeros((0, 0), bool)
    a = pd.concat(cols_a, axis=1, join="inner")
    b = pd.concat(cols_b, axis=1, join="inner")
    common = a.index.intersection(b.index).sort_values()  # sorted: bootstrap is reproducible
    return seeds, a.loc[common].to_numpy(bool), b.loc[common].to_numpy(bool)


def example_tests(results: pd.DataFrame, predictions, plan: pd.DataFrame | None = None, *, conf: float = 0.95,
                  n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per-example tests on the shared evaluation set (accuracy only).

    predictions: callable trial_key -> DataFrame(example_id, correct) or None
    (a loaded Sweep is one). McNemar is pooled over seeds: all (seed, example)
    pairs' discordant counts are summed, which is the Cochran-Mantel-Haenszel
    test with each matched pair as its own stratum. The bootstrap resamples
    examples with correctness averaged over seeds.
    """
    plan = plan_comparisons(results) if plan is None else plan
    index, rows, cache = _index(results, "accuracy"), [], {}
    for row in plan.to_dict("records"):
        pairs = _paired_seeds(index, row, "accuracy")
        seeds, a, b = _example_matrix(pairs, predictions, cache)
        if not seeds or a.size == 0:
            continue
        n01, n10 = int(np.sum(a & ~b)), int(np.sum(~a & b))
        n_pairs = len(pairs["seed"])
        note = "" if len(seeds) == n_pairs else f"predictions for {len(seeds)} of {n_pairs} paired seeds"
        stat, p, method = mcnemar_test(n01, n10)
        common = {"n_seeds": len(seeds), "n_examples": a.shape[0], "mean_a": float(a.mean()), "mean_b": float(b.mean())}
        rows.append({**_base_row(row, "accuracy", "examples", "mcnemar"), **common, "n": a.size,
                     "difference": float(b.mean() - a.mean()), "ci_low": math.nan, "ci_high": math.nan,
                     "effect_size": matched_odds_ratio(n01, n10), "effect_size_name": "matched_odds_ratio",
                     "statistic": stat, "p": p, "n01": n01, "n10": n10,
                     "note": "; ".join(x for x in (method, note) if x)})
        ca, cb = a.mean(axis=1), b.mean(axis=1)
        boot = paired_bootstrap(ca, cb, n_boot=n_boot, conf=conf, seed=seed)
        rows.append({**_base_row(row, "accuracy", "examples", "bootstrap"), **common, "n": a.shape[0],
                     "difference": boot["difference"], "ci_low": boot["ci_low"], "ci_high": boot["ci_high"],
                     "effect_size": cohens_dz(cb - ca), "effect_size_name": "cohen_dz_examples",
                     "statistic": boot["difference"], "p": boot["p"], "note": note})
    return pd.DataFrame(rows, columns=[c for c in STATS_COLUMNS if c not in ("p_adjusted", "family_size", "significant")])


def mcnemar_by_seed(results: pd.DataFrame, predictions, plan: pd.DataFrame | None = None) -> pd.DataFrame:
    """McNemar for each comparison and each seed separately (the pooled test's parts)."""
    plan = plan_comparisons(results) if plan is None else plan
    index, rows, cache = _index(results, "accuracy"), [], {}
    for row in plan.to_dict("records"):
        seeds, a, b = _example_matrix(_paired_seeds(index, row, "accuracy"), predictions, cache)
        for j, s in enumerate(seeds):
            n01, n10 = int(np.sum(a[:, j] & ~b[:, j])), int(np.sum(~a[:, j] & b[:, j]))
            stat, p, method = mcnemar_test(n01, n10)
            rows.append({"comparison_id": row["comparison_id"], "family": row["family"], "model": row["model"],
                         "group_a": row["group_a"], "group_b": row["group_b"], "seed": s, "n_examples": a.shape[0],
                         "accuracy_a": float(a[:, j].mean()), "accuracy_b": float(b[:, j].mean()),
                         "n01": n01, "n10": n10, "statistic": stat, "p": p, "method": method})
    return pd.DataFrame(rows, columns=["comparison_id", "family", "model", "group_a", "group_b", "seed", "n_examples",
                                       "accuracy_a", "accuracy_b", "n01", "n10", "statistic", "p", "method"])


def compare(results: pd.DataFrame, predictions=None, *, metric: str = "accuracy", alpha: float = 0.05,
            conf: float = 0.95, n_boot: int = 2000, seed: int = 0, by=("family", "test")) -> pd.DataFrame:
    """All families, all tests, Holm-adjusted within each `by` group (default: family x test).

    Returns one row per (comparison, test); the row with primary == True carries
    THE p-value of a comparison (paired t-test across seeds)."""
    plan = plan_comparisons(results)
    parts = [seed_tests(results, plan, metric, conf)]
    if predictions is not None and metric == "accuracy" and "trial_key" in results.columns:
        parts.append(example_tests(results, predictions, plan, conf=conf, n_boot=n_boot, seed=seed))
    parts = [p for p in parts if len(p)]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=STATS_COLUMNS)
    df = holm_adjust(df, by=by)
    df["significant"] = df["p_adjusted"] < alpha
    order = {t: i for i, t in enumerate(TESTS)}
    plan_order = {cid: i for i, cid in enumerate(plan["comparison_id"])}
    df = df.assign(_o1=df["comparison_id"].map(plan_order), _o2=df["test"].map(order))
    return df.sort_values(["_o1", "_o2"]).drop(columns=["_o1", "_o2"])[STATS_COLUMNS].reset_index(drop=True)


def primary(stats: pd.DataFrame) -> pd.DataFrame:
    """The rows that carry each comparison's primary p-value."""
    return stats[stats["primary"].astype(bool)].reset_index(drop=True)


def power_warnings(stats: pd.DataFrame, alpha: float = 0.05) -> list[str]:
    """Plain-language warnings when the design cannot reach significance."""
    msgs = []
    seeds = stats[stats["level"] == "seeds"]
    if len(seeds) and seeds["p"].isna().all():
        msgs.append("Fewer than 2 paired seeds in every comparison: tests across seeds were skipped. "
                    "Only per-example tests remain, and they speak about these particular fine-tuned "
                    "models, not about the training procedure. Run 3 or more seeds (5+ for exact tests).")
    for fam, g in seeds[seeds["test"] == "sign_flip"].groupby("family", sort=False):
        ok = g[g["p"].notna()]
        if ok.empty:
            continue
        # m = the size of the Holm family actually used (compare's `by` may split families)
        m = int(ok["family_size"].max()) if "family_size" in ok.columns else len(ok)
        n = int(ok["n"].max())
        floor = min(1.0, m * min_sign_flip_p(n))
        if floor > alpha:
            need = math.ceil(math.log2(2 * m / alpha))
            msgs.append(f"{fam}: with {n} seeds the exact sign-flip test cannot give p below "
                        f"{min_sign_flip_p(n):.4g}; with {m} comparison(s) in the Holm family the smallest "
                        f"possible adjusted p is {floor:.3g} > {alpha}, so it cannot reach significance "
                        f"whatever the data ({need} seeds would be needed).")
    for fam, g in seeds[seeds["test"] == PRIMARY_TEST].groupby("family", sort=False):
        ok = g[g["p"].notna()]
        if len(ok) and int(ok["n"].max()) < 3:
            n = int(ok["n"].max())
            msgs.append(f"{fam}: only {n} seeds per comparison: the paired t-test has {n - 1} degree(s) of "
                        "freedom and its normality assumption cannot be checked; treat its p-values as rough.")
    return msgs
