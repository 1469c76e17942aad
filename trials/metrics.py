"""Evaluation metrics, a registry: each takes (labels, preds) as numpy arrays and returns a float.

Classification metrics (accuracy, f1, mcc) take class ids; the regression metrics (pearson,
spearman: STS-B, ``num_labels: 1``) take real-valued predictions. ``compute`` returns every metric
that applies to the task, so each results row carries a column for all of them; the sweep's
``metric:`` names the primary one. The range of each metric (for intervals that must stay inside
it) is in trials/schema.py.
"""
from __future__ import annotations

import warnings

import numpy as np

from headsweep.trials.registry import Registry

METRICS = Registry("metric", key="metric")
CLASSIFICATION = ("accuracy", "f1", "mcc")
REGRESSION = ("pearson", "spearman")


@METRICS.register("accuracy")
def accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    return float(np.mean(labels == preds)) if len(labels) else float("nan")


@METRICS.register("f1")
def macro_f1(labels: np.ndarray, preds: np.ndarray, num_labels: int | None = None) -> float:
    """Unweighted mean over classes of F1 (a class absent from both labels and preds scores 0)."""
    n = num_labels if num_labels is not None else int(max(labels.max(initial=0), preds.max(initial=0))) + 1
    f1s = []
    for c in range(n):
        tp = np.sum((preds == c) & (labels == c))
        fp = np.sum((preds == c) & (labels != c))
        fn = np.sum((preds != c) & (labels == c))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(f1s))


@METRICS.register("mcc")
def mcc(labels: np.ndarray, preds: np.ndarray, num_labels: int | None = None) -> float:
    """Matthews correlation, multi-class (Gorodkin's R_K, as scikit-learn computes it); 0 when
    either the labels or the predictions are all one class (the correlation is undefined)."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    n = num_labels if num_labels is not None else int(max(labels.max(initial=0), preds.max(initial=0))) + 1
    cm = np.zeros((n, n), dtype=np.float64)                 # [true, predicted]
    np.add.at(cm, (labels, preds), 1.0)
    t, p = cm.sum(1), cm.sum(0)                             # true / predicted counts per class
    s, c = cm.sum(), np.trace(cm)
    denom = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - t @ p) / denom) if denom > 0 else 0.0


def _correlation(fn, labels, preds) -> float:
    labels, preds = np.asarray(labels, dtype=np.float64), np.asarray(preds, dtype=np.float64)
    if len(labels) < 2 or np.ptp(labels) == 0 or np.ptp(preds) == 0:
        return float("nan")                                 # undefined for a constant input
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(labels, preds).statistic)


@METRICS.register("pearson")
def pearson(labels: np.ndarray, preds: np.ndarray) -> float:
    from scipy.stats import pearsonr
    return _correlation(pearsonr, labels, preds)


@METRICS.register("spearman")
def spearman(labels: np.ndarray, preds: np.ndarray) -> float:
    from scipy.stats import spearmanr
    return _correlation(spearmanr, labels, preds)


def is_regression(num_labels: int) -> bool:
    return num_labels == 1


def applicable(num_labels: int) -> tuple[str, ...]:
    """The metrics computed for a task: classification or regression ones."""
    return REGRESSION if is_regression(num_labels) else CLASSIFICATION


def compute(labels: np.ndarray, preds: np.ndarray, num_labels: int) -> dict[str, float]:
    """Every applicable metric; ``preds`` are class ids, or real values for regression."""
    if is_regression(num_labels):
        return {name: METRICS[name](labels, preds) for name in REGRESSION}
    return {"accuracy": accuracy(labels, preds), "f1": macro_f1(labels, preds, num_labels),
            "mcc": mcc(labels, preds, num_labels)}


def task_loss(logits, labels, reduction: str = "mean"):
    """The loss the model is trained with: cross-entropy, or MSE for regression (one output),
    as transformers' ``*ForSequenceClassification`` computes it. Tensors in, a tensor out (torch is
    imported here, not at module level: the sweep-file validation reads METRICS without torch)."""
    import torch.nn.functional as F
    logits = logits.float()
    if logits.shape[-1] == 1:
        return F.mse_loss(logits[:, 0], labels.float(), reduction=reduction)
    return F.cross_entropy(logits, labels, reduction=reduction)
