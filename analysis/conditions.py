"""Conditions, their names, their reference (baseline) and the per-seed values every test pairs.

A condition is trials.schema.CONDITION: everything but the seed (and the random-K draw). One
rule picks the reference of a condition, and the statistics, the figures and the report all
call it (``reference``):
  - a pruned multi-head condition is compared with the unpruned model (strategy none) of the same
    variant fine-tuned for as long: the `none` trial with the same recovery_epochs (the fair
    baseline for recovery, README "Decisions"); only where the sweep has none is the recovery-0
    baseline used, and the comparison says so in its note;
  - the one-head architecture with init pretrained / random is compared with the multi-head model
    as fine-tuned (recovery from a changed architecture); with init scratch, with the multi-head
    model trained from scratch (variant <label>-scratch), the clean architectural comparison.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from headsweep.trials.schema import CONDITION, strategy_rank

# importance_method of `layer-single-head` rows whose kept head was found by trying every head of
# the layer on the evaluation set (keep: best; Michel et al. section 3.3, Tables 2-3). It ranks
# nothing, so it is not an importance criterion (several_methods ignores it).
ORACLE = "oracle"


def sweep_metric(results: pd.DataFrame) -> str:
    if "metric" in results.columns and len(results):
        return str(results["metric"].iloc[0])
    return "accuracy"


def collapse_draws(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (condition, seed): the metric averaged over random-K draws, how many draws,
    their SD within the seed, and the trial keys (all draws) the value comes from."""
    if "trial_key" not in results.columns:
        results = results.assign(trial_key=None)
    g = results.groupby(CONDITION + ["k_fraction", "seed"], sort=False, dropna=False)
    out = g.agg(value=(metric, "mean"), n_draws=(metric, "size"), draw_sd=(metric, "std"),
                keys=("trial_key", tuple)).reset_index()
    return out


def as_dict(c) -> dict:
    """A condition as plain Python scalars (comparable, hashable parts)."""
    return {"task": str(c["task"]), "model": str(c["model"]), "variant": str(c["variant"]), "arch": str(c["arch"]),
            "arch_init": str(c["arch_init"]), "importance_method": str(c["importance_method"]),
            "strategy": str(c["strategy"]), "per_layer": bool(c["per_layer"]), "k": int(c["k"]),
            "layer": int(c["layer"]), "head": int(c.get("head", -1)), "recovery_epochs": float(c["recovery_epochs"]),
            "k_fraction": float(c["k_fraction"])}


def key_of(c: dict) -> tuple:
    return tuple(c[col] for col in CONDITION)


def conditions(results: pd.DataFrame) -> list[dict]:
    """Distinct conditions in reading order."""
    conds = [as_dict(c) for c in results.drop_duplicates(CONDITION)[CONDITION + ["k_fraction"]].to_dict("records")]
    return sorted(conds, key=lambda c: (c["task"], c["model"], c["arch"] == "single-head", c["variant"],
                                        strategy_rank(c["strategy"]), c["importance_method"], c["per_layer"], c["k"],
                                        c["layer"], c["head"], c["recovery_epochs"], c["arch_init"]))


def index(results: pd.DataFrame, metric: str) -> dict:
    """condition key -> {seed: (value averaged over draws, trial keys, n_draws)}."""
    out: dict = {}
    per_seed = collapse_draws(results, metric)
    for r in per_seed.to_dict("records"):
        c = as_dict(r)
        out.setdefault(key_of(c), {})[int(r["seed"])] = (float(r["value"]), tuple(r["keys"]), int(r["n_draws"]))
    return out


def paired(idx: dict, key_a: tuple, key_b: tuple) -> dict:
    """Seeds both conditions have (NaN values left out): seed, a, b, keys_a, keys_b, n_draws."""
    da, db = idx.get(key_a, {}), idx.get(key_b, {})
    seeds = [s for s in sorted(set(da) & set(db)) if not (np.isnan(da[s][0]) or np.isnan(db[s][0]))]
    return {"seed": seeds, "a": np.array([da[s][0] for s in seeds]), "b": np.array([db[s][0] for s in seeds]),
            "keys_a": [da[s][1] for s in seeds], "keys_b": [db[s][1] for s in seeds],
            "n_draws": max([da[s][2] for s in seeds] + [db[s][2] for s in seeds] + [0])}


def reference(c: dict, pool: list[dict]) -> tuple[dict | None, str]:
    """The condition c is compared against (module docstring), and a note when it is a fallback."""
    same_model = [b for b in pool if b["task"] == c["task"] and b["model"] == c["model"] and b["strategy"] == "none"
                  and b["arch"] != "single-head"]
    if c["arch"] == "single-head":
        init = "scratch" if c["arch_init"] == "scratch" else ""
        cands = [b for b in same_model if b["arch_init"] == init]
        if not cands and init == "scratch":
            return None, "no multi-head model trained from scratch to compare the from-scratch one-head model with"
    else:
        cands = [b for b in same_model if b["variant"] == c["variant"]]
    same = [b for b in cands if b["recovery_epochs"] == c["recovery_epochs"]]
    if same:
        return same[0], ""
    zero = [b for b in cands if b["recovery_epochs"] == 0]
    if zero:
        return zero[0], (f"no unpruned baseline fine-tuned for {c['recovery_epochs']:g} more epoch(s): compared with "
                         "the recovery-0 baseline")
    return None, "no unpruned baseline"


def label(c: dict, methods: bool = False) -> str:
    """Human-readable name of a condition. K is always the total number of heads removed."""
    if c["arch"] == "single-head":
        s = f"{c['variant']} (one-head arch, init {c['arch_init'] or 'pretrained'})"
    elif c["strategy"] == "none":
        s = "none" if c["arch_init"] != "scratch" else f"{c['variant']} (multi-head, from scratch)"
    elif c["strategy"] == "layer-single-head":
        s = f"layer-single-head L{c['layer']}" + (" [oracle: best head]" if c["importance_method"] == ORACLE else "")
    elif c["strategy"] == "each-head":
        s = f"each-head L{c['layer']}H{c['head']}"
    elif c["strategy"] == "single-head":
        s = "single-head"
    else:
        s = f"{c['strategy']} k={c['k']}" + (" (per layer)" if c["per_layer"] else "")
    if methods and c["importance_method"] and c["importance_method"] != ORACLE:
        s += f" [{c['importance_method']}]"
    if c["recovery_epochs"]:
        s += f" +{c['recovery_epochs']:g}ep"
    return s


def several_methods(results: pd.DataFrame) -> bool:
    m = results["importance_method"] if "importance_method" in results.columns else pd.Series(dtype=str)
    return m[(m != "") & (m != ORACLE)].nunique() > 1


def several_tasks(results: pd.DataFrame) -> bool:
    return "task" in results.columns and results["task"].nunique() > 1
