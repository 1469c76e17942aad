"""report.md: the findings in sentences with numbers, generated from the stats table.

Every number in a finding comes from one row of stats.csv (or summary.csv), formatted by the
helpers below, and each finding ends with an HTML comment naming its comparison_id, so the
report can be checked against the table mechanically (tests/analysis/test_analysis_outputs.py).
Differences are condition minus reference, signed, in points (the metric x 100); the one word of
direction in a finding ("lower" / "higher") follows the sign of the primary difference.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from headsweep.trials import layout
from headsweep.trials.schema import CORRECTNESS_METRICS

from .compare import power_warnings, primary
from .conditions import ORACLE
from .curves import sanity_check

FAMILY_TITLES = {
    "vs_baseline": "Against the unpruned baseline",
    "top_bottom_random": "Top vs bottom vs random at equal K",
    "multi_vs_single": "Multi-head vs single-head",
}
ARCH_INIT = {
    "pretrained": "init pretrained: the heads of each layer merged into one full-width head from the same "
                  "pretrained weights, then fine-tuned. It measures how well fine-tuning recovers from the merged "
                  "architecture, not whether one head is as good as many when trained from scratch.",
    "random": "init random: the attention of a one-head layout re-initialised, everything else pretrained, then "
              "fine-tuned. It measures how well re-learned attention recovers, not an architectural comparison.",
    "scratch": "init scratch: a multi-head and a one-head model of the same size, both trained from scratch on the "
               "task. This is the clean architectural comparison (multi-head vs one head at equal size).",
}
SINGLE_HEAD_TEXT = ("`single-head` keeps only the most important head of *every* layer at once; `layer-single-head` "
                    "reduces *one* layer at a time to one head and leaves the others intact: with `keep: ranked` the "
                    "head the importance criterion ranks first (ours), with `keep: best` the head that does best on "
                    "the evaluation set, found by trying each one (an oracle that looks at the evaluation set; "
                    "Michel et al. section 3.3, Tables 2-3).")


# Columns whose values come from the user (labels, task names, and what is built from them): the
# report escapes them, so a label can never inject Markdown or HTML into report.md.
USER_TEXT_COLUMNS = ("task", "model", "variant", "variant_a", "variant_b", "group_a", "group_b")
# Ids go into HTML comments (<!-- id: ... -->), where only '>' could end one: HTML escaping only,
# so an ordinary id stays byte-equal to stats.csv's.
ID_COLUMNS = ("comparison_id",)
_MD_SPECIAL = "\\`*_{}[]#+!|~"
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def md_escape(text) -> str:
    """User text as literal Markdown: Markdown's special characters backslash-escaped, HTML's
    ``& < >`` as entities, line breaks as spaces (``tiny-gpt2`` stays ``tiny-gpt2``)."""
    out = []
    for ch in " ".join(str(text).split()):
        out.append(_HTML.get(ch) or (f"\\{ch}" if ch in _MD_SPECIAL else ch))
    return "".join(out)


def md_code(text) -> str:
    """User text inside a `code span`: only backticks and line breaks can break out of one."""
    return " ".join(str(text).replace("`", "'").split())


def html_escape(text) -> str:
    return "".join(_HTML.get(ch, ch) for ch in " ".join(str(text).split()))


def escape_user_text(df):
    """A copy of ``df`` with the USER_TEXT_COLUMNS escaped (``md_escape``) and the ID_COLUMNS made
    HTML-safe; None stays None."""
    if df is None or not len(df):
        return df
    how = {c: md_escape for c in USER_TEXT_COLUMNS} | {c: html_escape for c in ID_COLUMNS}
    return df.assign(**{c: df[c].map(lambda v, f=f: f(v) if isinstance(v, str) else v)
                        for c, f in how.items() if c in df.columns})


def fmt_p(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_is(p: float) -> str:
    """'p = 0.003' or 'p < 0.001' (so a sentence never says 'p = < 0.001')."""
    text = fmt_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def fmt_pts(x: float, signed: bool = False) -> str:
    """A metric value or difference in points (x 100), one decimal; signed differences get + / -,
    except one that rounds to 0.0 (no "+0.0" for a difference of +0.0004)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if round(100 * x, 1) == 0:
        return "0.0"   # neither "+0.0" nor "-0.0"
    return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def ci_text(lo: float, hi: float) -> str:
    return f"{fmt_pts(lo)} to {fmt_pts(hi)}"


def direction(d: float) -> str:
    """The one word of direction, following the sign as printed: a difference that rounds to 0.0
    points gets none (it is below the printed precision, which says nothing about its test)."""
    if math.isnan(d):
        return "not available"
    if round(100 * d, 1) == 0:
        return "less than 0.05 points either way"
    return "lower" if d < 0 else "higher"


