"""Seaborn/matplotlib figures, each written as PNG (150 dpi) and PDF into analysis/figures/.

Rules every figure follows (issue 11, item 13): axes stay inside the metric's range; every curve
starts at K = 0 (the unpruned model); a strategy has one colour everywhere (``color``); with few
seeds the seeds are drawn as dots; no text is placed inside an axes (p-values go in tick labels
and legends), so no label can overlap a bar or an error bar. The numbers come from summary.csv
and stats.csv (and the raw per-seed values for the dots), so the figures, the report and the
tables agree. Figures are drawn on matplotlib Figure objects, never through pyplot's global
state, so they never pop up or leak, and work headless.
"""

from __future__ import annotations

import sys
import textwrap
import zlib

import matplotlib

if "matplotlib.pyplot" not in sys.modules:
    # Headless default, set before anything imports pyplot (seaborn does). A session that already
    # picked a backend (e.g. a notebook) keeps its own.
    matplotlib.use("Agg")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from headsweep.trials import layout  # noqa: E402
from headsweep.trials.schema import STRATEGY_ORDER  # noqa: E402

from .conditions import as_dict, collapse_draws, label, reference, several_methods, sweep_metric  # noqa: E402
from .load import write_figure  # noqa: E402
from .stats import difference_range, metric_range  # noqa: E402

STYLE = {"style": "whitegrid", "context": "notebook"}
FEW_SEEDS = 8            # up to this many seeds, each is drawn as a dot
DPI = 150
# Every figure this module may write, in reading order (analyze() clears stale ones).
FIGURES = ("metric_vs_k", "gap_vs_k", "heads_by_layer", "single_vs_multi", "layer_single_head", "per_head", "speedup",
           "importance_heatmaps", "rank_stability")
CURVE_STRATEGIES = ("top", "bottom", "random", "iterative")

_BASE = sns.color_palette("colorblind", 10)
# One colour per strategy in STRATEGY_ORDER ("none", the baseline, in grey), then the one-head
# architecture; any other name gets a stable colour from its hash, so a new strategy is never
# drawn in a colour that changes between figures or runs.
PALETTE = {"none": (0.35, 0.35, 0.35)}
for _i, _s in enumerate(STRATEGY_ORDER[1:]):
    PALETTE[_s] = _BASE[_i % len(_BASE)]
PALETTE["one-head arch"] = _BASE[(len(STRATEGY_ORDER) - 1) % len(_BASE)]
_EXTRA = sns.color_palette("dark", 10)


def color(name: str):
    return PALETTE.get(name) or _EXTRA[zlib.crc32(name.encode()) % len(_EXTRA)]


def figure_path(sweep_dir, stem: str, fmt: str = "png") -> Path:
    return Path(sweep_dir) / layout.figure_file(stem, fmt)


def _figure(nrows: int, ncols: int, w: float, h: float, **kw):
    with sns.axes_style(STYLE["style"]), sns.plotting_context(STYLE["context"], font_scale=0.8):
        fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _suptitle(fig, text: str, fontsize: int = 8) -> None:
    """A figure title wrapped to the figure's width (a long line would be cut at the edges)."""
    width = max(30, int(fig.get_figwidth() * 120 / fontsize))
    fig.suptitle(textwrap.fill(text, width), fontsize=fontsize)


def save(fig, path) -> Path:
    """PNG (at DPI) and PDF side by side; returns the PNG's path."""
    path = Path(path).with_suffix(".png")
    for i, fmt in enumerate(layout.FIGURE_FORMATS):
        write_figure(path.with_suffix(f".{fmt}"), fig, dpi=DPI)
        if i == 0:   # the layout is solved by the first save; the others reuse it (half the cost)
            fig.set_layout_engine("none")
    return path


