"""The end-of-run table: per model, the unpruned baseline and top / bottom / random at the
largest K, with the Holm-adjusted p of the primary test (numbers from ``analysis.headline``,
which reads the same stats.csv and summary.csv as the report)."""
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
            d = "-" if diff is None or (isinstance(diff, float) and math.isnan(diff)) else f"{100 * diff:+.1f}"
            cells.append(f" {_pct(mean) + ' (' + d + ', ' + _p(p) + ')':>24}")
        lines.append(f"{label:<{width}} {k_txt:>5} {_pct(r.get('baseline_mean')):>9}" + "".join(cells))
    return lines


def print_headline(paths: dict, out) -> None:
    """Print the headline table of an analysis run (``paths``: what ``analysis.analyze`` returns)."""
    from headsweep import analysis
    table = analysis.headline(analysis.read_table(paths["stats"]), analysis.read_table(paths["summary"]))
    for line in headline_lines(table):
        print(line, file=out)
