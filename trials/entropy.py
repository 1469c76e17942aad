"""Attention-entropy importance (Clark et al. 2019; transformers' bertology example): the mean
entropy, in nats, of each head's attention distribution, over every non-padding query token of
the importance examples (token-weighted, as bertology's ``compute_heads_importance``).

A low-entropy head attends sharply; a high-entropy one spreads its attention (towards a bag of
words). A KV group (``importance.unit: kv_group``) scores the mean entropy of its query heads (each
keeps its own attention distribution; the group shares only keys and values). The method's ``sign`` is -1: lower entropy ranks as more important. The attention
probabilities need ``output_attentions``, which fused (sdpa/flash) kernels do not return, so the
pass runs with eager attention and the model's own implementation is restored afterwards.

Registered as ``entropy`` in ``trials.importance.IMPORTANCE_METHODS``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import nn

from headsweep.trials.adapters import head_layout
from headsweep.trials.data import model_inputs


@torch.no_grad()
def attention_entropy(model: nn.Module, batches: Iterable[dict]) -> torch.Tensor:
    """Mean attention entropy per head, float32 [n_layers, n_heads] on the CPU."""
    layout = head_layout(model)
    if getattr(model, "headsweep_present_heads", None):
        raise ValueError("attention_entropy needs the unpruned model (mask heads instead of pruning them)")
    device = next(model.parameters()).device
    total = torch.zeros(layout.n_layers, layout.n_heads, dtype=torch.float64, device=device)
    tokens = 0
    was_training = model.training
    model.eval()
    try:
        with eager_attention(model):
            for batch in batches:
                batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
                out = model(**model_inputs(batch), output_attentions=True)
                queries = batch["attention_mask"].to(torch.float64)              # [batch, q]
                for layer, att in enumerate(out.attentions):                     # [batch, heads, q, k]
                    p = att.double()
                    h = -torch.special.xlogy(p, p).sum(-1)                       # [batch, heads, q]
                    # a KV group (trials/units.py): the mean of its query heads' entropies
                    h = h.view(h.shape[0], layout.n_heads, layout.query_per_unit, -1).mean(2)
                    total[layer] += (h * queries[:, None, :]).sum((0, 2))
                tokens += int(queries.sum())
    finally:
        model.train(was_training)
    if tokens == 0:
        raise ValueError("attention_entropy got no examples")
    return (total / tokens).float().cpu()


attention_entropy.sign = -1
attention_entropy.normalization = "none"    # its differences between layers are what it measures


@contextlib.contextmanager
def eager_attention(model: nn.Module):
    """Run the block with eager attention (it returns the attention probabilities)."""
    before = model.config._attn_implementation
    if before != "eager":
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if before != "eager":
            model.set_attn_implementation(before)