def _limits(values, rng, pad: float = 0.06):
    """y-limits around the plotted values, never outside the metric's range."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if not len(v):
        return rng if np.all(np.isfinite(rng)) else (0, 1)
    lo, hi = v.min(), v.max()
    span = max(hi - lo, 1e-3)
    return (max(rng[0], lo - pad * span), min(rng[1], hi + pad * span))


def _primary(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[~summary["extra_eval"].astype(bool)] if "extra_eval" in summary.columns else summary


def _panels(df: pd.DataFrame, methods: bool):
    """(row keys, column keys): rows = (criterion, recovery), columns = (task, model)."""
    cols = sorted(df[["task", "model"]].drop_duplicates().itertuples(index=False, name=None))
    m = sorted(x for x in df["importance_method"].unique() if x) if methods else [""]
    recs = sorted(df["recovery_epochs"].unique()) or [0.0]
    return [(mm, r) for mm in (m or [""]) for r in recs], cols


def _title(task, model, method, rec, show_task, show_rec):
    t = (f"{task}: " if show_task else "") + model + (f" [{method}]" if method else "")
    return t + (f" — recovery {rec:g} epoch(s)" if show_rec else "")


def _seed_values(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    return collapse_draws(results, metric)


def metric_vs_k(summary: pd.DataFrame, stats: pd.DataFrame, results: pd.DataFrame, path, alpha: float = 0.05,
                metric: str | None = None, prunable: pd.DataFrame | None = None,
                margin: float | None = None) -> Path | None:
    """The metric against the fraction of heads removed, one line per strategy starting at K = 0
    from its own baseline (conditions.reference: the `none` with the same recovery), a band for
    the bounded interval over seeds, seeds as dots, random draws as crosses; a filled marker where
    the Holm-adjusted primary test against that baseline is below alpha. With ``margin``: the
    non-inferiority margin as a hatched band under the baseline; with ``prunable`` (prunable.csv)
    a star at each strategy's prunable K (every K up to it shown non-inferior)."""
    metric = metric or sweep_metric(results)
    s = _primary(summary)
    multi = s[(s["arch"] != "single-head") & (s["arch_init"] != "scratch")]
    pruned = multi[multi["strategy"].isin(CURVE_STRATEGIES + ("single-head",))]
    if pruned.empty:
        return None
    methods = several_methods(results)
    rows, cols = _panels(pruned, methods)
    conds = [as_dict(r) for r in s.to_dict("records")]
    seeds = _seed_values(results, metric)
    sig = set()
    if len(stats):
        p = stats[(stats["family"].isin(["vs_baseline", "multi_vs_single"])) & stats["primary"].astype(bool)
                  & (stats["p_adjusted"] < alpha)]
        sig = set(zip(p["task"], p["model"], p["group_b"]))
    rng = metric_range(metric)
    fig, axes = _figure(len(rows), len(cols), 4.6, 3.4)
    show_task = len({t for t, _ in cols}) > 1
    for j, (task, model) in enumerate(cols):
        for i, (method, rec) in enumerate(rows):
            ax, ys = axes[i, j], []
            sub = pruned[(pruned["task"] == task) & (pruned["model"] == model) & (pruned["recovery_epochs"] == rec)
                         & pruned["importance_method"].isin([method, ""] if method else pruned["importance_method"])]
            ax.set_title(_title(task, model, method, rec, show_task, any(r != 0 for _, r in rows)))
            ax.set(xlabel="fraction of heads removed (K / all heads)", ylabel=metric)
            if sub.empty:
                continue
            base, _ = reference(as_dict(sub.iloc[0]), conds)
            b = s[(s["task"] == task) & (s["model"] == model) & (s["strategy"] == "none") & (s["arch"] != "single-head")
                  & (s["variant"] == base["variant"]) & (s["recovery_epochs"] == base["recovery_epochs"])].iloc[0] \
                if base is not None else None
            if b is not None:
                ax.axhline(b["mean"], color=color("none"), ls="--", lw=1.1, label="none (baseline)")
                ax.scatter([0.0], [b["mean"]], color=color("none"), s=26, zorder=4)   # K = 0 on every curve
                if np.isfinite(b["ci_low"]):
                    ax.axhspan(b["ci_low"], b["ci_high"], color=color("none"), alpha=0.12, linewidth=0)
                ys += [b["mean"], b["ci_low"], b["ci_high"]]
                if margin:
                    ax.axhspan(b["mean"] - margin, b["mean"], facecolor="none", edgecolor="0.55", hatch="////",
                               linewidth=0, label=f"non-inferiority margin ({100 * margin:g} point(s) below the baseline)")
                    ys.append(b["mean"] - margin)
            for (strategy, per_layer, meth), d in sub.groupby(["strategy", "per_layer", "importance_method"], sort=False):
                d = d.sort_values("k_fraction")
                c = color(strategy)
                name = strategy + (" (per layer)" if per_layer else "")
                x, y = d["k_fraction"].to_numpy(float), d["mean"].to_numpy(float)
                lo, hi = d["ci_low"].to_numpy(float), d["ci_high"].to_numpy(float)
                filled = [(task, model, label(as_dict(r), methods)) in sig for r in d.to_dict("records")]
                ys += list(y) + list(lo) + list(hi)
                if strategy == "single-head":
                    ax.errorbar(x, y, yerr=[np.nan_to_num(y - lo), np.nan_to_num(hi - y)], fmt="D", color=c,
                                capsize=3, label=name, mfc=c if all(filled) else "white")
                else:
                    if b is not None:   # every curve starts at K = 0: the unpruned model it was cut from
                        x, y = np.concatenate([[0.0], x]), np.concatenate([[b["mean"]], y])
                        lo, hi = np.concatenate([[np.nan], lo]), np.concatenate([[np.nan], hi])
                    # iterative follows bottom-K until the re-scoring matters: dash-dot keeps both visible
                    ls = ":" if per_layer else "-." if strategy == "iterative" else "-"
                    ax.plot(x, y, color=c, ls=ls, lw=1.6, label=name)
                    f = np.array(filled, bool)
                    xs, ys_ = x[len(x) - len(f):], y[len(y) - len(f):]   # the measured K (K = 0 is drawn grey)
                    ax.scatter(xs[f], ys_[f], color=c, s=22, zorder=3)
                    ax.scatter(xs[~f], ys_[~f], facecolor="white", edgecolor=c, s=22, zorder=3)
                    ok = np.isfinite(lo) & np.isfinite(hi)
                    if ok.any():
                        ax.fill_between(x[ok], lo[ok], hi[ok], color=c, alpha=0.15, linewidth=0)
                    star = _prunable_point(prunable, task, model, strategy, meth, per_layer, rec, d)
                    if star is not None:
                        ax.scatter(*star, marker="*", s=150, color=c, edgecolor="k", linewidth=0.7, zorder=5,
                                   label="prunable K (every K up to it non-inferior)")
                pts = seeds[(seeds["task"] == task) & (seeds["model"] == model) & (seeds["strategy"] == strategy)
                            & (seeds["per_layer"] == per_layer) & (seeds["recovery_epochs"] == rec)
                            & (seeds["importance_method"] == meth) & (seeds["arch"] != "single-head")]
                if len(pts) and pts["seed"].nunique() <= FEW_SEEDS:
                    ax.scatter(pts["k_fraction"], pts["value"], color=c, s=7, alpha=0.45, linewidth=0, zorder=2)
                    ys += list(pts["value"])
                if strategy == "random":
                    draws = results[(results["task"] == task) & (results["model"] == model)
                                    & (results["strategy"] == "random") & (results["recovery_epochs"] == rec)
                                    & (results["per_layer"] == per_layer)]
                    if draws["draw"].nunique() > 1:
                        ax.scatter(draws["k_fraction"], draws[metric], marker="x", color=c, s=9, alpha=0.35,
                                   linewidth=0.7, zorder=1, label="random (each draw)")
                        ys += list(draws[metric])
            ax.set_ylim(*_limits(ys, rng))
            ax.set_xlim(left=-0.02)
    _legend(fig, axes)
    _suptitle(fig, f"{metric} vs K. Bands: 95% interval over seeds (logit-scale t, inside the metric's range; 3+ "
                   f"seeds); dots: seeds; crosses: random draws; filled: Holm p < {alpha:g} vs the unpruned baseline"
              + (f"; hatched: the non-inferiority margin; star: the prunable K ({Path(layout.PRUNABLE).name})"
                 if margin else ""))
    return save(fig, path)


