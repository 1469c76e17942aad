"""Figures beyond the K curves: one layer at a time (Michel et al. Table 2) and efficiency.

Same rules as analysis/figures.py: PNG + PDF, one colour per strategy, axes inside the range a
value can take, p-values in tick labels or legends, never inside the axes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .conditions import collapse_draws, sweep_metric
from .figures import FEW_SEEDS, _figure, _legend, _limits, _suptitle, color, save
from .stats import difference_range, metric_range


def layer_single_head(stats: pd.DataFrame, results: pd.DataFrame, path, alpha: float = 0.05,
                      metric: str | None = None) -> Path | None:
    """Per layer: the change against the unpruned model when that one layer keeps only its most
    important head (stats.csv, family layer_single_head, primary rows), with the unadjusted 95%
    interval, each seed's paired difference as a dot, filled where Holm p < alpha."""
    metric = metric or sweep_metric(results)
    rows = stats[(stats["family"] == "layer_single_head") & stats["primary"].astype(bool)] if len(stats) else stats
    if rows.empty:
        return None
    panels = sorted(rows[["task", "model", "importance_method", "recovery_epochs"]].drop_duplicates()
                    .itertuples(index=False, name=None))
    seeds = collapse_draws(results, metric)
    fig, axes = _figure(1, len(panels), 4.2, 3.4)
    c, rng = color("layer-single-head"), difference_range(metric)
    show_task = len({p[0] for p in panels}) > 1
    show_m = len({p[2] for p in panels}) > 1
    for ax, (task, model, method, rec) in zip(axes.flat, panels):
        g = rows[(rows["task"] == task) & (rows["model"] == model) & (rows["importance_method"] == method)
                 & (rows["recovery_epochs"] == rec)].sort_values("layer")
        x, y = g["layer"].to_numpy(int), g["difference"].to_numpy(float)
        lo, hi = g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float)
        sig = (g["p_adjusted"] < alpha).to_numpy(bool)
        ok = np.isfinite(lo) & np.isfinite(hi)
        ax.axhline(0, color=color("none"), lw=0.9, ls="--", label="unpruned baseline")
        ax.errorbar(x[ok], y[ok], yerr=[y[ok] - lo[ok], hi[ok] - y[ok]], fmt="none", ecolor=c, capsize=4, lw=1.2)
        ax.scatter(x[sig], y[sig], color=c, s=30, zorder=3, label=f"Holm p < {alpha:g}")
        ax.scatter(x[~sig], y[~sig], facecolor="white", edgecolor=c, s=30, zorder=3, label="not significant")
        ys = [0.0] + list(y) + list(lo[ok]) + list(hi[ok])
        s = seeds[(seeds["task"] == task) & (seeds["model"] == model) & (seeds["recovery_epochs"] == rec)
                  & (seeds["arch"] != "single-head")]
        base = s[s["strategy"] == "none"].set_index("seed")["value"]
        lay = s[(s["strategy"] == "layer-single-head") & (s["importance_method"] == method)]
        if len(base) and lay["seed"].nunique() <= FEW_SEEDS:
            d = lay["value"].to_numpy(float) - base.reindex(lay["seed"]).to_numpy(float)
            keep = np.isfinite(d)
            jit = (lay["seed"].rank(method="dense").to_numpy(float) - 1) * 0.05 - 0.1
            ax.scatter(lay["layer"].to_numpy(float)[keep] + jit[keep], d[keep], color=c, s=8, alpha=0.45,
                       linewidth=0, zorder=2, label="seeds")
            ys += list(d[keep])
        ax.set_xticks(x, [f"L{v}" for v in x])
        ax.set_ylim(*_limits(ys, rng))
        ax.set(xlabel="the one layer reduced to its most important head", ylabel=f"{metric} difference",
               title=(f"{task}: " if show_task else "") + model + (f" [{method}]" if show_m else "")
               + (f" +{rec:g}ep" if rec else ""))
    _legend(fig, axes)
    _suptitle(fig, "One layer at a time (Michel et al. Table 2): change against the unpruned model fine-tuned for "
                   "as long; bars: unadjusted 95% t-interval over seeds (3+ seeds)")
    return save(fig, path)


def speedup(summary: pd.DataFrame, results: pd.DataFrame, path, metric: str | None = None) -> Path | None:
    """Michel et al. Fig. 5: the metric against the measured speed-up of the physically pruned
    model (latency unpruned / pruned), one point per condition, seeds as dots."""
    metric = metric or sweep_metric(results)
    if "speedup" not in results.columns or not results["speedup"].notna().any():
        return None
    r = results[results["speedup"].notna() & (results["arch"] != "single-head") & (results["recovery_epochs"] == 0)]
    if r.empty:
        return None
    models = sorted(r[["task", "model"]].drop_duplicates().itertuples(index=False, name=None))
    fig, axes = _figure(1, len(models), 4.4, 3.4)
    rng = metric_range(metric)
    for ax, (task, model) in zip(axes.flat, models):
        sub = r[(r["task"] == task) & (r["model"] == model)]
        ys = list(sub[metric])
        base = results[(results["task"] == task) & (results["model"] == model) & (results["strategy"] == "none")
                       & (results["arch"] != "single-head") & (results["recovery_epochs"] == 0)]
        if len(base):
            ax.scatter([1.0], [base[metric].mean()], color=color("none"), marker="s", s=30, label="none (1x)", zorder=3)
            ys.append(base[metric].mean())
        for strategy, g in sub.groupby("strategy", sort=False):
            m = g.groupby("k").agg(x=("speedup", "mean"), y=(metric, "mean")).reset_index().sort_values("x")
            ax.plot(m["x"], m["y"], marker="o", color=color(strategy), label=strategy, lw=1.2)
            if g["seed"].nunique() <= FEW_SEEDS:
                ax.scatter(g["speedup"], g[metric], color=color(strategy), s=7, alpha=0.4, linewidth=0)
        ax.set_ylim(*_limits(ys, rng))
        ax.set(title=model, xlabel="speed-up (latency unpruned / pruned)", ylabel=metric)
    _legend(fig, axes)
    _suptitle(fig, f"{metric} against the speed-up of the physically pruned model (Michel et al. Fig. 5), "
                   "without recovery fine-tuning; the grey square is the unpruned model")
    return save(fig, path)
