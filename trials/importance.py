"""Head importance (Michel, Levy & Neubig 2019): I_h = E_x |dL(x)/d xi_h| at xi = 1.

Every example gets its own gate vector, so a single backward pass of the *summed* per-example
losses yields each example's own gradient (example i's loss depends only on its own gates).
Importance is computed in eval mode (dropout off), so it is deterministic.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from trials.adapters import head_layout
from trials.gates import gated
from trials.registry import Registry

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
IMPORTANCE_METHODS = Registry("importance method", key="importance.method")


def model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS}


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
                loss = F.cross_entropy(logits.float(), batch["labels"], reduction="sum")
            (grad,) = torch.autograd.grad(loss, gates)      # [batch, layers, heads]
            total += grad.abs().sum(0).double()
            n += b
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("head_importance got no examples")
    return (total / n).float().cpu()


def normalize_per_layer(scores: torch.Tensor, eps: float = 1e-20) -> torch.Tensor:
    """Divide each layer's scores by their L2 norm (Michel et al.'s per-layer normalisation)."""
    norm = scores.pow(2).sum(-1, keepdim=True).sqrt()
    return scores / norm.clamp_min(eps)
