"""The report's sections on how many heads can go, each head alone, and where the pruned heads sit
(analysis/report.py builds the whole). Numbers come from prunable.csv, stats.csv (family
noninferiority), per_head.csv and importance_vs_damage.csv.

Wording rule: a difference that is not significant is never called "no loss" or "the same"; only
a non-inferiority test that rejects (the loss is shown smaller than the margin) says a K can go.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from headsweep.trials import layout

from .equivalence import NONINF_FAMILY, points
from .importance import agreement_words
from .report import _table, fmt_pts

ORDER = {"bottom": 0, "iterative": 1, "random": 2, "top": 3}


def pct(x: float) -> str:
    """0.375 -> '37.5'; 0.25 -> '25'."""
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}".rstrip("0").rstrip(".")


def how(strategy: str, method: str) -> str:
    by = f" by {method}" if method else ""
    return {"bottom": f"bottom-first (least important{by} first)",
            "top": f"top-first (most important{by} first)",
            "random": "at random",
            "iterative": f"iteratively (least important{by} first, re-scored after each step)"}.get(strategy, strategy)


def prunable_sentence(r, m: int, several_tasks: bool = False) -> str:
    """One line of prunable.csv in words."""
    who = (f"{r['task']}: " if several_tasks else "") + str(r["model"]) + (" per layer" if r["per_layer"] else "") + \
        (f" with {r['recovery_epochs']:g} recovery epoch(s)" if r["recovery_epochs"] else "")
    ci = (f"95% CI {pct(r['ci_low'])}-{pct(r['ci_high'])}%" if not math.isnan(r["ci_low"])
          else "no interval")
    margin = f"a {points(r['margin'])} margin"
    grid = json.loads(r["grid_k"]) if isinstance(r["grid_k"], str) else []
    test = (f"one-sided paired t-test over {int(r['n_seeds'])} seeds against the unpruned model, Holm over the {m} "
            f"comparisons of family `{NONINF_FAMILY}`")
    strategy = how(r["strategy"], r["importance_method"])
    if r["prunable_k"] > 0:
        more = (" It is the largest K the sweep measured: more heads may be removable." if grid and
                r["prunable_k"] == max(grid) else "")
        return (f"- {who}: {pct(r['prunable_k_fraction'])}% of heads ({ci}) can be removed {strategy} at {margin}: "
                f"at every K up to {int(r['prunable_k'])} of {int(r['heads_total'])} heads the loss is shown to be "
                f"smaller than {100 * r['margin']:g} point(s) ({test}).{more}")
    return (f"- {who}: removing heads {strategy} is not shown to stay within {margin} even at the smallest K "
            f"({pct(min(grid) / r['heads_total']) if grid else 'n/a'}% of the heads; {ci} for the prunable fraction). "
            f"Not shown within the margin is not shown worse either ({test}).")


def prunable_lines(prunable: pd.DataFrame | None, stats: pd.DataFrame, alpha: float) -> list[str]:
    """'How many heads can go': the sentences, then per model the non-inferiority table."""
    if prunable is None or prunable.empty:
        return []
    nf = stats[(stats["family"] == NONINF_FAMILY) & stats["primary"].astype(bool)] if len(stats) else stats
    m = int(nf["family_size"].max()) if len(nf) else 0
    margin = float(prunable["margin"].iloc[0])
    several = prunable["task"].nunique() > 1
    p = prunable.assign(_o=prunable["strategy"].map(ORDER).fillna(9)).sort_values(
        ["task", "model", "per_layer", "recovery_epochs", "_o", "importance_method"], kind="stable")
    out = [f"**How many heads can go** (non-inferiority at a {points(margin)} margin, declared in {layout.SPEC} as "
           f"`analysis.margin`; {layout.PRUNABLE}). The prunable fraction is the largest K up to which every K of "
           "the grid is shown *non-inferior*: its mean difference to the unpruned model is shown to lie above "
           f"-{100 * margin:g} point(s) (one-sided paired t-test over seeds, Holm p < {alpha:g}). The interval is a "
           "seed bootstrap (the seeds resampled with replacement; every test, the Holm adjustment and the prunable K "
           "recomputed). A drop that is merely not significant is not evidence of no loss, and is never read as one "
           "here.", ""]
    out += [prunable_sentence(r, m, several) for _, r in p.iterrows()] + [""]
    if len(nf):
        out += ["Per K: mean difference to the unpruned model in points [simultaneous one-sided 95% lower bound over the "
                f"{m} comparisons of the family]; **yes** where the Holm p < {alpha:g} (non-inferior).", ""]
        for (task, model), g in nf.groupby(["task", "model"], sort=True):
            g = g.assign(_o=g["strategy_b"].map(ORDER).fillna(9))
            ks = sorted(g["k"].unique())
            kf = dict(zip(g["k"], g["k_fraction"]))
            rows = []
            for (o, strategy, method, per_layer, rec), h in g.groupby(["_o", "strategy_b", "importance_method",
                                                                      "per_layer", "recovery_epochs"], sort=True):
                name = strategy + (f" [{method}]" if method else "") + (" per layer" if per_layer else "") + \
                    (f" +{rec:g}ep" if rec else "")
                cells = {}
                for _, r in h.iterrows():
                    lb = "" if math.isnan(r["sim_ci_low"]) else f" [{fmt_pts(r['sim_ci_low'], True)}]"
                    yes = "**yes**" if r["p_adjusted"] < alpha else "no"
                    cells[f"K = {int(r['k'])} ({100 * kf[r['k']]:.0f}%)"] = f"{fmt_pts(r['difference'], True)}{lb} {yes}"
                rows.append({"strategy": name, **cells})
            t = pd.DataFrame(rows).fillna("not run")
            t = t[["strategy"] + [c for c in (f"K = {int(k)} ({100 * kf[k]:.0f}%)" for k in ks) if c in t.columns]]
            out += [f"**{model}**" + (f" ({task})" if several else ""), "", _table(t), ""]
    return out


def per_head_lines(per_head: pd.DataFrame | None, damage: pd.DataFrame | None, alpha: float) -> list[str]:
    """Each head removed alone, and whether the importance criteria predict that damage."""
    if per_head is None or per_head.empty:
        return []
    out = ["## Each head removed alone", "",
           "Strategy `each-head`: every head masked alone on the fine-tuned model and evaluated on the evaluation set "
           "(cf. Michel et al. section 3.2, Table 1 and Fig. 1), against the unpruned model. Where heads correspond "
           "across seeds, the seed is the unit (paired t-test over seeds); otherwise each seed is tested on its own "
           "with the example as the unit. q: Benjamini-Hochberg over all heads of a model (per seed where each seed "
           f"is tested alone); significant: q < {alpha:g}. All numbers: {Path(layout.PER_HEAD).name}.", ""]
    keys = ["task", "model", "variant", "recovery_epochs", "level", "seed"]
    for key, g in per_head.groupby(keys, sort=True):
        task, model, _, rec, level, seed = key
        sig = g[g["significant"].astype(bool)].sort_values("difference")

        def heads(df):
            return ", ".join(f"L{int(r.layer)}H{int(r.head)} ({fmt_pts(r.difference, True)})"
                             for r in df.itertuples(index=False)) or "none"
        where = f"{model}" + (f" +{rec:g}ep" if rec else "") + ("" if level == "seeds" else f", seed {int(seed)}")
        unit = (f"paired t-test over {int(g['n_seeds'].max())} seeds" if level == "seeds" else
                "per-example paired t-test" if g["p"].notna().any() else "no test (no predictions)")
        lo, hi = g["difference"].min(), g["difference"].max()
        out.append(f"- {where}: {len(g)} heads, from {fmt_pts(lo, True)} to {fmt_pts(hi, True)} points ({unit}). "
                   f"Significantly lower: {heads(sig[sig['difference'] < 0])}; significantly higher: "
                   f"{heads(sig[sig['difference'] > 0])}.")
    out.append("")
    if damage is not None and len(damage):
        out += ["**Does importance predict damage?** Per criterion, the Spearman correlation between a head's importance "
                "score (as the strategies rank it) and the damage of removing it alone (unpruned minus each-head, in "
                "the same seed), within each seed's checkpoint, then summarised over seeds; where heads correspond, "
                "also that of the seed means. Positive: the heads the criterion ranks important are those whose "
                "removal hurts. (`ablation` scores the loss increase on held-out *training* rows; this damage is the "
                "metric on the *evaluation* set.)", "",
                _table(pd.DataFrame({
                    "model": damage["model"], "criterion": damage["method"], "heads": damage["n_heads"],
                    "seeds": damage["n_seeds"],
                    "Spearman (mean over seeds)": [f"{x:.2f}" if not math.isnan(x) else "n/a"
                                                   for x in damage["spearman_mean"]],
                    "range": [f"{a:.2f} to {b:.2f}" if not math.isnan(a) else "n/a"
                              for a, b in zip(damage["spearman_min"], damage["spearman_max"])],
                    "of the seed means": [f"{x:.2f}" if not math.isnan(x) else "n/a (heads do not correspond)"
                                          for x in damage["spearman_of_means"]],
                    "reading": [f"importance and damage {agreement_words(x)}" for x in damage["spearman_mean"]]})), ""]
    return out


def layer_lines(shares: pd.DataFrame) -> list[str]:
    """Where the pruned heads sit, at each strategy's largest K (the figure shows every K)."""
    if shares is None or shares.empty:
        return []
    out = ["## Where the pruned heads sit", "",
           "Share of each layer's heads removed (mean over seeds and random draws, from heads_removed) at the largest K "
           "of each strategy; the figure `heads_by_layer` shows every K.", ""]
    rows = []
    for (task, model, strategy, method), g in shares.groupby(["task", "model", "strategy", "importance_method"],
                                                             sort=True):
        g = g[g["k"] == g["k"].max()]
        rows.append({"model": model, "strategy": strategy + (f" [{method}]" if method else ""),
                     "K": f"{int(g['k'].iloc[0])} ({100 * g['k_fraction'].iloc[0]:.0f}%)",
                     **{f"L{int(r.layer)}": f"{100 * r.share:.0f}%" for r in g.itertuples(index=False)}})
    return out + [_table(pd.DataFrame(rows).fillna("")), ""]


__all__ = ["layer_lines", "per_head_lines", "prunable_lines", "prunable_sentence"]