def _methods_text(r, several: bool) -> str:
    return f", ranked by {r['importance_method']}" if several and r["importance_method"] else ""


def _what(r, several_methods: bool = False) -> str:
    """What condition b does, in words. K is always the total number of heads removed."""
    s, k, pct = r["strategy_b"], int(r["k"]), f"{100 * r['k_fraction']:.0f}%"
    each = " of each layer" if r["per_layer"] else ""
    total = f"K = {k} in all" if r["per_layer"] else f"K = {k}"
    if r["arch_b"] == "single-head":
        text = f"the one-head architecture ({r['variant_b']}, init {r['arch_init_b'] or 'pretrained'})"
    elif s == "top":
        text = f"removing the {pct} most important heads{each} ({total})"
    elif s == "bottom":
        text = f"removing the {pct} least important heads{each} ({total})"
    elif s == "random":
        text = f"removing {pct} of the heads{each} at random ({total})"
    elif s == "iterative":
        text = f"iterative pruning (remove the least important, re-score, repeat) to {pct} of the heads ({total})"
    elif s == "single-head":
        text = f"keeping only the most important head of every layer (K = {k} removed)"
    elif s == "layer-single-head" and r["importance_method"] == ORACLE:
        text = (f"keeping only the best head of layer {int(r['layer'])} (an oracle: every head tried on the evaluation "
                f"set), the rest intact (K = {k} removed)")
    elif s == "layer-single-head":
        text = (f"keeping only the head of layer {int(r['layer'])} ranked first by {r['importance_method']}, the rest "
                f"intact (K = {k} removed)")
    else:
        text = r["group_b"]
    text += "" if s == "layer-single-head" else _methods_text(r, several_methods)
    if r["recovery_epochs"] and r["arch_b"] != "single-head":
        text += f" with {r['recovery_epochs']:g} epoch(s) of recovery fine-tuning"
    return text


def _seed_evidence(r, alpha: float) -> str:
    n = int(r["n"])
    parts = []
    zero = n >= 2 and r.get("sd") == 0
    if zero:
        parts.append(f"the same difference in all {n} seeds (zero variance): no interval, and t is undefined, so p "
                     "is set to 1 and the comparison stays in its Holm family")
    elif math.isnan(r["ci_low"]):
        parts.append("no interval: fewer than 3 seeds" if n < 3 else "no interval")
    else:
        parts.append(f"unadjusted 95% CI {ci_text(r['ci_low'], r['ci_high'])}")
        if not math.isnan(r["sim_ci_low"]):
            parts.append(f"simultaneous 95% CI over the {int(r['family_size'])} comparison(s) of its family "
                         f"{ci_text(r['sim_ci_low'], r['sim_ci_high'])}")
    if math.isnan(r["p"]):
        parts.append(f"not testable across seeds with {n} seed(s)")
    else:
        verdict = "significant" if r["p_adjusted"] < alpha else "not significant"
        parts.append(f"paired t-test over {n} seeds, Holm {p_is(r['p_adjusted'])}, {verdict} at {alpha:g}")
    if zero:
        pass
    elif math.isnan(r["effect_size"]):
        parts.append("no effect size" + (" with fewer than 3 seeds" if n < 3 else ""))
    else:
        parts.append(f"Cohen's dz = {r['effect_size']:.2f}")
    return "; ".join(parts)


def _example_evidence(ex: pd.DataFrame) -> str:
    e = ex[ex["test"] == "example_t"]
    if e.empty:
        return ""
    e = e.iloc[0]
    ci = (f"unadjusted 95% CI {ci_text(e['ci_low'], e['ci_high'])}; " if not math.isnan(e["ci_low"]) else "")
    return (f" Per example ({int(e['n_examples'])} examples, correctness averaged over {int(e['n_seeds'])} seed(s)): "
            f"{fmt_pts(e['difference'], True)} points ({ci}paired t-test over examples, Holm {p_is(e['p_adjusted'])}).")


