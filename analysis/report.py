"""report.md: the findings in sentences with numbers, generated from the stats table.

Every number in a finding comes from one row of stats.csv (formatted by the
helpers below), and each finding ends with an HTML comment naming its
comparison_id, so the report can be checked against the table mechanically.
"""

from __future__ import annotations

import math

from pathlib import Path

import pandas as pd

from trials import layout

from .compare import power_warnings, primary
from .importance import consistent_heads, rank_stability, stability_summary

FAMILY_TITLES = {
    "vs_baseline": "Against the unpruned baseline",
    "top_bottom_random": "Top vs bottom vs random at equal K",
    "multi_vs_single": "Multi-head vs single-head",
}


def fmt_p(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_is(p: float) -> str:
    """'p = 0.003' or 'p < 0.001' (so a sentence never says 'p = < 0.001')."""
    text = fmt_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def fmt_pts(x: float) -> str:
    """An accuracy difference in percentage points, one decimal."""
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def magnitude_ci(diff: float, lo: float, hi: float) -> tuple[float, float]:
    """CI of |difference|: a drop of 23 points with CI (-25.8, -20.4) reads 20.4 to 25.8."""
    return (-hi, -lo) if diff < 0 else (lo, hi)


def _what(r) -> str:
    """What condition b does, in words."""
    s, k, pct = r["strategy_b"], int(r["k"]), f"{100 * r['k_fraction']:.0f}%"
    if r["arch_b"] == "single-head":
        text = f"the one-head architecture ({r['variant_b']})"
    elif s == "top":
        text = (f"removing the {k} most important heads in each layer" if r["per_layer"]
                else f"removing the {pct} most important heads (K = {k})")
    elif s == "bottom":
        text = (f"removing the {k} least important heads in each layer" if r["per_layer"]
                else f"removing the {pct} least important heads (K = {k})")
    elif s == "random":
        text = (f"removing {k} random heads in each layer" if r["per_layer"]
                else f"removing {pct} of the heads at random (K = {k})")
    elif s == "single-head":
        text = f"keeping only the most important head in each layer (K = {k} removed)"
    else:
        text = r["group_b"]
    if r["recovery_epochs"] and r["arch_b"] != "single-head":
        text += f" with {r['recovery_epochs']:g} epoch(s) of recovery fine-tuning"
    return text


def _evidence(r, ex: pd.DataFrame, alpha: float) -> str:
    """'(95% CI ...; dz ...; Holm p ...)' plus the per-example results, if any."""
    d = r["difference"]
    lo, hi = magnitude_ci(d, r["ci_low"], r["ci_high"])
    n = int(r["n"])
    if math.isnan(r["p"]):
        test = f"not testable across seeds with {n} seed(s)"
    else:
        verdict = "significant" if r["p_adjusted"] < alpha else "not significant"
        test = f"paired t-test over {n} seeds, Holm {p_is(r['p_adjusted'])}, {verdict} at {alpha:g}"
    dz = "n/a" if math.isnan(r["effect_size"]) else f"{r['effect_size']:.2f}"
    text = f"(95% CI {fmt_pts(lo)} to {fmt_pts(hi)}; Cohen's dz = {dz}; {test})"
    mc = ex[ex["test"] == "mcnemar"]
    bs = ex[ex["test"] == "bootstrap"]
    if len(mc) and len(bs):
        m, b = mc.iloc[0], bs.iloc[0]
        text += (f". Per example ({int(m['n_examples'])} examples x {int(m['n_seeds'])} seed(s)): McNemar pooled "
                 f"over seeds Holm {p_is(m['p_adjusted'])}; bootstrap difference {fmt_pts(b['difference'])} "
                 f"points (95% CI {fmt_pts(b['ci_low'])} to {fmt_pts(b['ci_high'])})")
    return text


def finding(r, ex: pd.DataFrame, alpha: float = 0.05) -> str:
    """One bullet for one comparison; r is its primary stats row, ex its per-example rows."""
    d = r["difference"]
    verb = "lowers" if d < 0 else "raises" if d > 0 else "changes"
    model = r["model"]
    if r["family"] == "vs_baseline" or r["arch_b"] == "single-head" or r["strategy_b"] == "single-head":
        subject = _what(r)
        if r["family"] == "multi_vs_single":
            sentence = f"{model}: {subject} {verb} accuracy relative to the multi-head model by {fmt_pts(abs(d))} points"
        else:
            sentence = f"{model}: {subject} {verb} accuracy by {fmt_pts(abs(d))} points"
    else:
        k = f"K = {int(r['k'])}" + (" per layer" if r["per_layer"] else f" ({100 * r['k_fraction']:.0f}% of heads)")
        rec = f", {r['recovery_epochs']:g} recovery epoch(s)" if r["recovery_epochs"] else ""
        sentence = (f"{model}, {k}{rec}: removing {r['strategy_b']} heads instead of {r['strategy_a']} heads "
                    f"{verb} accuracy by {fmt_pts(abs(d))} points")
    return f"- {sentence} {_evidence(r, ex, alpha)}. <!-- id: {r['comparison_id']} -->"


def _table(df: pd.DataFrame) -> str:
    """A plain Markdown table (no tabulate dependency)."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def build_report(name: str, results: pd.DataFrame, stats: pd.DataFrame, summary: pd.DataFrame,
                 importance: pd.DataFrame | None = None, notes=(), alpha: float = 0.05, figures=None) -> str:
    """The whole report as Markdown text."""
    out = [f"# Head-removal sweep `{name}`", ""]
    if results.empty:
        return "\n".join(out + ["No finished trials yet: nothing to analyse.", ""] + [f"- {n}" for n in notes] + [""])
    seeds = sorted(results["seed"].unique())
    out += [f"{len(results)} evaluated trials; models: {', '.join(sorted(results['model'].unique()))}; "
            f"strategies: {', '.join(sorted(results['strategy'].unique()))}; "
            f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}).", "",
            "**How to read this.** Differences are accuracy in percentage points, condition minus reference, "
            "paired by seed. THE p-value of each comparison is a paired t-test over seeds, Holm-corrected within "
            "its family (the three sections below); Cohen's dz is the mean paired difference over its standard "
            "deviation. The per-example results (McNemar pooled over seeds, paired bootstrap over examples) are a "
            "secondary family: they ask whether these particular fine-tuned models differ on this evaluation set, "
            "not whether the training procedure does, so they are much more sensitive and say less. "
            f"All numbers are in {Path(layout.STATS).name}.", ""]
    warn = list(notes) + power_warnings(stats, alpha)
    if warn:
        out += ["## Notes and warnings", ""] + [f"- {w}" for w in warn] + [""]
    prim = primary(stats) if len(stats) else stats
    for family, title in FAMILY_TITLES.items():
        rows = prim[prim["family"] == family] if len(prim) else prim
        out += [f"## {title}", ""]
        if rows.empty:
            out += ["No comparisons of this kind in this sweep.", ""]
            continue
        for _, r in rows.iterrows():
            ex = stats[(stats["comparison_id"] == r["comparison_id"]) & (stats["level"] == "examples")]
            out.append(finding(r, ex, alpha))
        out.append("")
    out += importance_section(importance)
    if len(summary):
        t = summary.assign(k_fraction=summary["k_fraction"].map(lambda x: f"{x:.2f}"),
                           mean=summary["mean"].map(lambda x: f"{100 * x:.1f}"),
                           ci=[f"{fmt_pts(lo)} to {fmt_pts(hi)}" for lo, hi in zip(summary["ci_low"], summary["ci_high"])])
        t = t[["model", "variant", "strategy", "k", "k_fraction", "per_layer", "recovery_epochs", "n", "mean", "ci"]]
        out += ["## Accuracy per condition (%, mean over seeds, 95% t-interval)", "", _table(t), ""]
    if figures:
        out += ["## Figures", ""] + [f"![{k}](figures/{p.name})" for k, p in figures.items()] + [""]
    return "\n".join(out)


def importance_section(importance: pd.DataFrame | None) -> list[str]:
    out = ["## Head importance", ""]
    if importance is None or importance.empty:
        return out + ["No importance scores in this sweep.", ""]
    summ = stability_summary(rank_stability(importance))
    cons = consistent_heads(importance)
    for model in sorted(importance["model"].unique()):
        s = summ[summ["model"] == model]
        if len(s):
            s = s.iloc[0]
            out.append(f"- {model}: seeds agree on the head ranking with mean Spearman {s['spearman_mean']:.2f} "
                       f"(range {s['spearman_min']:.2f} to {s['spearman_max']:.2f} over {int(s['n_pairs'])} seed "
                       f"pairs; mean Kendall {s['kendall_mean']:.2f}).")
        else:
            out.append(f"- {model}: one seed only, rank stability not measurable.")
        c = cons[cons["model"] == model]
        top = ", ".join(f"L{r.layer}H{r.head}" for r in c[c["always_top"]].itertuples()) or "none"
        bot = ", ".join(f"L{r.layer}H{r.head}" for r in c[c["always_bottom"]].itertuples()) or "none"
        n = int(c["n_seeds"].max()) if len(c) else 0
        out.append(f"  In the top decile in all {n} seed(s): {top}; in the bottom decile in all: {bot}.")
    return out + [""]
