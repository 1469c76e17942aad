"""Head gates: forward pre-hooks on each layer's attention output projection.

The projection's input is head-major, ``[batch, seq, heads*head_dim]``; a gate multiplies head
h's slice by xi_h. xi_h = 0 removes the head exactly as transformers' old ``head_mask`` did (the
projection bias stays). Gates come in three shapes:

- ``[layers, heads]``          one mask for the whole batch (``masked``)
- ``[batch, layers, heads]``   one mask per example: per-example importance gradients, or many
                               masks evaluated in one pass (``gated`` / ``multi_masked``)

Hooks are named like paths (``layer.3.attn.out_proj``) and always removed on exit, even after an
exception, so a mask can never leak into the next trial.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from headsweep.trials.adapters import adapter_for, head_layout
from headsweep.trials.errors import UserError

Head = tuple[int, int]


def hook_name(layer: int) -> str:
    return f"layer.{layer}.attn.out_proj"


def _make_pre_hook(gates: torch.Tensor, layer: int, head_dim: int, present: list[int] | None):
    # After physical pruning the input holds only the heads still present, in order. A padding
    # slot of a grouped-query layer (-1, trials/gqa.py) meets zero output columns: any gate will do.
    idx = None if present is None else torch.tensor([max(h, 0) for h in present], dtype=torch.long,
                                                    device=gates.device)

    def pre_hook(module, args):
        x = args[0]                                   # [batch, seq, heads*head_dim]
        b, s, width = x.shape
        n_heads = width // head_dim
        g = gates[..., layer, :] if idx is None else gates[..., layer, :].index_select(-1, idx)
        if g.dim() == 1:                              # one mask: [heads]
            g = g.view(1, 1, n_heads, 1)
        else:                                         # per example: [batch, heads]
            g = g.view(b, 1, n_heads, 1)
        x = (x.view(b, s, n_heads, head_dim) * g.to(x.dtype)).view(b, s, width)
        return (x, *args[1:])
    return pre_hook


@contextlib.contextmanager
def gated(model: nn.Module, gates: torch.Tensor, layers: Iterable[int] | None = None) -> Iterator[dict]:
    """Multiply head outputs by ``gates`` ([layers, heads] or [batch, layers, heads]) inside the block.

    Gradients flow into ``gates`` if it requires grad. ``layers`` limits which layers get a hook
    (layers whose gates are all 1 need none). Yields ``{hook_name: handle}``.
    """
    layout = head_layout(model)
    ad = adapter_for(model)
    if gates.shape[-2:] != (layout.n_layers, layout.n_heads):
        raise ValueError(f"gates shape {tuple(gates.shape)} does not end in "
                         f"(n_layers={layout.n_layers}, n_heads={layout.n_heads})")
    present = getattr(model, "headsweep_present_heads", None)
    handles = {}
    try:
        for i in (range(layout.n_layers) if layers is None else layers):
            proj = ad.out_proj(model, i)
            handles[hook_name(i)] = proj.register_forward_pre_hook(
                _make_pre_hook(gates, i, layout.head_dim, present[i] if present else None))
        yield handles
    finally:
        for h in handles.values():
            h.remove()


def mask_tensor(layout, heads: Sequence[Head], *, device=None) -> torch.Tensor:
    """[layers, heads] of ones with zeros at ``heads``; validates every (layer, head) pair."""
    m = torch.ones(layout.n_layers, layout.n_heads, device=device)
    for pair in heads:
        layer, head = (int(v) for v in pair)
        if not (0 <= layer < layout.n_layers and 0 <= head < layout.n_heads):
            raise UserError("heads", [layer, head],
                            f"no such head in a {layout.n_layers}x{layout.n_heads} model")
        m[layer, head] = 0.0
    return m


@contextlib.contextmanager
def masked(model: nn.Module, heads: Sequence[Head]) -> Iterator[torch.Tensor]:
    """Remove ``heads`` ((layer, head) pairs) inside the block; hooks only on affected layers."""
    layout = head_layout(model)
    device = next(model.parameters()).device
    m = mask_tensor(layout, heads, device=device)
    touched = sorted({int(layer) for layer, _ in heads})
    with gated(model, m, layers=touched):
        yield m


@contextlib.contextmanager
def multi_masked(model: nn.Module, masks: Sequence[Sequence[Head]], batch_size: int) -> Iterator[torch.Tensor]:
    """Evaluate M masks in one pass: the caller repeats each batch M times (``repeat_batch``).

    Row r of the repeated batch (mask-major: rows m*batch_size..(m+1)*batch_size) sees mask m.
    """
    layout = head_layout(model)
    device = next(model.parameters()).device
    per_mask = torch.stack([mask_tensor(layout, hs, device=device) for hs in masks])  # [M, L, H]
    gates = per_mask.repeat_interleave(batch_size, dim=0)                            # [M*B, L, H]
    touched = sorted({int(layer) for hs in masks for layer, _ in hs})
    with gated(model, gates, layers=touched):
        yield gates


def repeat_batch(batch: dict, times: int) -> dict:
    """Stack ``times`` copies of every tensor in the batch along dim 0 (mask-major)."""
    return {k: v.repeat(times, *([1] * (v.dim() - 1))) if torch.is_tensor(v) else v
            for k, v in batch.items()}
