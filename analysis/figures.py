"""Seaborn figures, written as PNG files (atomically) into analysis/figures/.

Figures are drawn on matplotlib Figure objects, not through pyplot's global state,
so they never pop up, never leak, and work on a headless machine. Seaborn styles
are applied with context managers so a user's own matplotlib settings survive.
"""

from __future__ import annotations

import sys

import matplotlib

if "matplotlib.pyplot" not in sys.modules:
    # Headless default, set before anything imports pyplot (seaborn does). A session
    # that already picked a backend (e.g. a notebook) keeps its own.
    matplotlib.use("Agg")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from trials import layout  # noqa: E402
from trials.schema import STRATEGY_ORDER  # noqa: E402

from .compare import primary  # noqa: E402
from .importance import consistent_heads, importance_matrix, mean_importance, rank_stability  # noqa: E402
from .load import write_figure  # noqa: E402

# One colour per strategy, the same in every figure (the baseline "none" is drawn in grey).
PALETTE = dict(zip(STRATEGY_ORDER[1:], sns.color_palette("colorblind", len(STRATEGY_ORDER) - 1)))
STYLE = {"style": "whitegrid", "context": "notebook"}
# Every figure this module may write, in reading order (analyze() clears stale ones).
FIGURES = ("accuracy_vs_k", "importance_heatmaps", "single_vs_multi", "rank_stability")


def figure_path(sweep_dir, stem: str, fmt: str = "png") -> Path:
    return Path(sweep_dir) / layout.figure_file(stem, fmt)


def _figure(nrows: int, ncols: int, w: float, h: float, **kw):
    with sns.axes_style(STYLE["style"]), sns.plotting_context(STYLE["context"], font_scale=0.8):
        fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _band(ax, x, lo, hi, color, alpha=0.18):
    ok = ~(np.isnan(lo) | np.isnan(hi))
    if ok.any():
        ax.fill_between(x[ok], lo[ok], hi[ok], color=color, alpha=alpha, linewidth=0)


