"""Head importance, a registry of methods (``importance.method``), each ``(model, batches) ->
[n_layers, n_heads]`` raw scores on the CPU, computed in eval mode (dropout off, deterministic):

- ``gradient`` (Michel, Levy & Neubig 2019): I_h = E_x |dL(x)/d xi_h| at xi = 1. Every example
  gets its own gate vector, so one backward pass of the *summed* per-example losses yields each
  example's own gradient (example i's loss depends only on its own gates).
- ``ablation`` (trials/ablation.py): the loss increase when head h alone is masked.
- ``entropy`` (trials/entropy.py): the mean attention entropy of head h.

Each entry carries two properties:

- ``sign``: which way its raw score points, +1 when a higher score means a more important head
  (gradient, ablation), -1 when lower does (entropy: a focused, low-entropy head is taken as the
  important one);
- ``normalization``: its canonical form for ranking (``NORMALIZATIONS``). ``gradient``:
  ``layer_l2``, each layer's scores divided by their L2 norm, as Michel et al. do (gradient
  magnitudes differ in scale between layers). ``ablation`` and ``entropy``: ``none``: leave-one-out
  loss increases are already on one scale in every layer, and the between-layer differences of
  entropy are what it measures; normalising either per layer would rank a head that costs 30x
  more than another below it (tests/trials/test_importance.py has the toy case).

``ranking_scores`` applies both (``importance.normalize: auto`` = the method's own form; ``none``
or ``layer_l2`` override it for every method), so every strategy ranks by "higher = more
important" whatever the method. Active masks (``trials.masked``) stay in force: the iterative
strategy re-scores the masked model this way.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from headsweep.trials.adapters import head_layout
from headsweep.trials.gates import gated
from headsweep.trials.metrics import task_loss
from headsweep.trials.registry import Registry

from headsweep.trials.data import MODEL_INPUTS, model_inputs  # noqa: F401  (re-exported)

IMPORTANCE_METHODS = Registry("importance method", key="importance.method")


@IMPORTANCE_METHODS.register("gradient")
def head_importance(model: nn.Module, batches: Iterable[dict]) -> torch.Tensor:
    """Raw (unnormalised) E_x |dL(x)/d xi_h| as a float32 tensor [n_layers, n_heads] on the CPU.

    ``batches`` yields tokenised batches with ``labels``; tensors are moved to the model's device.
    """
    layout = head_layout(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = torch.zeros(layout.n_layers, layout.n_heads, dtype=torch.float64, device=device)
    n = 0
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
            b = batch["labels"].shape[0]
            gates = torch.ones(b, layout.n_layers, layout.n_heads, device=device, requires_grad=True)
            with gated(model, gates):
                logits = model(**model_inputs(batch)).logits
                # sum of per-example losses: d(sum)/d gates[i] = dL(x_i)/d gates[i]
                loss = task_loss(logits, batch["labels"], reduction="sum")
            (grad,) = torch.autograd.grad(loss, gates)      # [batch, layers, heads]
            total += grad.abs().sum(0).double()
            n += b
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("head_importance got no examples")
    return (total / n).float().cpu()


head_importance.sign = 1
head_importance.normalization = "layer_l2"


def sign(method: str) -> int:
    """+1 if a higher raw score of ``method`` means a more important head, -1 if lower does."""
    return getattr(IMPORTANCE_METHODS.lookup(method, "importance.method"), "sign", 1)


def normalization(method: str, normalize: str = "auto") -> str:
    """The normalisation ``method`` is ranked in: its own (``auto``), or the override."""
    if normalize != "auto":
        NORMALIZATIONS.lookup(normalize, "importance.normalize")
        return normalize
    return getattr(IMPORTANCE_METHODS.lookup(method, "importance.method"), "normalization", "none")


def ranking_scores(raw: torch.Tensor, method: str, normalize: str = "auto") -> torch.Tensor:
    """What strategies rank by (higher = more important): the raw scores of ``method`` in its
    normalisation (``normalization``), times the method's sign."""
    return NORMALIZATIONS[normalization(method, normalize)](raw) * sign(method)


def normalize_per_layer(scores: torch.Tensor, eps: float = 1e-20) -> torch.Tensor:
    """Divide each layer's scores by their L2 norm (Michel et al.'s per-layer normalisation)."""
    norm = scores.pow(2).sum(-1, keepdim=True).sqrt()
    return scores / norm.clamp_min(eps)


# ``importance.normalize``: "auto" (each method's own) or one of these for every method.
NORMALIZATIONS = Registry("normalization", key="importance.normalize")
NORMALIZATIONS.add("none", lambda scores: scores)
NORMALIZATIONS.add("layer_l2", normalize_per_layer)


# The other methods live in their own modules (which do not import this one).
from headsweep.trials.ablation import ablation_importance  # noqa: E402
from headsweep.trials.entropy import attention_entropy  # noqa: E402

IMPORTANCE_METHODS.add("ablation", ablation_importance)
IMPORTANCE_METHODS.add("entropy", attention_entropy)
