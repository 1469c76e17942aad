"""Units: what importance, the strategies and K count: query heads (``head``, the default) or
key/value groups (``kv_group``; the sweep file's ``importance.unit``).

Under grouped-query attention (GQA) a layer's n query heads share n_kv key/value heads: query head
h reads KV head h // (n / n_kv) (transformers' ``repeat_kv``). So the query heads of one KV group
sit side by side at the output projection's input, and a group is a head n / n_kv times as wide
there. Inside ``units(model, "kv_group")`` ``head_layout(model)`` reports exactly that: one unit
per KV group, ``head_dim`` the group's width. Gates (one per group, multiplying all its query
heads), masks ((layer, group) pairs), the importance methods and the strategies then work on groups
unchanged; the gradient score is the exact derivative of the loss in the group's gate (per example
the sum of its query heads' gate gradients, from the same backward pass), ablation masks the whole
group, entropy averages its query heads' entropies. Without GQA a group is one head and the two
units coincide. Multi-query attention (n_kv = 1) has one group per layer: ``kv_group`` is refused.

Physical pruning, parameter counts and results rows name query heads: ``HeadLayout.query_heads_of``
turns (layer, group) pairs into the query heads they cover.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from headsweep.trials.adapters import HeadLayout, head_layout
from headsweep.trials.errors import UserError
from headsweep.trials.spec import UNITS

UNIT_ATTR = "headsweep_unit"      # set on the model inside ``units``; read by ``head_layout``


def unit_problem(unit: str, n_kv_heads: int, n_heads: int, model_type: str = "") -> str | None:
    """Why ``unit`` cannot be used on a model with ``n_heads`` query and ``n_kv_heads`` key/value
    heads per layer, or None. (One head per layer, as the one-head variant has, is no MQA.)"""
    if unit not in UNITS:
        return f"must be one of {', '.join(UNITS)}"
    if unit == "kv_group" and n_kv_heads == 1 and n_heads > 1:
        what = f"{model_type} uses" if model_type else "this model uses"
        return (f"{what} multi-query attention (one key/value head per layer), so a KV group is the "
                "whole layer; use importance.unit: head")
    return None


@contextlib.contextmanager
def units(model: nn.Module, unit: str = "head") -> Iterator[HeadLayout]:
    """Inside the block, ``head_layout(model)`` and so every gate, mask, importance method and
    strategy count ``unit``s; yields that layout. Needs the unpruned model for ``kv_group``."""
    query = head_layout(model)
    problem = unit_problem(unit, query.kv_heads, query.query_heads, model.config.model_type)
    if problem:
        raise UserError("importance.unit", unit, problem)
    if unit == "head" or getattr(model, "headsweep_present_heads", None):
        if unit != "head":
            raise ValueError("units(kv_group) needs the unpruned model (mask heads instead of pruning them)")
        yield query
        return
    before = model.__dict__.get(UNIT_ATTR)
    setattr(model, UNIT_ATTR, unit)
    try:
        yield head_layout(model)
    finally:
        if before is None:
            without_units(model)
        else:
            setattr(model, UNIT_ATTR, before)


def unit_layout(model: nn.Module, query: HeadLayout) -> HeadLayout:
    """The model's layout in its active unit (``query``: its layout in query heads)."""
    if getattr(model, UNIT_ATTR, "head") == "head":
        return query
    g, n_kv = query.group_size, query.kv_heads
    return HeadLayout(query.n_layers, n_kv, query.head_dim * g, (n_kv,) * query.n_layers, n_kv,
                      unit="kv_group", query_per_unit=g)


def without_units(model: nn.Module) -> nn.Module:
    """``model`` with no active unit (a physically pruned copy names query heads); in place."""
    model.__dict__.pop(UNIT_ATTR, None)
    return model
