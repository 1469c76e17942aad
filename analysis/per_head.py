"""Each head removed alone (strategy each-head; Michel et al. section 3.2, Table 1 and Fig. 1), and
where the pruned heads sit.

Per-head effects (``per_head_effects`` -> per_head.csv). For every head, the difference between
the model with that one head masked and the unpruned model (conditions.reference), on the
evaluation set:
  - where heads correspond across seeds (every seed starts from the same pretrained weights:
    importance.seed_correspondence), the seed is the unit: the paired t-test over seeds of the
    per-seed differences (level "seeds"), as every primary test;
  - otherwise head h of one seed is not head h of another, so each seed is analysed on its own:
    the example-level paired t-test (examples.example_t, the example as the unit) of that seed's
    two fixed models (level "examples", one row per seed and head); without predictions only the
    difference is given.
q: Benjamini-Hochberg FDR over all heads of a model (per seed at level "examples"), statsmodels'
multipletests; ``significant`` is q < alpha. Many heads are tested, and a per-head table is read
as a map, so the false-discovery rate is the error that matters (Holm would hide nearly all).

Does importance predict damage (``importance_vs_damage``)? Per model and criterion, within each
seed (one checkpoint: valid whether or not heads correspond), the Spearman correlation between
the criterion's score (the one the strategies rank by; higher = more important for every method)
and the damage of removing that head alone (baseline minus each-head, in the same seed);
summarised over seeds. Where heads correspond, also the correlation of the seed means.

Where the pruned heads sit (``layer_shares``): from heads_removed, the share of each layer's heads
that a strategy removes at each K (mean over seeds and random draws).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from scipy import stats as st
from statsmodels.stats.multitest import multipletests

from headsweep.trials.schema import CORRECTNESS_METRICS, DAMAGE_COLUMNS, PER_HEAD_COLUMNS

from .conditions import conditions, index, key_of, paired, reference, sweep_metric
from .stats import difference_range, example_t, t_bounds

EACH = "each-head"


def _each(results: pd.DataFrame) -> pd.DataFrame:
    return results[(results["strategy"] == EACH) & (results["arch"] != "single-head")]


def _correct(predictions, key):
    df = predictions(key) if predictions is not None and key is not None else None
    if df is None:
        return None
    s = df.drop_duplicates("example_id").set_index("example_id")["correct"].sort_index()
    return s.astype(float)


def per_head_effects(results: pd.DataFrame, predictions=None, corr: dict | None = None, *, metric: str | None = None,
                     alpha: float = 0.05, conf: float = 0.95) -> pd.DataFrame:
    """per_head.csv (module docstring)."""
    from .compare import t_test_row
    from .importance import seed_correspondence

    metric = metric or sweep_metric(results)
    each = _each(results)
    if each.empty:
        return pd.DataFrame(columns=PER_HEAD_COLUMNS)
    corr = seed_correspondence(results) if corr is None else corr
    conds = conditions(results)
    idx = index(results, metric)
    rows = []
    for c in (x for x in conds if x["strategy"] == EACH and x["arch"] != "single-head"):
        ref, note = reference(c, conds)
        if ref is None:
            continue
        base = {"task": c["task"], "model": c["model"], "variant": c["variant"], "recovery_epochs": c["recovery_epochs"],
                "layer": c["layer"], "head": c["head"]}
        m = paired(idx, key_of(ref), key_of(c))
        if corr.get(c["model"], (False, ""))[0]:
            t = t_test_row(m["b"] - m["a"], metric, conf)
            rows.append({**base, "level": "seeds", "seed": -1, "test": "paired_t", "n": t["n"], "n_seeds": t["n"],
                         "n_examples": math.nan, "mean_base": float(np.mean(m["a"])) if len(m["a"]) else math.nan,
                         "mean_head": float(np.mean(m["b"])) if len(m["b"]) else math.nan,
                         "difference": t["difference"], "sd": t["sd"], "ci_low": t["ci_low"], "ci_high": t["ci_high"],
                         "p": t["p"], "note": "; ".join(x for x in (note, t["note"]) if x)})
            continue
        for seed, a, b, ka, kb in zip(m["seed"], m["a"], m["b"], m["keys_a"], m["keys_b"]):
            row = {**base, "level": "examples", "seed": int(seed), "test": "example_t", "n": math.nan, "n_seeds": 1,
                   "n_examples": math.nan, "mean_base": float(a), "mean_head": float(b), "difference": float(b - a),
                   "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan,
                   "note": "heads do not correspond across seeds: this seed's two models, the example as the unit"}
            ca = _correct(predictions, ka[0]) if metric in CORRECTNESS_METRICS else None
            cb = _correct(predictions, kb[0]) if ca is not None else None
            if ca is None or cb is None:
                row.update(test="", note="heads do not correspond across seeds and there are no per-example "
                                         "predictions: the difference only, untested")
            else:
                ids = ca.index.intersection(cb.index)
                r = example_t(ca.loc[ids].to_numpy(), cb.loc[ids].to_numpy())
                n, se = len(ids), float(r["se"])
                lo = hi = math.nan
                if se > 0:
                    lo, hi = (float(x) for x in t_bounds(r["difference"], se, n - 1, conf, difference_range(metric)))
                row.update(n=n, n_examples=n, difference=float(r["difference"]), sd=se * math.sqrt(n), ci_low=lo,
                           ci_high=hi, p=float(r["p"]))
            rows.append(row)
    out = pd.DataFrame(rows, columns=PER_HEAD_COLUMNS)
    return bh(out, alpha)


def bh(df: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """q: Benjamini-Hochberg over every head of a model (and seed, at level examples); NaN p stay NaN."""
    df = df.copy()
    df["q"], df["significant"] = math.nan, False
    for _, g in df.groupby(["task", "model", "variant", "recovery_epochs", "level", "seed"], sort=False):
        ok = g["p"].notna()
        if ok.any():
            df.loc[g.index[ok], "q"] = multipletests(g.loc[ok, "p"].to_numpy(float), method="fdr_bh")[1]
    df["significant"] = df["q"] < alpha
    return df


def _damage(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (task, model, seed, layer, head): baseline minus each-head in that seed (damage > 0: worse)."""
    conds, idx, rows = conditions(results), index(results, metric), []
    for c in (x for x in conds if x["strategy"] == EACH and x["arch"] != "single-head"):
        ref, _ = reference(c, conds)
        if ref is None or c["recovery_epochs"]:
            continue
        m = paired(idx, key_of(ref), key_of(c))
        rows += [{"task": c["task"], "model": c["model"], "seed": s, "layer": c["layer"], "head": c["head"],
                  "damage": float(a - b)} for s, a, b in zip(m["seed"], m["a"], m["b"])]
    return pd.DataFrame(rows, columns=["task", "model", "seed", "layer", "head", "damage"])


