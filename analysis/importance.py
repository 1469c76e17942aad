"""Head importance: mean maps, rank stability, consistent heads, criteria and tasks compared.

Input is the importance table (model, seed, method, layer, head, score, score_raw[, task]). The
default ``score`` is the per-layer L2-normalised score the strategies rank by.

Head correspondence. Averaging head (l, h) over seeds, or correlating two seeds' rankings, only
means something when head h of seed 0 *is* head h of seed 1: when every seed starts from the
same pretrained weights (a hub model, a shipped pretrained preset). Where the seed draws the
weights (``preset:*-random``, a preset with its own tokenizer, a model trained from scratch, or
a sweep written before the presets shipped weights), heads are exchangeable between seeds and
those summaries are skipped with a note (``seed_correspondence``). Comparisons *within* one seed
(criterion vs criterion on the same checkpoint) stay valid either way.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
from scipy import stats as st

from headsweep.trials import presets

PRESET_PREFIX = presets.PRESET_PREFIX
RANDOM_SUFFIX = getattr(presets, "RANDOM_SUFFIX", "-random")   # preset:<name>-random: drawn from the seed

KEYS = ["model", "method"]


def _keys(importance: pd.DataFrame) -> list[str]:
    """The grouping of the per-model summaries: (task, model, criterion) when the table carries a
    task (a loaded sweep always does), so a combined analysis never mixes one task's seed 0 with
    another's; (model, criterion) for a bare table."""
    return (["task"] if "task" in importance.columns else []) + KEYS


def seed_correspondence(results: pd.DataFrame) -> dict[str, tuple[bool, str]]:
    """model label -> (heads correspond across seeds, why), from the rows' resolved configs."""
    out = {}
    modern = "spec_key" in results.columns and results["spec_key"].notna().any()
    for model, g in results[results["arch"] != "single-head"].groupby("model", sort=True):
        cfg = None
        for text in g["config"].dropna() if "config" in g.columns else []:
            try:
                cfg = json.loads(text)
                break
            except (TypeError, ValueError):
                continue
        m = (cfg or {}).get("model") if isinstance(cfg, dict) else None
        if not isinstance(m, dict) or not m.get("name"):
            out[model] = (False, "the results do not record how its weights were initialised, so head h of one seed "
                                 "need not be head h of another")
            continue
        name = str(m["name"])
        if m.get("scratch") or (g["arch_init"] == "scratch").all():
            out[model] = (False, "it is trained from scratch: every seed draws its own weights")
        elif name.startswith(PRESET_PREFIX) and name.endswith(RANDOM_SUFFIX):
            out[model] = (False, f"{name} is randomly initialised from each seed")
        elif name.startswith(PRESET_PREFIX) and m.get("tokenizer"):
            out[model] = (False, f"{name} with its own tokenizer is randomly initialised from each seed")
        elif name.startswith(PRESET_PREFIX) and not modern:
            out[model] = (False, f"{name} in a sweep written before the presets shipped pretrained weights was "
                                 "randomly initialised from each seed")
        else:
            out[model] = (True, f"every seed starts from the pretrained weights of {name}")
    return out


def shared_only(importance: pd.DataFrame | None, corr: dict) -> pd.DataFrame | None:
    """The importance rows of models whose heads correspond across seeds."""
    if importance is None:
        return None
    keep = [m for m, (ok, _) in corr.items() if ok]
    out = importance[importance["model"].isin(keep)]
    return out if len(out) else None


def mean_importance(importance: pd.DataFrame, score: str = "score") -> pd.DataFrame:
    """Per (model, method, layer, head): mean and std of the score over seeds, n_seeds."""
    g = importance.groupby(_keys(importance) + ["layer", "head"], sort=True)[score]
    return g.agg(mean="mean", std="std", n_seeds="count").reset_index()