def accuracy_vs_k(summary: pd.DataFrame, stats: pd.DataFrame, path, alpha: float = 0.05) -> Path | None:
    """Mean accuracy vs fraction of heads removed: one line per strategy with its 95%
    t-interval band, one panel per model (rows: recovery epochs), the unpruned
    baseline as a dashed line with its band, '*' where the Holm-adjusted primary
    p against the baseline is below alpha."""
    multi = summary[summary["arch"] != "single-head"]
    if multi.empty:
        return None
    models = sorted(multi["model"].unique())
    recs = sorted(multi.loc[multi["strategy"] != "none", "recovery_epochs"].unique()) or [0.0]
    marks = primary(stats) if len(stats) else stats
    marks = marks[(marks["family"] == "vs_baseline") & (marks["p_adjusted"] < alpha)] if len(marks) else marks
    fig, axes = _figure(len(recs), len(models), 4.6, 3.4, sharey=True)
    for j, model in enumerate(models):
        base = multi[(multi["model"] == model) & (multi["strategy"] == "none")].sort_values("recovery_epochs")
        for i, rec in enumerate(recs):
            ax = axes[i, j]
            if len(base):
                b = base.iloc[0]
                ax.axhline(b["mean"], color="0.25", ls="--", lw=1.2, label="none (baseline)")
                if not np.isnan(b["ci_low"]):
                    ax.axhspan(b["ci_low"], b["ci_high"], color="0.5", alpha=0.15, linewidth=0)
            sub = multi[(multi["model"] == model) & (multi["recovery_epochs"] == rec) & (multi["strategy"] != "none")]
            for (strategy, per_layer), d in sub.groupby(["strategy", "per_layer"], sort=False):
                d = d.sort_values("k_fraction")
                color = PALETTE.get(strategy, "0.4")
                label = strategy + (" (per layer)" if per_layer else "")
                x = d["k_fraction"].to_numpy(float)
                if strategy == "single-head":  # one point at its own K
                    ax.errorbar(x, d["mean"], yerr=[d["mean"] - d["ci_low"], d["ci_high"] - d["mean"]],
                                fmt="D", color=color, capsize=3, label=label)
                else:
                    sns.lineplot(x=x, y=d["mean"].to_numpy(), ax=ax, color=color, marker="o", label=label,
                                 linestyle=":" if per_layer else "-", errorbar=None)
                    _band(ax, x, d["ci_low"].to_numpy(float), d["ci_high"].to_numpy(float), color)
                m = marks[(marks["model"] == model) & (marks["strategy_b"] == strategy)
                          & (marks["recovery_epochs"] == rec)] if len(marks) else marks
                for _, r in m.iterrows():
                    pt = d[d["k"] == r["k"]]
                    if len(pt):
                        top = pt["ci_high"].iloc[0] if not np.isnan(pt["ci_high"].iloc[0]) else pt["mean"].iloc[0]
                        ax.annotate("*", (pt["k_fraction"].iloc[0], top), textcoords="offset points", xytext=(0, 1),
                                    ha="center", va="bottom", color=color, fontsize=13, fontweight="bold")
            title = model + (f" — recovery {rec:g} epoch(s)" if len(recs) > 1 else "")
            ax.set(title=title, xlabel="fraction of heads removed (K / all heads)", ylabel="accuracy")
            if ax.get_legend():
                ax.get_legend().remove()
    handles, labels = axes[0, 0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    for ax in axes.flat:  # a panel may miss a strategy; collect every label once
        for h, l in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(l, h)
    fig.legend(seen.values(), seen.keys(), loc="outside right upper", frameon=False)
    fig.suptitle(f"Bands: 95% t-interval over seeds.  * Holm-adjusted paired t-test p < {alpha:g} vs baseline",
                 fontsize=9)
    return write_figure(path, fig)


def importance_heatmaps(importance: pd.DataFrame | None, path, score: str = "score") -> Path | None:
    """Layer x head mean importance per model; ▲/▼ mark heads in the top/bottom decile in every seed."""
    if importance is None or importance.empty:
        return None
    mean = mean_importance(importance, score)
    cons = consistent_heads(importance, score=score)
    models = sorted(mean["model"].unique())
    ncols = min(len(models), 3)
    nrows = int(np.ceil(len(models) / ncols))
    fig, axes = _figure(nrows, ncols, 4.8, 3.8)
    for ax, model in zip(axes.flat, models):
        mat = importance_matrix(mean, model)
        sns.heatmap(mat, ax=ax, cmap="viridis", cbar_kws={"label": f"mean {score}"}, square=False)
        c = cons[cons["model"] == model]
        rows, cols = list(mat.index), list(mat.columns)
        for _, r in c[c["always_top"] | c["always_bottom"]].iterrows():
            ax.text(cols.index(r["head"]) + 0.5, rows.index(r["layer"]) + 0.5, "▲" if r["always_top"] else "▼",
                    ha="center", va="center", color="white" if r["always_bottom"] else "black", fontsize=8)
        n = int(mean.loc[mean["model"] == model, "n_seeds"].max())
        ax.set(title=f"{model} (mean of {n} seed(s))", xlabel="head", ylabel="layer")
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    fig.suptitle("Head importance; ▲ top decile in every seed, ▼ bottom decile in every seed", fontsize=9)
    return write_figure(path, fig)


def single_vs_multi(results: pd.DataFrame, stats: pd.DataFrame, path, alpha: float = 0.05) -> Path | None:
    """Multi-head baseline vs single-head strategy vs one-head architecture:
    bars = mean with 95% t-interval, dots = seeds, text = Holm-adjusted primary p."""
    from .stats import t_interval

    fam = primary(stats) if len(stats) else stats
    fam = fam[fam["family"] == "multi_vs_single"] if len(fam) else fam
    if fam.empty:
        return None
    models = sorted(fam["model"].unique())
    fig, axes = _figure(1, len(models), 5.0, 3.8, sharey=True)
    for ax, model in zip(axes.flat, models):
        f = fam[fam["model"] == model]
        r = results[results["model"] == model]
        # group a is the multi-head baseline (recovery 0 serves all); each b is named by its row.
        base = r[(r["arch"] != "single-head") & (r["strategy"] == "none")]
        base = base[base["recovery_epochs"] == base["recovery_epochs"].min()]
        groups = [f["group_a"].iloc[0]] + list(f["group_b"])
        parts = [base.assign(group=groups[0])]
        for _, c in f.iterrows():
            sel = r[(r["variant"] == c["variant_b"]) & (r["strategy"] == c["strategy_b"]) & (r["k"] == c["k"])
                    & (r["per_layer"] == c["per_layer"]) & (r["recovery_epochs"] == c["recovery_epochs"])]
            parts.append(sel.assign(group=c["group_b"]))
        rows = pd.concat(parts)[["group", "accuracy", "seed"]]
        long = rows.reset_index(drop=True)
        sns.barplot(data=long, x="group", y="accuracy", order=groups, errorbar=None, ax=ax,
                    color=sns.color_palette("colorblind")[0], alpha=0.45)
        sns.stripplot(data=long, x="group", y="accuracy", order=groups, ax=ax, color="k", size=4, jitter=0.15)
        for i, g in enumerate(groups):
            mean, lo, hi = t_interval(long.loc[long["group"] == g, "accuracy"])
            if not np.isnan(lo):
                ax.errorbar(i, mean, yerr=[[mean - lo], [hi - mean]], color="k", capsize=5, lw=1.5)
        for i, (_, c) in enumerate(f.iterrows(), start=1):
            p = c["p_adjusted"]
            txt = "n/a" if np.isnan(p) else f"Holm p={p:.2g}" + (" *" if p < alpha else "")
            ax.annotate(txt, (i, 1.0), ha="center", va="bottom", fontsize=8)
        ax.set(title=model, xlabel="", ylabel="accuracy", ylim=(0, 1.08))
        ax.set_xticks(range(len(groups)), ["multi-head\n(none)"] + [g.replace(" (", "\n(") for g in groups[1:]])
    fig.suptitle("Multi- vs single-head: bars 95% t-interval over seeds; Holm p of the paired t-test vs the "
                 "first bar", fontsize=9)
    return write_figure(path, fig)


def rank_stability_plot(importance: pd.DataFrame | None, path, score: str = "score") -> Path | None:
    """Pairwise Spearman / Kendall correlation between seeds' head rankings, per model."""
    if importance is None or importance.empty:
        return None
    pairs = rank_stability(importance, score)
    if pairs.empty:
        return None
    long = pairs.melt(id_vars=["model", "seed_a", "seed_b"], value_vars=["spearman", "kendall"],
                      var_name="correlation", value_name="value")
    fig, axes = _figure(1, 1, 5.2, 3.6)
    ax = axes[0, 0]
    sns.boxplot(data=long, x="model", y="value", hue="correlation", ax=ax, fliersize=0, palette="pastel")
    sns.stripplot(data=long, x="model", y="value", hue="correlation", ax=ax, dodge=True, size=3, legend=False,
                  palette={"spearman": "k", "kendall": "k"})
    ax.set(title="Rank stability of head importance across seeds (one dot per seed pair)",
           ylabel="rank correlation", xlabel="", ylim=(min(-0.05, long["value"].min() - 0.05), 1.02))
    ax.title.set_fontsize(9)
    return write_figure(path, fig)


def show(path) -> None:
    """Display a saved figure in a notebook, or say that it was skipped."""
    from IPython.display import Image, display

    if path is None:
        print("figure skipped: this sweep has no data for it")
    else:
        display(Image(filename=str(path)))


def make_figures(results: pd.DataFrame, importance: pd.DataFrame | None, summary: pd.DataFrame,
                 stats: pd.DataFrame, fig_dir, alpha: float = 0.05) -> dict[str, Path]:
    """Every figure that the data allows; returns name -> path (skipped ones absent)."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    path = {stem: fig_dir / Path(layout.figure_file(stem)).name for stem in FIGURES}
    out = {
        "accuracy_vs_k": accuracy_vs_k(summary, stats, path["accuracy_vs_k"], alpha),
        "importance_heatmaps": importance_heatmaps(importance, path["importance_heatmaps"]),
        "single_vs_multi": single_vs_multi(results, stats, path["single_vs_multi"], alpha),
        "rank_stability": rank_stability_plot(importance, path["rank_stability"]),
    }
    return {k: v for k, v in out.items() if v is not None}
