"""Iterative pruning (Michel, Levy & Neubig 2019, §4 and Fig. 4; transformers' bertology
``mask_heads``): remove the least important ``step`` of all heads, re-score importance on the
masked model, repeat until every head is gone. One trial, a results row per step; the removed
sets nest, and without recovery masking a row's ``heads_removed`` on the stage-A checkpoint
reproduces it.

Re-scoring is the sweep's importance method run on the model with the removed heads masked. Each
layer's scores are L2-normalised over the heads still present (the heads of the model as pruned
so far; removed heads are no longer candidates and their scores are left out). With
``recovery_epochs`` the model is fine-tuned that long under the mask after each removal, before it
is evaluated and re-scored, and the next step starts from the recovered weights.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from headsweep.trials.gates import mask_tensor, masked
from headsweep.trials.importance import IMPORTANCE_METHODS, normalize_per_layer, sign
from headsweep.trials.strategies import remove_least, step_count

Head = tuple[int, int]


def rescore(model, batches: Callable[[], list], method: str, removed: list[Head],
            normalize: bool = True) -> torch.Tensor:
    """Ranking scores (higher = more important) of the model with ``removed`` masked."""
    from headsweep.trials.adapters import head_layout
    with masked(model, removed):
        raw = IMPORTANCE_METHODS[method](model, batches()).double()
    present = mask_tensor(head_layout(model), removed).double()            # 1 = still there
    raw = raw * present
    return (normalize_per_layer(raw) if normalize else raw) * sign(method)


def steps(model, first_scores: torch.Tensor, step: float, method: str, batches: Callable[[], list],
          normalize: bool = True, recover: Callable | None = None) -> Iterator[tuple[int, list[Head]]]:
    """Yield (step number from 1, the heads removed so far) after each removal; the caller
    evaluates the model (under the mask) before the next step is computed. ``recover(removed)``
    fine-tunes the model under the mask after each removal. ``first_scores``: the stage-A
    ranking of the unmasked model."""
    n_layers, n_heads = first_scores.shape
    total = n_layers * n_heads
    per_step = step_count(step, total)
    scores, removed, s = first_scores, [], 0
    while len(removed) < total:
        s += 1
        removed = remove_least(scores, min(per_step, total - len(removed)), removed=removed)
        if recover is not None:
            recover(removed)
        yield s, removed
        if len(removed) < total:
            scores = rescore(model, batches, method, removed, normalize)