def finding(r, ex: pd.DataFrame, alpha: float = 0.05, several_methods: bool = False) -> str:
    """One bullet for one comparison; r is its primary stats row, ex its per-example rows."""
    d, metric = r["difference"], r["metric"]
    who = f"{r['task']}: {r['model']}" if r.get("_show_task") else r["model"]
    if r["family"] == "top_bottom_random":
        k = f"K = {int(r['k'])}" + (" in all, per layer" if r["per_layer"] else f" ({100 * r['k_fraction']:.0f}% "
                                                                                  "of heads)")
        rec = f", {r['recovery_epochs']:g} recovery epoch(s)" if r["recovery_epochs"] else ""
        subject = (f"{who}, {k}{rec}{_methods_text(r, several_methods)}: removing {r['strategy_b']} heads instead of "
                   f"{r['strategy_a']} heads")
    elif r["family"] == "multi_vs_single":
        subject = f"{who}: {_what(r, several_methods)} vs the multi-head model ({r['group_a']})"
    else:
        subject = f"{who}: {_what(r, several_methods)} vs the unpruned model"
    return (f"- {subject}: {metric} {fmt_pts(d, True)} points, {direction(d)} ({_seed_evidence(r, alpha)})."
            f"{_example_evidence(ex)} <!-- id: {r['comparison_id']} -->")


def curve_finding(r, alpha: float = 0.05) -> str:
    d = r["difference"]
    who = f"{r['task']}: {r['model']}" if r.get("_show_task") else r["model"]
    extra = (" per layer" if r["per_layer"] else "") + (f", {r['recovery_epochs']:g} recovery epoch(s)"
                                                        if r["recovery_epochs"] else "")
    meth = f" [{r['importance_method']}]" if r.get("_several_methods") and r["importance_method"] else ""
    return (f"- {who}{meth}{extra}: the {r['strategy_b']} curve minus the {r['strategy_a']} curve, averaged over K "
            f"from 0 to {100 * r['k_fraction']:.0f}% of the heads: {fmt_pts(d, True)} points, {direction(d)} "
            f"({_seed_evidence(r, alpha)}). <!-- id: {r['comparison_id']} -->")


def sanity_lines(stats: pd.DataFrame, alpha: float) -> list[str]:
    """Does removing the top-ranked heads hurt more than removing the bottom-ranked ones, over the
    whole K range (the curve-level test, curves.sanity_check)? In plain words; failures first."""
    sc = sanity_check(stats, alpha)
    if sc.empty:
        return ["**Sanity check.** Not possible: this sweep has no top-K and bottom-K curves with a shared K."]
    order = {"inverted": 0, "uninformative": 1, "weak": 2, "ok": 3}
    sc = sc.assign(_o=sc["verdict"].map(order)).sort_values("_o", kind="stable")
    several = stats["importance_method"].replace({"": pd.NA, ORACLE: pd.NA}).nunique() > 1
    out = []
    for r in sc.itertuples(index=False):
        who = (f"{r.task}: " if sc["task"].nunique() > 1 else "") + r.model + \
            (f" [{r.importance_method}]" if several else "") + (" per layer" if r.per_layer else "") + \
            (f" with {r.recovery_epochs:g} recovery epoch(s)" if r.recovery_epochs else "")
        test = (f"curve-level test over {int(r.n_seeds)} seed(s), Holm {p_is(r.p_adjusted)}" if not math.isnan(r.p_adjusted)
                else f"not testable with {int(r.n_seeds)} seed(s)")
        nums = (f"averaged over K from 0 to {100 * r.k_fraction:.0f}% of the heads, the top-K curve minus the bottom-K "
                f"curve is {fmt_pts(r.difference, True)} points ({test})")
        if r.verdict == "inverted":
            out.append(f"- **Sanity check FAILED for {who}: the importance ranking is inverted.** {nums[0].upper()}"
                       f"{nums[1:]}: the heads ranked least important matter more than those ranked most important.")
        elif r.verdict == "uninformative":
            out.append(f"- **Sanity check FAILED for {who}: removing the top-ranked heads is not shown to hurt more than "
                       f"removing the bottom-ranked ones.** {nums[0].upper()}{nums[1:]}; the ranking may be "
                       "uninformative.")
        elif r.verdict == "weak":
            out.append(f"- Sanity check for {who}: top-K hurts more than bottom-K in these seeds, but not significantly: "
                       f"{nums}. The ranking may be uninformative.")
        else:
            out.append(f"- Sanity check passed for {who}: top-K hurts more than bottom-K over the K range: {nums}.")
    return out


def _unit_lines(results: pd.DataFrame) -> list[str]:
    """What K counts when the sweep scored KV groups (importance.unit: kv_group)."""
    if "unit" not in results.columns or not (results["unit"] == "kv_group").any():
        return []
    return ["Units: **KV groups** (`importance.unit: kv_group`): the rankings, the strategies and K count "
            "key/value groups, each with every query head that reads it (without grouped-query attention a group "
            "is one head); percentages are shares of the groups, and so of the query heads; `heads_removed` lists "
            "the query heads.", ""]


