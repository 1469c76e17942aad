"""headsweep analysis: sweep directory (or several) -> statistics, figures, executed notebook, report.

    from headsweep import analysis
    paths = analysis.analyze("sweeps/sst2-heads")     # {'notebook', 'report', 'stats', 'figures', 'summary'}
    analysis.analyze(["sweeps/sst2", "sweeps/mnli"])  # several sweeps combined (analysis.combine)

or piece by piece (plain DataFrame-in, DataFrame-out functions):

    sweep = analysis.load(path)                       # .results, .importance, .metric, .predictions(trial_key)
    summary = analysis.summarize(sweep.results)       # mean and bounded interval over seeds per condition
    stats = analysis.compare(sweep.results, sweep)    # all families, all tests, Holm per (family, test)
    analysis.headline(stats, summary)                 # per model: baseline, top/bottom/random at the largest K
    analysis.prunable(results, stats, margin)         # how many heads can go (non-inferiority, seed bootstrap)
    analysis.per_head_effects(results, sweep)         # each head removed alone, BH over a model's heads

Knows nothing of torch or Ray: it only reads the files a sweep writes.
Figures (seaborn) live in analysis.figures, imported on first use.
"""

from .combine import check_compatible, combine
from .compare import FAMILIES, PRIMARY_TEST, compare, plan_comparisons, power_warnings, primary, seed_tests
from .conditions import collapse_draws, reference, sweep_metric
from .curves import curve_areas, curve_tests, headline, method_tests, sanity_check
from .equivalence import DEFAULT_MARGIN, margin_of, noninferiority_tests, prunable
from .examples import example_tests, mcnemar_by_seed
from .importance import (agreement_words, consistent_heads, importance_matrix, mean_importance, method_agreement,
                         rank_stability, seed_correspondence, shared_only, stability_summary, task_agreement)
from .load import Sweep, clean_importance, clean_results, load
from .notebook import analyze, build_notebook, compute, execute_notebook, read_table
from .per_head import importance_vs_damage, layer_shares, per_head_effects
from .report import build_report
from .stats import (bounded_interval, cohens_dz, example_t, holm, holm_adjust, mcnemar_test, paired_bootstrap,
                    paired_t, sign_flip_p, summarize, t_interval)

__all__ = [
    "DEFAULT_MARGIN", "FAMILIES", "PRIMARY_TEST", "Sweep", "agreement_words", "analyze", "bounded_interval", "build_notebook",
    "build_report", "check_compatible", "clean_importance", "clean_results", "cohens_dz", "collapse_draws",
    "combine", "compare", "compute", "consistent_heads", "curve_areas", "curve_tests", "example_t", "example_tests",
    "execute_notebook", "headline", "holm", "holm_adjust", "importance_matrix", "importance_vs_damage",
    "layer_shares", "load", "margin_of", "mcnemar_by_seed", "mcnemar_test", "noninferiority_tests",
    "per_head_effects", "prunable",
    "mean_importance", "method_agreement", "method_tests", "paired_bootstrap", "paired_t", "plan_comparisons",
    "power_warnings", "primary", "rank_stability", "read_table", "reference", "sanity_check", "seed_correspondence",
    "seed_tests", "shared_only", "sign_flip_p", "stability_summary", "summarize", "sweep_metric", "t_interval",
    "task_agreement",
]


def __getattr__(name):
    # Lazy: seaborn/matplotlib load only when figures are wanted.
    if name in ("figures", "figures_importance", "figures_heads", "figures_extra", "synthetic"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'headsweep.analysis' has no attribute {name!r}")