def _prunable_point(prunable, task, model, strategy, method, per_layer, rec, d: pd.DataFrame):
    """(x, y) of a curve's prunable K, or None (no prunable.csv row, or K = 0)."""
    if prunable is None or prunable.empty:
        return None
    r = prunable[(prunable["task"] == task) & (prunable["model"] == model) & (prunable["strategy"] == strategy)
                 & (prunable["importance_method"].fillna("") == method)
                 & (prunable["per_layer"].astype(bool) == bool(per_layer)) & (prunable["recovery_epochs"] == rec)]
    if r.empty or not r["prunable_k"].iloc[0] > 0:
        return None
    at = d[d["k"] == int(r["prunable_k"].iloc[0])]
    return (float(at["k_fraction"].iloc[0]), float(at["mean"].iloc[0])) if len(at) else None


def _legend(fig, axes):
    seen = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
        if ax.get_legend():
            ax.get_legend().remove()
    if seen:   # below the panels: clear of the title and of every data mark
        fig.legend(seen.values(), seen.keys(), loc="outside lower center", ncols=min(len(seen), 4), frameon=False,
                   fontsize=8)


GAPS = (("bottom", "top"), ("random", "top"))


def gap_vs_k(stats: pd.DataFrame, results: pd.DataFrame, path, metric: str | None = None) -> Path | None:
    """The main question: top - bottom and top - random against K (0 at K = 0), with the
    unadjusted 95% interval of each K's paired difference (stats.csv, top_bottom_random) and each
    seed's difference as a dot; the legend gives each gap's curve-level Holm p."""
    metric = metric or sweep_metric(results)
    if stats.empty:
        return None
    prim = stats[stats["primary"].astype(bool)]
    rows_ = prim[(prim["family"] == "top_bottom_random") & (prim["strategy_b"] == "top")
                 & prim["strategy_a"].isin(["bottom", "random"])]
    if rows_.empty:
        return None
    methods = several_methods(results)
    pl = not (~rows_["per_layer"].astype(bool)).any()   # K as a count of the whole model, else per layer
    panels, cols = _panels(rows_.rename(columns={"variant_b": "variant"}), methods)
    curve = prim[prim["family"] == "curve"]
    seeds = _seed_values(results, metric)
    fig, axes = _figure(len(panels), len(cols), 4.6, 3.4)
    rng = difference_range(metric)
    show_task = len({t for t, _ in cols}) > 1
    for j, (task, model) in enumerate(cols):
        for i, (method, rec) in enumerate(panels):
            ax, ys, ptxt = axes[i, j], [0.0], []
            ax.axhline(0, color="0.3", lw=0.8)
            title = _title(task, model, method, rec, show_task, any(r != 0 for _, r in panels))
            ax.set(xlabel="fraction of heads removed (K / all heads)", ylabel=f"{metric} difference")
            for ref, cond in GAPS:
                d = rows_[(rows_["task"] == task) & (rows_["model"] == model) & (rows_["recovery_epochs"] == rec)
                          & (rows_["strategy_a"] == ref) & (rows_["per_layer"].astype(bool) == pl)
                          & ((rows_["importance_method"] == method) if method else True)].sort_values("k_fraction")
                if d.empty:
                    continue
                cv = curve[(curve["task"] == task) & (curve["model"] == model) & (curve["recovery_epochs"] == rec)
                           & (curve["strategy_a"] == ref) & (curve["strategy_b"] == cond)
                           & (curve["per_layer"].astype(bool) == pl)
                           & ((curve["importance_method"] == method) if method else True)]
                if len(cv) and np.isfinite(cv["p_adjusted"].iloc[0]):
                    ptxt.append(f"{cond} − {ref} {cv['p_adjusted'].iloc[0]:.2g}")
                c = color(ref)
                x = np.concatenate([[0.0], d["k_fraction"].to_numpy(float)])
                y = np.concatenate([[0.0], d["difference"].to_numpy(float)])
                lo = np.concatenate([[0.0], d["ci_low"].to_numpy(float)])
                hi = np.concatenate([[0.0], d["ci_high"].to_numpy(float)])
                ax.plot(x, y, color=c, marker="o", ms=4, lw=1.6, label=f"{cond} − {ref}")
                ok = np.isfinite(lo) & np.isfinite(hi)
                ax.errorbar(x[ok], y[ok], yerr=[y[ok] - lo[ok], hi[ok] - y[ok]], fmt="none", ecolor=c, capsize=3, lw=1)
                ys += list(y) + list(lo[ok]) + list(hi[ok])
                sel = (seeds["task"] == task) & (seeds["model"] == model) & (seeds["recovery_epochs"] == rec) & \
                      (seeds["per_layer"].astype(bool) == pl) & (seeds["arch"] != "single-head")
                a = seeds[sel & (seeds["strategy"] == ref) & ((seeds["importance_method"] == method) if method and
                                                              ref != "random" else True)]
                b = seeds[sel & (seeds["strategy"] == cond) & ((seeds["importance_method"] == method) if method
                                                               else True)]
                pa = a.pivot_table(index="seed", columns="k_fraction", values="value")
                pb = b.pivot_table(index="seed", columns="k_fraction", values="value")
                diff = (pb - pa).stack().rename("d").reset_index()
                if len(diff) and diff["seed"].nunique() <= FEW_SEEDS:
                    ax.scatter(diff["k_fraction"], diff["d"], color=c, s=7, alpha=0.45, linewidth=0, zorder=2)
                    ys += list(diff["d"])
            ptitle = "" if not ptxt else ("\ncurve-level Holm p: " + ptxt[0] if len(ptxt) == 1 else
                                          "\ncurve-level Holm p:\n" + "\n".join(ptxt))
            ax.set_title(title + (" (per layer)" if pl else "") + ptitle, fontsize=9)
            ax.set_ylim(*_limits(ys, rng))
            ax.set_xlim(left=-0.02)
    _legend(fig, axes)
    _suptitle(fig, "The gap: top-K minus bottom-K / random-K (below 0: the important heads matter more). Bars: "
                   "unadjusted 95% t-interval over seeds (3+ seeds); dots: seeds")
    return save(fig, path)