def importance_matrix(mean: pd.DataFrame, model: str, value: str = "mean", method: str | None = None,
                      task: str | None = None) -> pd.DataFrame:
    """Layer x head matrix (rows = layers) of one model (and criterion, and task), from mean_importance()."""
    sub = mean[mean["model"] == model]
    if method is not None:
        sub = sub[sub["method"] == method]
    if task is not None and "task" in sub.columns:
        sub = sub[sub["task"] == task]
    return sub.pivot_table(index="layer", columns="head", values=value, aggfunc="mean").sort_index()


def _groups(importance: pd.DataFrame):
    """(dict of the group's keys, its rows) per _keys group."""
    keys = _keys(importance)
    for vals, g in importance.groupby(keys, sort=True):
        yield dict(zip(keys, vals)), g


def _score_matrix(sub: pd.DataFrame, score: str, by: str = "seed") -> pd.DataFrame:
    """[heads, seeds] (or [heads, by]) scores of one group's rows, only heads scored everywhere."""
    return sub.pivot_table(index=["layer", "head"], columns=by, values=score, aggfunc="mean").dropna()


def rank_stability(importance: pd.DataFrame, score: str = "score") -> pd.DataFrame:
    """Spearman and Kendall correlation between every pair of seeds' head-score vectors, per
    (model, criterion). Call it on heads that correspond across seeds (shared_only)."""
    rows = []
    for key, sub in _groups(importance):
        m = _score_matrix(sub, score)
        for sa, sb in itertools.combinations(m.columns, 2):
            x, y = m[sa].to_numpy(), m[sb].to_numpy()
            rows.append({**key, "seed_a": int(sa), "seed_b": int(sb), "n_heads": len(x),
                         "spearman": float(st.spearmanr(x, y).statistic),
                         "kendall": float(st.kendalltau(x, y).statistic)})
    return pd.DataFrame(rows, columns=_keys(importance) + ["seed_a", "seed_b", "n_heads", "spearman", "kendall"])


