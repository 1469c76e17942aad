"""The tables a sweep writes, column by column, and the strategy order (docs/design.md).

One owner for every column list: the trial row builder (``trials.run``), the orchestrator's
tables, the analysis and the synthetic sweeps all build and read rows through this module, so
a column cannot be written by one side and missed by the other. Light to import (no numpy).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    name: str
    kind: str                 # str | int | float | bool | json (a JSON text)
    doc: str
    default: Any = None       # None: missing (NaN in the table)
    contract: bool = False    # part of the results contract every sweep writes
    varies: bool = False      # differs between two identical runs (timings, attempts, provenance)


def _c(name, kind, doc, default=None, **kw) -> Column:
    return Column(name, kind, doc, default, **kw)


# ---------------------------------------------------------------------------- results.parquet
RESULT_COLUMNS: tuple[Column, ...] = (
    # the contract, in its order
    _c("model", "str", "model label (models[].label)", contract=True),
    _c("strategy", "str", "how heads were chosen for removal (STRATEGY_ORDER)", contract=True),
    _c("k", "int", "units removed from the whole model (query heads; KV groups with unit kv_group)", 0,
       contract=True),
    _c("k_fraction", "float", "k / units of the model (= query heads removed / heads_total)", 0.0, contract=True),
    _c("seed", "int", "the fine-tuning seed", contract=True),
    _c("recovery_epochs", "float", "epochs fine-tuned with the mask before evaluation", 0.0, contract=True),
    _c("accuracy", "float", "evaluation accuracy", contract=True),
    _c("f1", "float", "evaluation macro F1 (binary tasks: the macro average too)", contract=True),
    _c("loss", "float", "mean evaluation loss (cross-entropy; MSE for regression)", contract=True),
    _c("n_eval", "int", "evaluation examples", contract=True),
    _c("heads_total", "int", "(query) heads of the unpruned model", contract=True),
    _c("heads_kept", "int", "heads_total - the query heads in heads_removed (= heads_total - k for unit head)",
       contract=True),
    _c("heads_removed", "json", "[[layer, head], ...]: masking these on the checkpoint reproduces the row",
       "[]", contract=True),
    _c("trial_key", "str", "hash of the trial's frozen spec: the row, cache and predictions key", contract=True),
    # what the condition is
    _c("arch", "str", "multi-head, or single-head for the one-head architecture", "multi-head"),
    _c("variant", "str", "label, plus -1head for the one-head architecture"),
    _c("arch_init", "str", "one-head architecture init (pretrained / random); empty otherwise", ""),
    _c("per_layer", "bool", "K was a count or fraction of each layer's heads", False),
    _c("k_requested", "json", "K as the sweep file gave it (an int count or a fraction)", "0"),
    _c("stage", "str", "A (fine-tune) or B (pruning trial)"),
    _c("stage_a_key", "str", "trial_key of the stage-A fine-tune the row starts from"),
    _c("spec_key", "str", "key of the trial (trials/<spec_key>/) that produced the row; several rows of "
                          "one trial (iterative) share it, and trial_key stays unique per row"),
    _c("importance_method", "str", "the importance criterion that ranked the heads (stage A: the first "
                                   "method computed)", "gradient"),
    _c("draw", "int", "random-K draw index (random_draws masks per checkpoint and K); missing otherwise"),
    _c("layer", "int", "layer-single-head: the one layer reduced to its most important head"),
    _c("head", "int", "each-head: the one head removed (with layer)"),
    _c("step", "int", "iterative: the pruning step that produced the row (1 = first)"),
    _c("unit", "str", "importance.unit: what k, k_fraction and the strategies count (head: query heads; "
                      "kv_group: key/value groups, each with every query head that reads it)", "head"),
    _c("groups_removed", "json", "[[layer, kv_group], ...]: the KV groups left with no query head (unit "
                                 "kv_group: the groups removed; without GQA the heads removed)", "[]"),
    # what was measured besides the contract's metrics
    _c("metric", "str", "the sweep's primary metric (accuracy, f1, mcc, pearson, spearman)", "accuracy"),
    _c("mcc", "float", "Matthews correlation (computed where the task is classification)"),
    _c("pearson", "float", "Pearson correlation of prediction and label (regression)"),
    _c("spearman", "float", "Spearman correlation of prediction and label (regression)"),
    _c("eval_split", "str", "the evaluation split the metrics are on"),
    _c("extra_evals", "json", "further evaluations: {split: {metric: value}} (MNLI mismatched)", "{}"),
    _c("attn_params_kept", "int", "attention parameters left after physically pruning heads_removed"),
    _c("params_total", "int", "parameters of the unpruned model"),
    _c("params_pruned", "int", "parameters after physically pruning heads_removed"),
    _c("kv_cache_bytes_per_token_total", "int", "bytes one token adds to the KV cache of the unpruned model "
                                                "(keys and values of every KV head and layer, weight dtype)"),
    _c("kv_cache_bytes_per_token", "int", "the same after physically pruning heads_removed (shrinks only as "
                                          "KV groups lose all their query heads)"),
    _c("speedup", "float", "latency of the unpruned model / the pruned one, same worker (measure_speed)"),
    _c("pruned_model", "str", "the saved pruned model, relative to the sweep directory (save_pruned)"),
    _c("node_id", "str", "Ray node the trial ran on", varies=True),
    _c("host", "str", "host the trial ran on", varies=True),
    # how it ran
    _c("eval_seconds", "float", "evaluation time", 0.0, varies=True),
    _c("config", "json", "the resolved trial spec"),
    _c("versions", "json", "library versions", varies=True),
    _c("git_hash", "str", "headsweep's git HEAD (+dirty)", varies=True),
    _c("train_loss", "float", "mean training loss (stage A; stage B with recovery)"),
    _c("train_steps", "int", "optimizer steps"),
    _c("train_examples", "int", "training examples seen"),
    _c("train_seconds", "float", "training time", varies=True),
    _c("train_examples_per_s", "float", "training throughput", varies=True),
    _c("importance_seconds", "float", "importance time", varies=True),
    _c("importance_examples", "int", "held-out training examples importance was computed on"),
    _c("mixed_precision", "str", "resolved precision (no / bf16 / fp16)"),
    _c("attempt", "int", "which attempt produced the row (1 = first)", 1, varies=True),
)
RESULT_NAMES = tuple(c.name for c in RESULT_COLUMNS)
CONTRACT_COLUMNS = [c.name for c in RESULT_COLUMNS if c.contract]
VARYING_COLUMNS = tuple(c.name for c in RESULT_COLUMNS if c.varies)
RESULTS_SORT = ["model", "arch", "strategy", "recovery_epochs", "k", "seed", "trial_key"]
METRIC_COLUMNS = ("accuracy", "f1", "mcc", "pearson", "spearman", "loss")

# A condition is everything that defines a group of trials except the seed (and the random-K
# draw, which the analysis averages within a seed). "task" is not a results column: the analysis
# adds it (the sweep's data.source) so that several sweeps on different tasks can be combined.
CONDITION = ["task", "model", "variant", "arch", "arch_init", "importance_method", "strategy", "per_layer",
             "k", "layer", "head", "recovery_epochs"]

# The range of each metric: intervals for a mean stay inside it, and those for a difference
# inside (lo - hi, hi - lo); figure axes never leave it.
METRIC_RANGES = {"accuracy": (0.0, 1.0), "f1": (0.0, 1.0), "mcc": (-1.0, 1.0), "pearson": (-1.0, 1.0),
                 "spearman": (-1.0, 1.0), "loss": (0.0, float("inf"))}
# Metrics that are a mean of per-example correctness: only these have per-example tests.
CORRECTNESS_METRICS = ("accuracy",)


def result_row(**values) -> dict:
    """A complete results row in column order; unknown columns are a bug, so they raise."""
    unknown = sorted(set(values) - set(RESULT_NAMES))
    if unknown:
        raise KeyError(f"not results columns: {', '.join(unknown)} (add them to trials/schema.py)")
    return {c.name: values.get(c.name, c.default) for c in RESULT_COLUMNS}


# ---------------------------------------------------------------------------- other tables
# score: the ranking score (higher = more important) in the method's `normalization` (none |
# layer_l2: importance.normalize, auto = each method's own); score_raw: as the method gives it.
IMPORTANCE_COLUMNS = ["model", "seed", "method", "normalization", "layer", "head", "score", "score_raw"]
TRIAL_IMPORTANCE_COLUMNS = IMPORTANCE_COLUMNS[2:]   # one trial's, before model/seed
PREDICTION_COLUMNS = ["example_id", "label", "pred", "correct", "prob"]

STATS_COLUMNS = [
    "comparison_id", "family", "task", "model", "group_a", "group_b", "variant_a", "strategy_a", "variant_b",
    "strategy_b", "arch_b", "arch_init_b", "importance_method", "k", "k_fraction", "per_layer", "layer",
    "recovery_epochs", "metric", "level", "test", "primary", "n", "n_seeds", "n_examples", "n_draws", "mean_a",
    "mean_b", "difference", "sd", "ci_low", "ci_high", "ci_kind", "sim_ci_low", "sim_ci_high", "sim_ci_kind",
    "effect_size", "effect_size_name", "statistic", "df", "p", "p_adjusted", "family_size", "significant", "note",
]
SUMMARY_COLUMNS = CONDITION + ["k_fraction", "metric", "eval_split", "extra_eval", "n", "mean", "std", "sem",
                               "ci_low", "ci_high", "interval", "n_draws", "draw_sd", "seeds", "note"]
# analysis/prunable.csv: per (model, strategy, ...) how many heads can go at the non-inferiority margin.
PRUNABLE_COLUMNS = ["model", "strategy", "margin", "prunable_k", "prunable_k_fraction", "ci_low", "ci_high",
                    "n_seeds", "task", "variant", "importance_method", "per_layer", "recovery_epochs", "heads_total",
                    "grid_k", "ci_low_k", "ci_high_k", "n_boot", "interval", "note"]
# analysis/per_head.csv: each head removed alone (strategy each-head) against the unpruned model.
PER_HEAD_COLUMNS = ["task", "model", "variant", "recovery_epochs", "layer", "head", "level", "seed", "test", "n",
                    "n_seeds", "n_examples", "mean_base", "mean_head", "difference", "sd", "ci_low", "ci_high", "p",
                    "q", "significant", "note"]
# analysis/importance_vs_damage.csv: does a criterion's ranking predict the damage of removing a head?
DAMAGE_COLUMNS = ["task", "model", "method", "n_heads", "n_seeds", "spearman_mean", "spearman_min",
                  "spearman_max", "spearman_of_means", "note"]

# ---------------------------------------------------------------------------- strategies
# Reading order everywhere (tables, reports, figure legends); trials.strategies registers these.
STRATEGY_ORDER = ("none", "top", "bottom", "random", "single-head", "layer-single-head", "iterative", "each-head")
REMOVAL_STRATEGIES = ("top", "bottom", "random")   # the ones that take K
# importance_method of layer-single-head rows with layer_single_head.keep: best: each layer's
# survivor is chosen on the evaluation set (Michel Table 2's oracle), not by an importance score.
ORACLE = "oracle"
CLASSIC_STRATEGIES = STRATEGY_ORDER[:5]            # a sweep file's default


def strategy_rank(name: str) -> int:
    return STRATEGY_ORDER.index(name) if name in STRATEGY_ORDER else len(STRATEGY_ORDER)
