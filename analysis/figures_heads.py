"""Figures about single heads: where the pruned heads sit, and each head removed alone.

Same rules as analysis/figures.py (PNG + PDF, matplotlib Figure objects, no p-values inside the
axes; a marker inside a heatmap cell names that cell only).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns

from .figures import _figure, _suptitle, save
from .per_head import LAYER_SHARE_STRATEGIES, layer_shares


def heads_by_layer(results: pd.DataFrame, importance: pd.DataFrame | None, path):
    """Where the pruned heads sit: per strategy (rows; per criterion where there are several) and
    model (columns), the share of each layer's heads removed at each K (from heads_removed; mean
    over seeds and draws; no recovery, whole-model K). Our figure: Michel et al. ask the related
    question for the attention types of a translation model (section 5, Fig. 4)."""
    shares = layer_shares(results, importance)
    if shares.empty:
        return None
    several = shares.loc[shares["importance_method"] != "", "importance_method"].nunique() > 1
    order = {s: i for i, s in enumerate(LAYER_SHARE_STRATEGIES)}
    rows = sorted(shares[["strategy", "importance_method"]].drop_duplicates().itertuples(index=False, name=None),
                  key=lambda r: (order.get(r[0], 99), r[1]))
    cols = sorted(shares[["task", "model"]].drop_duplicates().itertuples(index=False, name=None))
    show_task = len({t for t, _ in cols}) > 1
    fig, axes = _figure(len(rows), len(cols), 4.2, 2.6)
    for i, (strategy, method) in enumerate(rows):
        for j, (task, model) in enumerate(cols):
            ax = axes[i, j]
            g = shares[(shares["strategy"] == strategy) & (shares["importance_method"] == method)
                       & (shares["task"] == task) & (shares["model"] == model)]
            if g.empty:
                ax.set_visible(False)
                continue
            mat = g.pivot_table(index="layer", columns="k_fraction", values="share", aggfunc="mean").sort_index()
            mat.columns = [f"{x:.0%}" for x in mat.columns]
            last = j == len(cols) - 1   # one colour bar per row: the scale is the same [0, 1] everywhere
            sns.heatmap(mat, ax=ax, vmin=0, vmax=1, cmap="rocket_r", cbar=last,
                        cbar_kws={"label": "share of the layer removed"} if last else None)
            ax.invert_yaxis()   # layer 0 at the bottom, as the model stacks them
            ax.set(xlabel="K (fraction of all heads removed)", ylabel="layer",
                   title=(f"{task}: " if show_task else "") + f"{model} — {strategy}"
                   + (f" [{method}]" if several and method else ""))
            ax.title.set_fontsize(9)
    _suptitle(fig, "Where the pruned heads sit: share of each layer's heads removed at each K (mean over seeds and "
                   "random draws, from heads_removed)")
    return save(fig, path)


def per_head_map(per_head: pd.DataFrame | None, path, alpha: float = 0.05):
    """Each head removed alone (per_head.csv): layer x head map of the difference to the unpruned
    model in points (blue: lower), one panel per model (per model and seed where heads do not
    correspond across seeds); a dot marks the heads with BH q < alpha."""
    if per_head is None or per_head.empty:
        return None
    keys = ["task", "model", "variant", "recovery_epochs", "level", "seed"]
    panels = sorted(per_head[keys].drop_duplicates().itertuples(index=False, name=None))
    ncols = min(len(panels), 3)
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = _figure(nrows, ncols, 4.6, 3.6)
    lim = float(np.nanmax(np.abs(100 * per_head["difference"].to_numpy(float)))) if per_head["difference"].notna().any() \
        else 1.0
    show_task = per_head["task"].nunique() > 1
    for ax, (task, model, variant, rec, level, seed) in zip(axes.flat, panels):
        g = per_head[(per_head["task"] == task) & (per_head["model"] == model) & (per_head["variant"] == variant)
                     & (per_head["recovery_epochs"] == rec) & (per_head["level"] == level) & (per_head["seed"] == seed)]
        mat = 100 * g.pivot_table(index="layer", columns="head", values="difference", aggfunc="mean").sort_index()
        sns.heatmap(mat, ax=ax, cmap="vlag_r", center=0, vmin=-max(lim, 1e-9), vmax=max(lim, 1e-9),
                    cbar_kws={"label": "difference (points)"})
        rows, cols = list(mat.index), list(mat.columns)
        sig = g[g["significant"].astype(bool)]
        ax.scatter([cols.index(h) + 0.5 for h in sig["head"]], [rows.index(la) + 0.5 for la in sig["layer"]],
                   marker="o", s=14, color="k", label=f"BH q < {alpha:g}")
        n = int(g["n_seeds"].max()) if level == "seeds" else int(g["n_examples"].max() if g["n_examples"].notna().any()
                                                                 else 0)
        unit = f"{n} seeds" if level == "seeds" else f"seed {seed}, {n} examples"
        ax.set(xlabel="head", ylabel="layer", title=(f"{task}: " if show_task else "") + f"{model} ({unit})"
               + (f" +{rec:g}ep" if rec else ""))
        ax.title.set_fontsize(9)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    _suptitle(fig, "Each head removed alone against the unpruned model (cf. Michel et al. section 3.2, Table 1): mean "
                   f"difference in points; dots: Benjamini-Hochberg q < {alpha:g} over the model's heads (seeds as the "
                   "unit where heads correspond across seeds, else each seed with the example as the unit)")
    return save(fig, path)