def importance_vs_damage(results: pd.DataFrame, importance: pd.DataFrame | None, corr: dict | None = None,
                         metric: str | None = None) -> pd.DataFrame:
    """importance_vs_damage.csv (module docstring), without recovery fine-tuning."""
    from .importance import seed_correspondence

    metric = metric or sweep_metric(results)
    if importance is None or importance.empty or _each(results).empty:
        return pd.DataFrame(columns=DAMAGE_COLUMNS)
    corr = seed_correspondence(results) if corr is None else corr
    dmg = _damage(results, metric)
    imp = importance if "task" in importance.columns else importance.assign(task=dmg["task"].iloc[0] if len(dmg)
                                                                            else "")
    both = dmg.merge(imp[["task", "model", "method", "seed", "layer", "head", "score"]],
                     on=["task", "model", "seed", "layer", "head"])
    rows = []
    for (task, model, method), g in both.groupby(["task", "model", "method"], sort=True):
        per = [st.spearmanr(s["score"], s["damage"]).statistic for _, s in g.groupby("seed") if len(s) > 2
               and s["score"].nunique() > 1 and s["damage"].nunique() > 1]
        per = np.array([x for x in per if np.isfinite(x)])
        ok, why = corr.get(model, (False, ""))
        of_means, note = math.nan, "within each seed's checkpoint (valid whether or not heads correspond)"
        if ok:
            mean = g.groupby(["layer", "head"])[["score", "damage"]].mean()
            if len(mean) > 2 and mean["score"].nunique() > 1 and mean["damage"].nunique() > 1:
                of_means = float(st.spearmanr(mean["score"], mean["damage"]).statistic)
        else:
            note += f"; no correlation of seed means: {why}"
        rows.append({"task": task, "model": model, "method": method,
                     "n_heads": int(g.groupby("seed").size().max()), "n_seeds": len(per),
                     "spearman_mean": float(per.mean()) if len(per) else math.nan,
                     "spearman_min": float(per.min()) if len(per) else math.nan,
                     "spearman_max": float(per.max()) if len(per) else math.nan, "spearman_of_means": of_means,
                     "note": note})
    return pd.DataFrame(rows, columns=DAMAGE_COLUMNS)