def _table(df: pd.DataFrame) -> str:
    """A plain Markdown table (no tabulate dependency)."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def build_report(name: str, results: pd.DataFrame, stats: pd.DataFrame, summary: pd.DataFrame,
                 importance: pd.DataFrame | None = None, notes=(), alpha: float = 0.05, figures=None,
                 corr: dict | None = None, sweeps=None, prunable: pd.DataFrame | None = None,
                 per_head: pd.DataFrame | None = None, damage: pd.DataFrame | None = None,
                 margin: float | None = None) -> str:
    """The whole report as Markdown text."""
    from . import report_pruning as rp
    from . import report_sections as rs
    from .equivalence import DEFAULT_MARGIN
    from .per_head import layer_shares
    from .conditions import several_methods, several_tasks, sweep_metric

    # Every user string enters here, escaped once, the same way in every table (lookups between
    # them still match); everything below writes Markdown of its own.
    results, stats, summary, importance, prunable, per_head, damage = (
        escape_user_text(df) for df in (results, stats, summary, importance, prunable, per_head, damage))
    corr = {md_escape(k): v for k, v in corr.items()} if corr else corr
    notes = [md_escape(n) for n in notes]
    out = [f"# Head-removal sweep `{md_code(name)}`", ""]
    if sweeps and len(sweeps) > 1:
        out += [f"Combined analysis of {len(sweeps)} sweeps: " + ", ".join(f"`{md_code(s)}`" for s in sweeps) + ".", ""]
    if results.empty:
        return "\n".join(out + ["No finished trials yet: nothing to analyse.", ""] + [f"- {n}" for n in notes] + [""])
    metric = sweep_metric(results)
    methods, tasks = several_methods(results), several_tasks(results)
    stats = stats.assign(_show_task=tasks, _several_methods=methods) if len(stats) else stats
    prim = primary(stats) if len(stats) else stats
    out += sanity_lines(stats, alpha) + [""]
    curve = prim[prim["family"] == "curve"] if len(prim) else prim
    if len(curve):
        out += [f"**Curve-level tests** (family `curve`, {int(curve['family_size'].max())} comparison(s), Holm): does "
                "removing heads by one strategy hurt more than by another over the whole K range? Per seed, the "
                "difference between the two curves is averaged over K (K = 0 included, where both are the unpruned "
                "model); the paired t-test over seeds asks whether that average is 0.", ""]
        out += [curve_finding(r, alpha) for _, r in curve.iterrows()] + [""]
    else:
        out += ["**Curve-level tests.** None: this sweep has no pair of strategies measured at a shared K.", ""]
    out += rs.headline_lines(stats, summary, alpha)
    out += rp.prunable_lines(prunable, stats, alpha)
    seeds = sorted(results["seed"].unique())
    out += [f"{len(results)} evaluated trials; " + (f"tasks: {', '.join(sorted(results['task'].unique()))}; "
                                                    if tasks else "")
            + f"models: {', '.join(sorted(results['model'].unique()))}; strategies: "
            f"{', '.join(sorted(results['strategy'].unique()))}; {len(seeds)} seed(s) ({', '.join(map(str, seeds))}). "
            f"Primary metric: **{metric}**.", ""] + _unit_lines(results) + [rs.how_to_read(metric), ""]
    warn = list(notes) + power_warnings(stats, alpha, margin or DEFAULT_MARGIN) + rs.metric_notes(metric, stats)
    if warn:
        out += ["## Notes and warnings", ""] + [f"- {w}" for w in warn] + [""]
    for family, title in FAMILY_TITLES.items():
        rows = prim[prim["family"] == family] if len(prim) else prim
        out += [f"## {title}", ""]
        if family == "multi_vs_single":
            out += [SINGLE_HEAD_TEXT, ""] + rs.arch_init_lines(results, ARCH_INIT)
        if rows.empty:
            out += ["No comparisons of this kind in this sweep.", ""]
            continue
        for _, r in rows.iterrows():
            ex = stats[(stats["comparison_id"] == r["comparison_id"]) & (stats["level"] == "examples")]
            out.append(finding(r, ex, alpha, methods))
        out.append("")
    out += rs.layer_section(prim, alpha)
    out += rp.layer_lines(layer_shares(results, importance))
    out += rp.per_head_lines(per_head, damage, alpha)
    out += rs.draws_section(summary)
    out += rs.methods_section(prim, importance, alpha)
    out += rs.importance_section(results, importance, corr)
    out += rs.extra_section(summary)
    out += rs.efficiency_section(results, metric)
    out += rs.summary_section(summary, metric)
    if figures:
        out += ["## Figures", ""] + [f"![{k}]({Path(layout.FIGURES).name}/{p.name})" for k, p in figures.items()] + [""]
    return "\n".join(out)
