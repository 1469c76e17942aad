"""The report's sections beyond the per-comparison findings (analysis/report.py builds the whole)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from headsweep.trials import layout
from headsweep.trials.schema import CORRECTNESS_METRICS

from .importance import (agreement_words, consistent_heads, method_agreement, rank_stability, seed_correspondence,
                         shared_only, stability_summary, task_agreement)
from .report import _table, ci_text, direction, fmt_pts, p_is


def how_to_read(metric: str) -> str:
    per_example = ("The per-example results (a paired t-test over examples, each example's correctness averaged "
                   "over the seeds first, so an example counts once) are a secondary family: they ask whether these "
                   "particular fine-tuned models differ on the population of examples this evaluation set comes "
                   "from, not whether the training procedure does. " if metric in CORRECTNESS_METRICS else "")
    return ("**How to read this.** Differences are " + metric + " in points (x 100), condition minus reference, "
            "signed, paired by seed; random-K draws are averaged within each seed first. THE p-value of each "
            "comparison is a paired t-test over seeds (it generalises over training runs), Holm-corrected within its "
            "family. Beside it: the unadjusted 95% interval (labelled so), the simultaneous 95% interval over the "
            "family (Bonferroni; when it excludes 0 the Holm p is significant), and Cohen's dz (3+ seeds). "
            "Intervals stay inside the metric's range and need 3 or more seeds. " + per_example +
            f"All numbers are in {Path(layout.STATS).name} and {Path(layout.SUMMARY).name}; docs/analysis.md says "
            "what each test assumes.")


def headline_lines(stats: pd.DataFrame, summary: pd.DataFrame, alpha: float) -> list[str]:
    """analysis.headline as a table: the baseline and top / bottom / random at the largest K."""
    from .curves import headline

    h = headline(stats, summary)
    if h.empty:
        return []

    def cell(r, s):
        if math.isnan(r[f"{s}_mean"]):
            return "not run"
        d, p = r[f"{s}_difference"], r[f"{s}_p_adjusted"]
        if math.isnan(d):
            return fmt_pts(r[f"{s}_mean"])
        sig = " *" if p < alpha else ""
        return f"{fmt_pts(r[f'{s}_mean'])} ({fmt_pts(d, True)}, Holm {p_is(p)}{sig})"

    several_m = h["importance_method"].replace("", np.nan).nunique() > 1
    t = pd.DataFrame({"model": [(f"{r.task}: " if h["task"].nunique() > 1 else "") + r.model
                                + (f" [{r.importance_method}]" if several_m and r.importance_method else "")
                                + (" per layer" if r.per_layer else "")
                                + (f" +{r.recovery_epochs:g}ep" if r.recovery_epochs else "")
                                for r in h.itertuples(index=False)],
                      "K": [f"{int(r.k)} ({100 * r.k_fraction:.0f}%)" for r in h.itertuples(index=False)],
                      "unpruned": [fmt_pts(x) for x in h["baseline_mean"]],
                      **{s: [cell(r, s) for _, r in h.iterrows()] for s in ("top", "bottom", "random")}})
    return [f"**At the largest K** (mean over seeds; in brackets the difference to the unpruned baseline in points "
            f"and the Holm p of the paired t-test against it, family vs_baseline; * below {alpha:g}):", "",
            _table(t), ""]


def metric_notes(metric: str, stats: pd.DataFrame) -> list[str]:
    if metric in CORRECTNESS_METRICS:
        return []
    return [f"The primary metric is {metric}, which is not a mean of per-example correctness: per-example tests "
            "(which need one right/wrong outcome per example) are not run; only the tests across seeds are."]


def arch_init_lines(results: pd.DataFrame, texts: dict) -> list[str]:
    inits = sorted({i for i in results.loc[results["arch"] == "single-head", "arch_init"]} - {""}) or \
        (["pretrained"] if (results["arch"] == "single-head").any() else [])
    if not inits:
        return []
    return ["What the one-head architecture measures:"] + [f"- {texts.get(i, i)}" for i in inits] + [""]


def layer_section(prim: pd.DataFrame, alpha: float) -> list[str]:
    """One layer at a time reduced to one head: the importance-ranked head (keep: ranked, ours) or
    the best one on the evaluation set (keep: best, the oracle of Michel et al. section 3.3)."""
    from .conditions import ORACLE

    rows = prim[prim["family"] == "layer_single_head"] if len(prim) else prim
    if rows.empty:
        return []
    out = ["## One layer at a time", "",
           "Each row keeps only one head of one layer and leaves every other layer intact, against the unpruned model "
           f"(family `layer_single_head`, Holm over {int(rows['family_size'].max())}). The head kept is either the one "
           "an importance criterion ranks first (`keep: ranked`, ours) or the best one found by trying every head on "
           "the evaluation set (`keep: best`, an **oracle**: it looks at the evaluation set, so its numbers are "
           "optimistic; this is what Michel et al. section 3.3, Tables 2-3, report).", ""]
    for (task, model), g in rows.groupby(["task", "model"], sort=True):
        t = pd.DataFrame({
            "head kept": ["best (oracle, on the evaluation set)" if m == ORACLE else f"ranked first by {m}"
                          for m in g["importance_method"]],
            "layer": g["layer"].astype(int),
            "change (points)": [fmt_pts(d, True) for d in g["difference"]],
            "unadjusted 95% CI": [ci_text(lo, hi) if not math.isnan(lo) else "n/a (< 3 seeds)"
                                  for lo, hi in zip(g["ci_low"], g["ci_high"])],
            "seeds": g["n"].astype(int),
            "Holm p": [p_is(p).removeprefix("p ").removeprefix("= ") for p in g["p_adjusted"]],
            "significant": ["yes" if p < alpha else "no" for p in g["p_adjusted"].fillna(1)],
            "id": g["comparison_id"]})
        if g["recovery_epochs"].nunique() > 1:
            t.insert(1, "recovery epochs", g["recovery_epochs"])
        out += [f"**{model}**" + (f" ({task})" if prim["task"].nunique() > 1 else ""), "", _table(t), ""]
    return out


def draws_section(summary: pd.DataFrame) -> list[str]:
    """Random-K as a distribution: how much the random mask itself moves the metric."""
    if summary.empty or "n_draws" not in summary.columns:
        return []
    r = summary[(summary["strategy"] == "random") & (summary["n_draws"] > 1) & ~summary["extra_eval"].astype(bool)]
    if r.empty:
        return []
    out = ["## Random-K draws", "", "Each seed has several random masks per K; the tests use their mean per seed. "
           "Spread, in points: SD between the draws of one seed (mean over seeds) and SD between the seeds' draw "
           "means.", ""]
    tasks = r["task"].nunique() > 1
    for x in r.itertuples(index=False):
        where = (f"{x.task}: " if tasks else "") + f"{x.model}, K = {int(x.k)} ({100 * x.k_fraction:.0f}%)" + \
            (" per layer" if x.per_layer else "") + (f" +{x.recovery_epochs:g}ep" if x.recovery_epochs else "")
        out.append(f"- {where}: {x.n_draws:g} draws per seed, mean {fmt_pts(x.mean)}; SD within a seed "
                   f"{fmt_pts(x.draw_sd)}, SD between seeds {fmt_pts(x.std)}.")
    return out + [""]


def _criterion(group: str) -> str:
    """'top-bottom gap [gradient] per layer' -> 'gradient'."""
    return group[group.index("[") + 1:group.index("]")] if "[" in group and "]" in group else group


def methods_section(prim: pd.DataFrame, importance, alpha: float) -> list[str]:
    """Importance criteria: rank agreement within seeds, and which predicts the damage better."""
    rows = prim[prim["family"] == "methods"] if len(prim) else prim
    agree = method_agreement(importance) if importance is not None else pd.DataFrame()
    if rows.empty and agree.empty:
        return []
    out = ["## Importance criteria", ""]
    for a in agree.itertuples(index=False):
        out.append(f"- {a.model}: {a.method_a} and {a.method_b} rank the heads of the same checkpoint with mean "
                   f"Spearman {a.spearman_mean:.2f} (range {a.spearman_min:.2f} to {a.spearman_max:.2f} over "
                   f"{a.n_seeds} seed(s); mean Kendall {a.kendall_mean:.2f}): they {agreement_words(a.spearman_mean)}.")
    if len(rows):
        out += ["", "Which criterion predicts the damage better: the top-K minus bottom-K gap (averaged over K) of one "
                "criterion minus the other's, paired by seed; below 0 the criterion named first has the more negative "
                "gap, so it separates harmful from harmless heads more.", ""]
        for _, r in rows.iterrows():
            d = r["difference"]
            ev = ("no interval" + (" (fewer than 3 seeds)" if r["n"] < 3 else "") if math.isnan(r["ci_low"]) else
                  f"unadjusted 95% CI {ci_text(r['ci_low'], r['ci_high'])}")
            zero = "" if not r.get("sd") == 0 else (f"the same difference in all {int(r['n'])} seeds (zero variance): "
                                                       "t undefined, p set to 1; ")
            test = (f"{zero}paired t-test over {int(r['n'])} seeds, Holm {p_is(r['p_adjusted'])}, "
                    f"{'significant' if r['p_adjusted'] < alpha else 'not significant'} at {alpha:g}"
                    if not math.isnan(r["p"]) else f"not testable with {int(r['n'])} seed(s)")
            who = f"{r['task']}: {r['model']}" if rows["task"].nunique() > 1 else r["model"]
            first, second = (_criterion(r["group_b"]), _criterion(r["group_a"]))
            better = ("" if not d or math.isnan(d) else
                      f": in these seeds {first if d < 0 else second} separates harmful from harmless heads more")
            out.append(f"- {who}: {r['group_b']} minus {r['group_a']}: {fmt_pts(d, True)} points, {direction(d)}"
                       f"{better} ({ev}; {test}). <!-- id: {r['comparison_id']} -->")
    return out + [""]


def importance_section(results: pd.DataFrame, importance, corr: dict | None) -> list[str]:
    out = ["## Head importance", ""]
    if importance is None or importance.empty:
        return out + ["No importance scores in this sweep.", ""]
    corr = seed_correspondence(results) if corr is None else corr
    for model in sorted(importance["model"].unique()):
        ok, why = corr.get(model, (False, "it has no trials in the results table"))
        if not ok:
            out.append(f"- {model}: seeds do not share pretrained weights ({why}), so head h of one seed is not head h "
                       "of another: rank stability, mean importance maps and consistent heads are skipped.")
    shared = shared_only(importance, corr)
    if shared is not None:
        summ = stability_summary(rank_stability(shared))
        cons = consistent_heads(shared)
        several = shared["method"].nunique() > 1
        keys = (["task"] if "task" in shared.columns else []) + ["model", "method"]
        tasks_shown = "task" in shared.columns and shared["task"].nunique() > 1
        for vals, _ in shared.groupby(keys, sort=True):
            key = dict(zip(keys, vals))
            model, method = key["model"], key["method"]
            name = (f"{key['task']}: " if tasks_shown else "") + model + (f" [{method}]" if several else "")

            def pick(df):
                return df[np.logical_and.reduce([df[k] == v for k, v in key.items()])]
            s = pick(summ)
            if len(s):
                s = s.iloc[0]
                out.append(f"- {name}: the seeds' head rankings {agreement_words(s['spearman_mean'])}: mean Spearman "
                           f"{s['spearman_mean']:.2f} (range {s['spearman_min']:.2f} to {s['spearman_max']:.2f} over "
                           f"{int(s['n_pairs'])} seed pairs; mean Kendall {s['kendall_mean']:.2f}).")
            else:
                out.append(f"- {name}: one seed only, rank stability not measurable.")
            c = pick(cons)
            top = ", ".join(f"L{r.layer}H{r.head}" for r in c[c["always_top"]].itertuples()) or "none"
            bot = ", ".join(f"L{r.layer}H{r.head}" for r in c[c["always_bottom"]].itertuples()) or "none"
            n = int(c["n_seeds"].max()) if len(c) else 0
            out.append(f"  In the top decile in all {n} seed(s): {top}; in the bottom decile in all: {bot}.")
        tasks = task_agreement(shared)
        if len(tasks):
            out += ["", "Across tasks: Spearman correlation of the heads' mean importance on two tasks, and the share "
                    "of the top / bottom decile the tasks have in common (chance level shown). (Michel et al. section "
                    "3.4 asks a related question differently: the correlation of each head's ablation effect on two "
                    "evaluation sets of one task, Fig. 2.)", "",
                    _table(pd.DataFrame({"model": tasks["model"], "criterion": tasks["method"],
                                         "tasks": tasks["task_a"] + " / " + tasks["task_b"],
                                         "heads": tasks["n_heads"], "Spearman": tasks["spearman"].map("{:.2f}".format),
                                         "top-decile overlap": tasks["top_overlap"].map("{:.0%}".format),
                                         "bottom-decile overlap": tasks["bottom_overlap"].map("{:.0%}".format),
                                         "chance": tasks["chance_overlap"].map("{:.0%}".format)}))]
    elif "task" in importance.columns and importance["task"].nunique() > 1:
        out.append("- Importance agreement across tasks needs heads that correspond (the same pretrained weights): "
                   "skipped.")
    return out + [""]


def extra_summary(results: pd.DataFrame, metric: str, conf: float = 0.95) -> pd.DataFrame:
    """summary rows (extra_eval True) for the further evaluations in ``extra_evals``."""
    from .stats import summarize

    if "extra_evals" not in results.columns:
        return pd.DataFrame()
    parts = []
    for i, text in results["extra_evals"].items():
        try:
            ev = json.loads(text) if isinstance(text, str) and text else {}
        except ValueError:
            ev = {}
        for split, vals in (ev or {}).items():
            if isinstance(vals, dict) and metric in vals and vals[metric] is not None:
                parts.append((i, str(split), float(vals[metric])))
    if not parts:
        return pd.DataFrame()
    out = []
    for split in sorted({p[1] for p in parts}):
        rows = results.loc[[i for i, s, _ in parts if s == split]].copy()
        rows[metric] = [v for _, s, v in parts if s == split]
        s = summarize(rows.assign(eval_split=split), metric, conf)
        out.append(s.assign(extra_eval=True, eval_split=split))
    return pd.concat(out, ignore_index=True)


def extra_section(summary: pd.DataFrame) -> list[str]:
    if summary.empty or "extra_eval" not in summary.columns or not summary["extra_eval"].astype(bool).any():
        return []
    out = []
    ex = summary[summary["extra_eval"].astype(bool)]
    for split, g in ex.groupby("eval_split", sort=True):
        out += [f"## Second evaluation: {split}", "", "The same trials evaluated on a further split (not tested; the "
                "tests use the primary split).", "", _summary_table(g), ""]
    return out


def efficiency_section(results: pd.DataFrame, metric: str) -> list[str]:
    cols = [c for c in ("attn_params_kept", "params_pruned", "params_total", "speedup") if c in results.columns]
    if not cols or not results[cols].notna().any().any():
        return []
    r = results[(results["arch"] != "single-head") & (results["strategy"] != "each-head")]   # per_head.csv has those
    g = r.groupby(["model", "strategy", "k"], sort=True).agg(
        **{metric: (metric, "mean")}, **{c: (c, "mean") for c in cols}).reset_index()
    g = g[g[cols].notna().any(axis=1)]
    if g.empty:
        return []
    t = pd.DataFrame({"model": g["model"], "strategy": g["strategy"], "K": g["k"], metric: g[metric].map(fmt_pts)})
    if "params_pruned" in g and "params_total" in g:
        t["parameters kept"] = [f"{a / b:.1%}" if b and not (math.isnan(a) or math.isnan(b)) else "n/a"
                                for a, b in zip(g["params_pruned"], g["params_total"])]
    if "attn_params_kept" in g:
        t["attention parameters kept"] = [f"{int(x):,}" if not math.isnan(x) else "n/a" for x in g["attn_params_kept"]]
    if "speedup" in g:
        t["speed-up"] = [f"{x:.2f}x" if not math.isnan(x) else "n/a" for x in g["speedup"]]
    return ["## Efficiency", "", "After physically pruning heads_removed (mean over seeds; speed-up = latency of the "
            "unpruned model / the pruned one, same worker, only with measure_speed).", "", _table(t), ""]


def _summary_table(summary: pd.DataFrame) -> str:
    t = pd.DataFrame({
        "model": summary["model"], "variant": summary["variant"], "strategy": summary["strategy"],
        "criterion": summary["importance_method"], "k": summary["k"],
        "k_fraction": summary["k_fraction"].map(lambda x: f"{x:.2f}"),
        "per_layer": summary["per_layer"], "layer": summary["layer"].map(lambda x: "" if x < 0 else int(x)),
        "recovery_epochs": summary["recovery_epochs"], "n": summary["n"], "mean": summary["mean"].map(fmt_pts),
        "95% interval": [ci_text(lo, hi) if not math.isnan(lo) else "n/a (zero variance)" if "zero variance" in str(nt)
                         else "n/a (< 3 seeds)" for lo, hi, nt in zip(summary["ci_low"], summary["ci_high"],
                                                                      summary["note"])]})
    if "task" in summary.columns and summary["task"].nunique() > 1:
        t.insert(0, "task", summary["task"])
    if not (summary["importance_method"].replace("", np.nan).nunique() > 1):
        t = t.drop(columns="criterion")
    return _table(t)


def summary_section(summary: pd.DataFrame, metric: str) -> list[str]:
    s = summary[~summary["extra_eval"].astype(bool)] if len(summary) else summary
    each = s["strategy"] == "each-head" if len(s) else s
    s = s[~each] if len(s) else s
    if s.empty:
        return []
    more = (f" Each head removed alone (each-head, {int(each.sum())} conditions) is in "
            f"{Path(layout.PER_HEAD).name} instead." if each.any() else "")
    return [f"## {metric} per condition (points, mean over seeds; 95% interval: Student t on the logit scale, "
            "inside the metric's range)", "", f"A condition with the same value in every seed gets no interval.{more}",
            "", _summary_table(s), ""]