def model_shape(results: pd.DataFrame, importance: pd.DataFrame | None, model: str) -> tuple[int, int] | None:
    """(layers, heads per layer) of a model: from its importance rows, else from its each-head rows."""
    for df in (importance, _each(results)):
        if df is not None and len(df) and "head" in df.columns:
            sub = df[(df["model"] == model) & (df["head"] >= 0)]
            if len(sub):
                return int(sub["layer"].max()) + 1, int(sub["head"].max()) + 1
    return None


LAYER_SHARE_STRATEGIES = ("top", "bottom", "iterative", "random")


def _pairs(text) -> list:
    """heads_removed as [[layer, head], ...]; [] where missing (a NaN in a CSV) or unreadable."""
    try:
        out = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return []
    return [p for p in out if isinstance(p, list) and len(p) == 2] if isinstance(out, list) else []


def layer_shares(results: pd.DataFrame, importance: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (task, model, strategy, criterion, K): the share of each layer's heads removed, averaged
    over seeds and random draws, from heads_removed. Multi-head, no recovery, whole-model K."""
    cols = ["task", "model", "strategy", "importance_method", "k", "k_fraction", "layer", "share", "n_trials"]
    if "heads_removed" not in results.columns:
        return pd.DataFrame(columns=cols)
    r = results[results["strategy"].isin(LAYER_SHARE_STRATEGIES) & (results["arch"] != "single-head")
                & (results["recovery_epochs"] == 0) & ~results["per_layer"].astype(bool)]
    rows = []
    for (task, model), g in r.groupby(["task", "model"], sort=True):
        shape = model_shape(results, importance, model)
        if shape is None:
            seen = [lh for t in g["heads_removed"] for lh in _pairs(t)]
            total = int(pd.to_numeric(g.get("heads_total"), errors="coerce").max()) if "heads_total" in g else 0
            n_layers = max([lh[0] for lh in seen], default=-1) + 1
            if not n_layers or not total or total % n_layers:
                continue
            shape = (n_layers, total // n_layers)
        n_layers, n_heads = shape
        for (strategy, method, k, kf), gg in g.groupby(["strategy", "importance_method", "k", "k_fraction"], sort=True):
            lists = [x for x in map(_pairs, gg["heads_removed"]) if x]   # trials that recorded their heads
            if not lists:
                continue
            counts = np.zeros((len(lists), n_layers))
            for i, pairs in enumerate(lists):
                for layer, _ in pairs:
                    if 0 <= layer < n_layers:
                        counts[i, layer] += 1
            share = counts.mean(axis=0) / n_heads
            rows += [{"task": task, "model": model, "strategy": strategy, "importance_method": method, "k": int(k),
                      "k_fraction": float(kf), "layer": layer, "share": float(share[layer]), "n_trials": len(lists)}
                     for layer in range(n_layers)]
    return pd.DataFrame(rows, columns=cols)


__all__ = ["bh", "importance_vs_damage", "layer_shares", "per_head_effects"]