def stability_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, min and max of the pairwise correlations, per (model, criterion)."""
    keys = _keys(pairs)
    cols = keys + ["n_pairs"] + [f"{m}_{s}" for m in ("spearman", "kendall") for s in ("mean", "std", "min", "max")]
    rows = []
    for vals, g in pairs.groupby(keys, sort=True):
        row = {**dict(zip(keys, vals)), "n_pairs": len(g)}
        for m in ("spearman", "kendall"):
            x = g[m].to_numpy(float)
            row.update({f"{m}_mean": x.mean(), f"{m}_std": x.std(ddof=1) if len(x) > 1 else math.nan,
                        f"{m}_min": x.min(), f"{m}_max": x.max()})
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def agreement_words(rho: float) -> str:
    """What a mean rank correlation says, in words that follow its value."""
    if math.isnan(rho):
        return "cannot be measured"
    if rho >= 0.7:
        return "agree strongly"
    if rho >= 0.4:
        return "agree moderately"
    if rho >= 0.1:
        return "agree only weakly"
    if rho > -0.1:
        return "are unrelated"
    return "are anti-correlated (they disagree)"


def consistent_heads(importance: pd.DataFrame, fraction: float = 0.1, score: str = "score") -> pd.DataFrame:
    """How often each head falls in the top / bottom ``fraction`` of its model's heads, per criterion.

    Heads are ranked over the whole model per seed (as the strategies rank them); the top decile
    is the ceil(fraction * heads) highest scores. always_top / always_bottom: in every seed."""
    rows = []
    for key, sub in _groups(importance):
        m = _score_matrix(sub, score)
        if m.empty:
            continue
        n_heads, n_seeds = m.shape
        cut = max(1, math.ceil(fraction * n_heads))
        ranks = m.rank(axis=0, ascending=False, method="first")   # 1 = most important
        top = (ranks <= cut).mean(axis=1)
        bottom = (ranks > n_heads - cut).mean(axis=1)
        for (layer, head), t in top.items():
            rows.append({**key, "layer": int(layer), "head": int(head), "n_seeds": n_seeds,
                         "mean_rank": float(ranks.loc[(layer, head)].mean()), "top_share": float(t),
                         "bottom_share": float(bottom.loc[(layer, head)]),
                         "always_top": bool(t == 1.0), "always_bottom": bool(bottom.loc[(layer, head)] == 1.0)})
    cols = _keys(importance) + ["layer", "head", "n_seeds", "mean_rank", "top_share", "bottom_share", "always_top",
                                "always_bottom"]
    return pd.DataFrame(rows, columns=cols)


def method_agreement(importance: pd.DataFrame, score: str = "score") -> pd.DataFrame:
    """Rank correlation between criteria, within each seed (same checkpoint: valid whatever the
    initialisation), then averaged over seeds: per (model, method_a, method_b). In a combined
    analysis each (task, seed) is its own checkpoint: n_seeds counts checkpoints."""
    rows = []
    if importance is None or importance["method"].nunique() < 2:
        return pd.DataFrame(columns=["model", "method_a", "method_b", "n_seeds", "spearman_mean", "spearman_min",
                                     "spearman_max", "kendall_mean"])
    for model, g in importance.groupby("model", sort=True):
        ckpt = (["task"] if "task" in g.columns else []) + ["seed"]
        piv = g.pivot_table(index=ckpt + ["layer", "head"], columns="method", values=score, aggfunc="mean")
        for ma, mb in itertools.combinations(sorted(piv.columns), 2):
            per = []
            for _, s in piv[[ma, mb]].dropna().groupby(level=ckpt):
                if len(s) > 2:
                    per.append((st.spearmanr(s[ma], s[mb]).statistic, st.kendalltau(s[ma], s[mb]).statistic))
            if per:
                sp = np.array(per)
                rows.append({"model": model, "method_a": ma, "method_b": mb, "n_seeds": len(per),
                             "spearman_mean": float(sp[:, 0].mean()), "spearman_min": float(sp[:, 0].min()),
                             "spearman_max": float(sp[:, 0].max()), "kendall_mean": float(sp[:, 1].mean())})
    return pd.DataFrame(rows, columns=["model", "method_a", "method_b", "n_seeds", "spearman_mean", "spearman_min",
                                       "spearman_max", "kendall_mean"])


def task_agreement(importance: pd.DataFrame, fraction: float = 0.1, score: str = "score") -> pd.DataFrame:
    """Across tasks (cf. Michel et al. section 3.4, which correlates each head's ablation effect on
    two evaluation sets of one task): per (model, criterion, pair of tasks), the Spearman
    correlation of the heads' mean importance (over seeds) on the two tasks, and the overlap of
    the top and bottom deciles (shared heads / decile size; chance level = decile / heads). Call
    it on heads that correspond (shared_only): the same pretrained model on both tasks."""
    cols = ["model", "method", "task_a", "task_b", "n_heads", "n_seeds_a", "n_seeds_b", "spearman", "top_overlap",
            "bottom_overlap", "chance_overlap"]
    rows = []
    if importance is None or "task" not in importance.columns or importance["task"].nunique() < 2:
        return pd.DataFrame(columns=cols)
    for (model, method), sub in importance.groupby(KEYS, sort=True):
        m = sub.pivot_table(index=["layer", "head"], columns="task", values=score, aggfunc="mean").dropna()
        seeds = sub.groupby("task")["seed"].nunique()
        n = len(m)
        if n < 3:
            continue
        cut = max(1, math.ceil(fraction * n))
        for ta, tb in itertools.combinations(sorted(m.columns), 2):
            ra = m[ta].rank(ascending=False, method="first")
            rb = m[tb].rank(ascending=False, method="first")
            top = ((ra <= cut) & (rb <= cut)).sum() / cut
            bottom = ((ra > n - cut) & (rb > n - cut)).sum() / cut
            rows.append({"model": model, "method": method, "task_a": ta, "task_b": tb, "n_heads": n,
                         "n_seeds_a": int(seeds.get(ta, 0)), "n_seeds_b": int(seeds.get(tb, 0)),
                         "spearman": float(st.spearmanr(m[ta], m[tb]).statistic), "top_overlap": float(top),
                         "bottom_overlap": float(bottom), "chance_overlap": cut / n})
    return pd.DataFrame(rows, columns=cols)
