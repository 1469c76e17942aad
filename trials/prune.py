"""Physical head pruning: slice removed heads out of q/k/v and the output projection, in place.

The result has fewer parameters and gives the same logits as ``masked(model, heads)`` (the
output-projection bias stays, as with a zero gate). A layer may lose every head.
Heads are named by their *original* (layer, head) index even after earlier pruning; the heads
still present are kept in ``model.headsweep_present_heads``.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from torch import nn

from headsweep.trials.adapters import adapter_for, head_layout
from headsweep.trials.gates import mask_tensor

Head = tuple[int, int]


def prune_heads(model: nn.Module, heads: Sequence[Head]) -> nn.Module:
    """Remove ``heads`` physically (in place) and return the model. Inside
    ``trials.units.units(model, "kv_group")`` the pairs name KV groups (the pruned model names
    query heads again)."""
    from headsweep.trials.units import without_units
    active = head_layout(model)
    if active.unit != "head":
        heads = active.query_heads_of(heads)
    without_units(model)
    layout = head_layout(model)
    mask_tensor(layout, heads)  # validates the pairs
    ad = adapter_for(model)
    present = getattr(model, "headsweep_present_heads", None) or {
        i: list(range(layout.n_heads)) for i in range(layout.n_layers)}
    by_layer = defaultdict(set)
    for layer, head in heads:
        by_layer[int(layer)].add(int(head))
    for layer, drop in sorted(by_layer.items()):
        current = present[layer]
        if not drop & set(current):
            continue
        present[layer] = ad.prune_present(model, layer, current, drop, layout.head_dim)
    model.headsweep_present_heads = present
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
