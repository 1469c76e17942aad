"""The end-of-run table: per model, the unpruned baseline and top / bottom / random at the
largest K, with the Holm-adjusted p of the primary test (numbers from ``analysis.headline``,
which reads the same stats.csv and summary.csv as the report); then how many heads can go
(prunable.csv: every K up to it shown non-inferior at the sweep's margin)."""
from __future__ import annotations

import math

STRATEGIES = ("top", "bottom", "random")


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _p(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def headline_lines(table) -> list[str]:
    """Plain-text lines of ``analysis.headline``'s table: one line per model (and criterion or
    setting, where a sweep has several); metrics in points, differences signed (condition minus
    baseline)."""
    if table is None or not len(table):
        return []
    metric = str(table["metric"].iloc[0])
    several = "importance_method" in table and table["importance_method"].nunique() > 1
    labels = [str(r["model"]) + (f" [{r['importance_method']}]" if several and isinstance(r["importance_method"], str)
                                 and r["importance_method"] else "") for _, r in table.iterrows()]
    width = max(18, *map(len, labels))     # a label is never cut: "[ablation]" vs "[gradient]" must show
    head = f"{'model':<{width}} {'K':>5} {'baseline':>9}" + "".join(f" {s + ' (diff, p)':>24}" for s in STRATEGIES)
    lines = [f"headline ({metric} in points at the largest K; diff = condition - baseline, p Holm-adjusted):",
             head]
    for label, (_, r) in zip(labels, table.iterrows()):
        k = r.get("k_fraction")
        k_txt = f"{k:.0%}" if isinstance(k, float) and not math.isnan(k) else str(r.get("k", "-"))
        cells = []
        for s in STRATEGIES:
            mean, diff, p = r.get(f"{s}_mean"), r.get(f"{s}_difference"), r.get(f"{s}_p_adjusted")
            d = ("-" if diff is None or (isinstance(diff, float) and math.isnan(diff)) else
                 "0.0" if round(100 * diff, 1) == 0 else f"{100 * diff:+.1f}")   # never "+0.0"
            cells.append(f" {_pct(mean) + ' (' + d + ', ' + _p(p) + ')':>24}")
        lines.append(f"{label:<{width}} {k_txt:>5} {_pct(r.get('baseline_mean')):>9}" + "".join(cells))
    return lines


def _frac(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}".rstrip("0").rstrip(".")


WAY = {"bottom": "bottom-first", "top": "top-first", "random": "at random", "iterative": "iteratively"}


def prunable_lines(table) -> list[str]:
    """Plain-text lines of prunable.csv: per model and strategy the share of heads that can go (every
    K up to it shown non-inferior), with its seed-bootstrap 95% interval. Never "no loss": a K that is
    not shown non-inferior is reported as not shown."""
    if table is None or not len(table):
        return []
    margin = float(table["margin"].iloc[0])
    lines = [f"how many heads can go (at a {100 * margin:g}-point margin: every K up to it shown non-inferior to the "
             "unpruned model, one-sided paired t-test over seeds, Holm; seed-bootstrap 95% CI):"]
    several = table["importance_method"].fillna("").replace("", None).nunique() > 1
    width = max(18, *(len(str(m)) for m in table["model"]))
    order = {"bottom": 0, "iterative": 1, "random": 2, "top": 3}
    rows = table.assign(_o=table["strategy"].map(order).fillna(9)).sort_values(["model", "_o"], kind="stable")
    for _, r in rows.iterrows():
        method = r["importance_method"] if isinstance(r["importance_method"], str) else ""
        way = WAY.get(r["strategy"], r["strategy"]) + (f" [{method}]" if several and method else "") + \
            (" per layer" if bool(r.get("per_layer", False)) else "") + \
            (f" +{r['recovery_epochs']:g}ep" if r.get("recovery_epochs") else "")
        ci = f"95% CI {_frac(r['ci_low'])}-{_frac(r['ci_high'])}%"
        what = (f"{_frac(r['prunable_k_fraction'])}% of heads ({ci})" if r["prunable_k"] > 0 else
                f"none shown ({ci}): not even the smallest K is shown within the margin")
        lines.append(f"{str(r['model']):<{width}} {way:<24} {what}")
    return lines


def print_headline(paths: dict, out) -> None:
    """Print the headline table of an analysis run (``paths``: what ``analysis.analyze`` returns),
    then the prunable fractions."""
    import pandas as pd

    from headsweep import analysis
    table = analysis.headline(analysis.read_table(paths["stats"]), analysis.read_table(paths["summary"]))
    lines = headline_lines(table)
    if paths.get("prunable"):
        lines += prunable_lines(pd.read_csv(paths["prunable"], keep_default_na=True))
    for line in lines:
        print(line, file=out)
