"""Evaluation metrics, a registry: each takes (labels, preds) as numpy arrays and returns a float.

The range of each metric (for intervals that must stay inside it) is in trials/schema.py.
"""
from __future__ import annotations

import numpy as np

from trials.registry import Registry

METRICS = Registry("metric", key="metric")


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
