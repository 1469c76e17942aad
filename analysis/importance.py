"""Head importance across seeds: mean layer x head maps, rank stability, consistent heads.

Input is the importance table (model, seed, layer, head, score, score_raw). The
default `score` is the per-layer L2-normalised score, because that is what the
strategies rank heads by; pass score="score_raw" to look at raw gradients.
"""

from __future__ import annotations

import itertools
import math

import pandas as pd
from scipy import stats as st


def mean_importance(importance: pd.DataFrame, score: str = "score") -> pd.DataFrame:
    """Per (model, layer, head): mean and std of the score over seeds, n_seeds."""
    g = importance.groupby(["model", "layer", "head"], sort=True)[score]
    out = g.agg(mean="mean", std="std", n_seeds="count").reset_index()
    return out


def importance_matrix(mean: pd.DataFrame, model: str, value: str = "mean") -> pd.DataFrame:
    """Layer x head matrix (rows = layers) of one model, from mean_importance()."""
    return mean[mean["model"] == model].pivot(index="layer", columns="head", values=value).sort_index()


def _score_matrix(importance: pd.DataFrame, model: str, score: str) -> pd.DataFrame:
    """[heads, seeds] scores of one model, only heads scored in every seed."""
    sub = importance[importance["model"] == model]
    return sub.pivot_table(index=["layer", "head"], columns="seed", values=score, aggfunc="mean").dropna()


def rank_stability(importance: pd.DataFrame, score: str = "score") -> pd.DataFrame:
    """Spearman and Kendall correlation between every pair of seeds' head-score vectors."""
    rows = []
    for model in sorted(importance["model"].unique()):
        m = _score_matrix(importance, model, score)
        for sa, sb in itertools.combinations(m.columns, 2):
            x, y = m[sa].to_numpy(), m[sb].to_numpy()
            rows.append({"model": model, "seed_a": int(sa), "seed_b": int(sb), "n_heads": len(x),
                         "spearman": float(st.spearmanr(x, y).statistic),
                         "kendall": float(st.kendalltau(x, y).statistic)})
    return pd.DataFrame(rows, columns=["model", "seed_a", "seed_b", "n_heads", "spearman", "kendall"])


def stability_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, min and max of the pairwise correlations, per model."""
    cols = ["model", "n_pairs"] + [f"{m}_{s}" for m in ("spearman", "kendall") for s in ("mean", "std", "min", "max")]
    rows = []
    for model, g in pairs.groupby("model", sort=True):
        row = {"model": model, "n_pairs": len(g)}
        for m in ("spearman", "kendall"):
            x = g[m].to_numpy(float)
            row.update({f"{m}_mean": x.mean(), f"{m}_std": x.std(ddof=1) if len(x) > 1 else math.nan,
                        f"{m}_min": x.min(), f"{m}_max": x.max()})
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def consistent_heads(importance: pd.DataFrame, fraction: float = 0.1, score: str = "score") -> pd.DataFrame:
    """How often each head falls in the top / bottom `fraction` of its model's heads.

    Heads are ranked over the whole model per seed (as the strategies rank them);
    the top decile is the ceil(fraction * heads) highest scores. always_top /
    always_bottom mark heads that are there in every seed.
    """
    rows = []
    for model in sorted(importance["model"].unique()):
        m = _score_matrix(importance, model, score)
        if m.empty:
            continue
        n_heads, n_seeds = m.shape
        cut = max(1, math.ceil(fraction * n_heads))
        # rank 1 = most important; 'first' breaks ties deterministically.
        ranks = m.rank(axis=0, ascending=False, method="first")
        top = (ranks <= cut).mean(axis=1)
        bottom = (ranks > n_heads - cut).mean(axis=1)
        for (layer, head), t in top.items():
            rows.append({"model": model, "layer": int(layer), "head": int(head), "n_seeds": n_seeds,
                         "mean_rank": float(ranks.loc[(layer, head)].mean()), "top_share": float(t),
                         "bottom_share": float(bottom.loc[(layer, head)]),
                         "always_top": bool(t == 1.0), "always_bottom": bool(bottom.loc[(layer, head)] == 1.0)})
    cols = ["model", "layer", "head", "n_seeds", "mean_rank", "top_share", "bottom_share", "always_top", "always_bottom"]
    return pd.DataFrame(rows, columns=cols)