def show(path) -> None:
    """Display a saved figure in a notebook, or say that it was skipped."""
    from IPython.display import Image, display

    if path is None:
        print("figure skipped: this sweep has no data for it")
    else:
        display(Image(filename=str(path)))


def make_figures(results: pd.DataFrame, importance: pd.DataFrame | None, summary: pd.DataFrame, stats: pd.DataFrame,
                 fig_dir, alpha: float = 0.05, corr: dict | None = None, prunable: pd.DataFrame | None = None,
                 margin: float | None = None, per_head: pd.DataFrame | None = None) -> dict[str, Path]:
    """Every figure that the data allows; returns stem -> PNG path (skipped ones absent)."""
    from . import figures_extra as fx
    from . import figures_heads as fh
    from . import figures_importance as fi
    from .importance import seed_correspondence, shared_only

    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    path = {stem: fig_dir / Path(layout.figure_file(stem)).name for stem in FIGURES}
    metric = sweep_metric(results)
    corr = seed_correspondence(results) if corr is None else corr
    shared = shared_only(importance, corr)
    out = {
        "metric_vs_k": metric_vs_k(summary, stats, results, path["metric_vs_k"], alpha, metric, prunable, margin),
        "heads_by_layer": fh.heads_by_layer(results, importance, path["heads_by_layer"]),
        "per_head": fh.per_head_map(per_head, path["per_head"], alpha),
        "gap_vs_k": gap_vs_k(stats, results, path["gap_vs_k"], metric),
        "single_vs_multi": fx.single_vs_multi(summary, stats, results, path["single_vs_multi"], alpha, metric),
        "layer_single_head": fx.layer_single_head(stats, results, path["layer_single_head"], alpha, metric),
        "speedup": fx.speedup(summary, results, path["speedup"], metric),
        "importance_heatmaps": fi.importance_heatmaps(shared, path["importance_heatmaps"]),
        "rank_stability": fi.rank_stability_plot(shared, path["rank_stability"]),
    }
    return {k: v for k, v in out.items() if v is not None}
