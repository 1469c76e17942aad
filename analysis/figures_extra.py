"""Figures beyond the K curves: multi- vs single-head, one layer at a time (keep: ranked, or the
oracle's best head of Michel et al. section 3.3, Tables 2-3) and efficiency (Michel et al. section
4.3, Table 4).

Same rules as analysis/figures.py: PNG + PDF, one colour per strategy, axes inside the range a
value can take, p-values in tick labels or legends, never inside the axes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from .conditions import ORACLE, as_dict, collapse_draws, label, reference, several_methods, sweep_metric
from .figures import FEW_SEEDS, _figure, _legend, _limits, _primary, _seed_values, _suptitle, color, save
from .stats import difference_range, metric_range


def single_vs_multi(summary: pd.DataFrame, stats: pd.DataFrame, results: pd.DataFrame, path, alpha: float = 0.05,
                    metric: str | None = None) -> Path | None:
    """Multi-head model vs the single-head strategy and the one-head architecture(s): bars = mean
    over seeds with the bounded interval, dots = seeds; the Holm p against the reference is in the
    tick label (never inside the axes)."""
    metric = metric or sweep_metric(results)
    fam = stats[(stats["family"] == "multi_vs_single") & stats["primary"].astype(bool)] if len(stats) else stats
    if fam.empty:
        return None
    s = _primary(summary)
    conds = [as_dict(r) for r in s.to_dict("records")]
    methods = several_methods(results)
    seeds = _seed_values(results, metric)
    cols = sorted(fam[["task", "model"]].drop_duplicates().itertuples(index=False, name=None))
    fig, axes = _figure(1, len(cols), 1.0 + 1.45 * (1 + fam.groupby(["task", "model"]).size().max()), 4.0)
    rng = metric_range(metric)
    for ax, (task, model) in zip(axes.flat, cols):
        bars, ys = [], []
        for c in conds:
            if c["task"] != task or c["model"] != model:
                continue
            if not (c["arch"] == "single-head" or c["strategy"] == "single-head"):
                continue
            ref, _ = reference(c, conds)
            lab = label(c, methods)
            st_ = fam[(fam["task"] == task) & (fam["model"] == model) & (fam["group_b"] == lab)]
            p = st_["p_adjusted"].iloc[0] if len(st_) else np.nan
            ptxt = "Holm p n/a" if not np.isfinite(p) else f"Holm p={p:.2g}" + (" *" if p < alpha else "")
            if ref is not None and all(r[0] != ref for r in bars):
                bars.append((ref, label(ref, methods), "", color("none")))
            bars.append((c, lab, ptxt, color("one-head arch" if c["arch"] == "single-head" else "single-head")))
        ticks = []
        for i, (c, lab, ptxt, col) in enumerate(bars):
            r = s[(s["task"] == c["task"]) & (s["model"] == c["model"]) & (s["variant"] == c["variant"])
                  & (s["strategy"] == c["strategy"]) & (s["k"] == c["k"]) & (s["recovery_epochs"] == c["recovery_epochs"])
                  & (s["arch_init"] == c["arch_init"]) & (s["importance_method"] == c["importance_method"])]
            if r.empty:
                continue
            r = r.iloc[0]
            ax.bar(i, r["mean"], color=col, alpha=0.55, width=0.65)
            if np.isfinite(r["ci_low"]):
                ax.errorbar(i, r["mean"], yerr=[[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]], color="k",
                            capsize=5, lw=1.3)
            pts = seeds[(seeds["task"] == c["task"]) & (seeds["model"] == c["model"]) & (seeds["variant"] == c["variant"])
                        & (seeds["strategy"] == c["strategy"]) & (seeds["recovery_epochs"] == c["recovery_epochs"])
                        & (seeds["arch_init"] == c["arch_init"]) & (seeds["k"] == c["k"])]
            if pts["seed"].nunique() <= FEW_SEEDS:
                jit = np.linspace(-0.12, 0.12, len(pts)) if len(pts) > 1 else np.zeros(len(pts))
                ax.scatter(i + jit, pts["value"], color="k", s=10, zorder=3)
            ys += [r["mean"], r["ci_low"], r["ci_high"]] + list(pts["value"])
            ticks.append((i, textwrap.fill(lab, 15) + (f"\n{ptxt}" if ptxt else "")))
        lo = rng[0] if np.isfinite(rng[0]) else None
        top = _limits(ys + ([lo] if lo is not None else []), rng, pad=0.08)
        ax.set_ylim(*top)
        ax.set_xticks([t for t, _ in ticks], [lab for _, lab in ticks], fontsize=7)
        ax.set(title=(f"{task}: " if len(cols) > 1 and len({t for t, _ in cols}) > 1 else "") + model, ylabel=metric)
    _suptitle(fig, "Multi- vs single-head: bars = mean, 95% logit-scale t-interval over seeds (3+ seeds), dots = "
                   "seeds; Holm p of the paired t-test against the grey bar")
    return save(fig, path)


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
        kept = "best head (oracle, on the evaluation set)" if method == ORACLE else f"head ranked first by {method}"
        ax.set(xlabel="the one layer reduced to one head", ylabel=f"{metric} difference",
               title=(f"{task}: " if show_task else "") + model + f"\nkept: {kept}" + (f" +{rec:g}ep" if rec else ""))
    _legend(fig, axes)
    _suptitle(fig, "One layer at a time reduced to one head (keep: ranked, ours; keep: best, an oracle that tries every "
                   "head on the evaluation set, as Michel et al. section 3.3, Tables 2-3): change against the unpruned "
                   "model fine-tuned for as long; bars: unadjusted 95% t-interval over seeds (3+ seeds)")
    return save(fig, path)


def speedup(summary: pd.DataFrame, results: pd.DataFrame, path, metric: str | None = None) -> Path | None:
    """The metric against the measured speed-up of the physically pruned model (latency unpruned /
    pruned), one point per condition, seeds as dots (Michel et al. section 4.3 reports the speed
    of a 50%-pruned BERT in Table 4)."""
    metric = metric or sweep_metric(results)
    if "speedup" not in results.columns or not results["speedup"].notna().any():
        return None
    r = results[results["speedup"].notna() & (results["arch"] != "single-head") & (results["recovery_epochs"] == 0)
                & (results["strategy"] != "each-head")]
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
    _suptitle(fig, f"{metric} against the speed-up of the physically pruned model (cf. Michel et al. section 4.3, "
                   "Table 4), without recovery fine-tuning; the grey square is the unpruned model")
    return save(fig, path)
