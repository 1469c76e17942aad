"""Importance figures: mean layer x head maps and rank stability across seeds.

Both are drawn only for models whose heads correspond across seeds (importance.shared_only):
averaging head (l, h) over seeds that each drew their own weights would mix unrelated heads.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns

from .figures import _figure, save
from .importance import consistent_heads, importance_matrix, mean_importance, rank_stability


def importance_heatmaps(importance: pd.DataFrame | None, path, score: str = "score"):
    """Layer x head mean importance per (model, criterion); ▲/▼ mark heads in the top/bottom
    decile in every seed (markers sit inside the cells they name, not on other marks)."""
    if importance is None or importance.empty:
        return None
    mean = mean_importance(importance, score)
    cons = consistent_heads(importance, score=score)
    if "task" not in mean.columns:
        mean, cons = mean.assign(task=""), cons.assign(task="")
    panels = sorted(mean[["task", "model", "method"]].drop_duplicates().itertuples(index=False, name=None))
    several, tasks = mean["method"].nunique() > 1, mean["task"].nunique() > 1
    ncols = min(len(panels), 3)
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = _figure(nrows, ncols, 4.8, 3.8)
    for ax, (task, model, method) in zip(axes.flat, panels):
        mat = importance_matrix(mean, model, method=method, task=task)
        sns.heatmap(mat, ax=ax, cmap="viridis", cbar_kws={"label": f"mean {score}"}, square=False)
        c = cons[(cons["task"] == task) & (cons["model"] == model) & (cons["method"] == method)]
        rows, cols = list(mat.index), list(mat.columns)
        for _, r in c[c["always_top"] | c["always_bottom"]].iterrows():
            ax.text(cols.index(r["head"]) + 0.5, rows.index(r["layer"]) + 0.5, "▲" if r["always_top"] else "▼",
                    ha="center", va="center", color="white" if r["always_bottom"] else "black", fontsize=8)
        n = int(mean.loc[(mean["task"] == task) & (mean["model"] == model) & (mean["method"] == method),
                         "n_seeds"].max())
        ax.set(title=(f"{task}: " if tasks else "") + model + (f" [{method}]" if several else "") +
               f" (mean of {n} seed(s))",
               xlabel="head", ylabel="layer")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Head importance (seeds share the pretrained weights); ▲ top decile in every seed, "
                 "▼ bottom decile in every seed", fontsize=8)
    return save(fig, path)


def rank_stability_plot(importance: pd.DataFrame | None, path, score: str = "score"):
    """Pairwise Spearman / Kendall correlation between seeds' head rankings, per model."""
    if importance is None or importance.empty:
        return None
    pairs = rank_stability(importance, score)
    if pairs.empty:
        return None
    name = pairs["model"]
    if "task" in pairs.columns and pairs["task"].nunique() > 1:
        name = pairs["task"] + ": " + name
    if pairs["method"].nunique() > 1:
        name = name + " [" + pairs["method"] + "]"
    pairs = pairs.assign(model=name)
    long = pairs.melt(id_vars=["model", "seed_a", "seed_b"], value_vars=["spearman", "kendall"],
                      var_name="correlation", value_name="value")
    fig, axes = _figure(1, 1, 5.2, 3.6)
    ax = axes[0, 0]
    sns.boxplot(data=long, x="model", y="value", hue="correlation", ax=ax, fliersize=0, palette="pastel")
    sns.stripplot(data=long, x="model", y="value", hue="correlation", ax=ax, dodge=True, size=3, legend=False,
                  palette={"spearman": "k", "kendall": "k"})
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set(title="Rank stability of head importance across seeds (one dot per seed pair)",
           ylabel="rank correlation", xlabel="", ylim=(max(-1.02, long["value"].min() - 0.05), 1.02))
    ax.title.set_fontsize(9)
    return save(fig, path)
