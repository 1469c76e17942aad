"""Iterative pruning (Michel, Levy & Neubig 2019, §4 and Fig. 4; transformers' bertology
``mask_heads``): remove the least important heads, re-score importance on the masked model,
repeat until every head is gone. One trial, a results row per step; the removed sets nest, and
without recovery masking a row's ``heads_removed`` on the stage-A checkpoint reproduces it.

The removal targets (``strategies.iterative_targets``): every K of the sweep's grid (as head counts of the model,
``PruneSpec.k_grid``), reached in steps of at most ``step`` of all heads, then on to all heads in
steps of ``step``; a step that would pass a grid K stops at it. So the iterative curve has a row
at every K where bottom-, top- and random-K have one.

Re-scoring is the sweep's importance method run on the model with the removed heads masked, in
the method's normalisation (trials.importance; for ``layer_l2`` each layer's scores are
normalised over the heads still present: removed heads are no longer candidates and their
scores are left out). With ``recovery_epochs`` the model is fine-tuned that long under the mask
after each removal, before it is evaluated and re-scored, and the next step starts from the
recovered weights.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from headsweep.trials.gates import mask_tensor, masked
from headsweep.trials.importance import IMPORTANCE_METHODS, ranking_scores
from headsweep.trials.strategies import iterative_targets, remove_least, step_count

Head = tuple[int, int]


def rescore(model, batches: Callable[[], list], method: str, removed: list[Head],
            normalize: str = "auto") -> torch.Tensor:
    """Ranking scores (higher = more important) of the model with ``removed`` masked, in the
    method's normalisation over the heads still present."""
    from headsweep.trials.adapters import head_layout
    with masked(model, removed):
        raw = IMPORTANCE_METHODS[method](model, batches()).double()
    present = mask_tensor(head_layout(model), removed).double()            # 1 = still there
    return ranking_scores(raw * present, method, normalize)


def steps(model, first_scores: torch.Tensor, step: float, method: str, batches: Callable[[], list],
          normalize: str = "auto", recover: Callable | None = None,
          grid: tuple[int, ...] = ()) -> Iterator[tuple[int, list[Head]]]:
    """Yield (step number from 1, the heads removed so far) after each removal; the caller
    evaluates the model (under the mask) before the next step is computed. ``recover(removed)``
    fine-tunes the model under the mask after each removal. ``first_scores``: the stage-A
    ranking of the unmasked model; ``grid``: head counts every one of which gets a step."""
    n_layers, n_heads = first_scores.shape
    total = n_layers * n_heads
    scores, removed = first_scores, []
    plan = iterative_targets(total, step_count(step, total), grid)
    for s, target in enumerate(plan, start=1):
        removed = remove_least(scores, target - len(removed), removed=removed)
        if recover is not None:
            recover(removed)
        yield s, removed
        if len(removed) < total:
            scores = rescore(model, batches, method, removed, normalize)
