"""headsweep analysis: sweep directory -> statistics, figures, executed notebook, report.

    import analysis
    paths = analysis.analyze("sweeps/sst2-heads")     # {'notebook', 'report', 'stats', 'figures', 'summary'}

or piece by piece (plain DataFrame-in, DataFrame-out functions):

    sweep = analysis.load(path)                       # .results, .importance, .predictions(trial_key)
    summary = analysis.summarize(sweep.results)       # mean, std, n, 95% t-interval per condition
    stats = analysis.compare(sweep.results, sweep)    # all families, all tests, Holm per (family, test)

Knows nothing of torch or Ray: it only reads the files a sweep writes.
Figures (seaborn) live in analysis.figures, imported on first use.
"""

from .compare import (FAMILIES, PRIMARY_TEST, compare, example_tests, mcnemar_by_seed, plan_comparisons,
                      power_warnings, primary, seed_tests)
from .importance import consistent_heads, importance_matrix, mean_importance, rank_stability, stability_summary
from .load import Sweep, clean_importance, clean_results, load
from .notebook import analyze, build_notebook, execute_notebook
from .report import build_report
from .stats import (cohens_dz, holm, holm_adjust, mcnemar_test, paired_bootstrap, paired_t, sign_flip_p,
                    summarize, t_interval)

__all__ = [
    "FAMILIES", "PRIMARY_TEST", "Sweep", "analyze", "build_notebook", "build_report", "clean_importance",
    "clean_results", "cohens_dz", "compare", "consistent_heads", "example_tests", "execute_notebook", "holm",
    "holm_adjust", "importance_matrix", "load", "mcnemar_by_seed", "mcnemar_test", "mean_importance",
    "paired_bootstrap", "paired_t", "plan_comparisons", "power_warnings", "primary", "rank_stability",
    "seed_tests", "sign_flip_p", "stability_summary", "summarize", "t_interval",
]


def __getattr__(name):
    # Lazy: seaborn/matplotlib load only when figures are wanted.
    if name in ("figures", "synthetic"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
