"""Head-removal strategies: which (layer, head) pairs to remove, given importance scores.

K always counts heads removed; ``resolve_k`` turns an integer or a fraction into a count, of all
heads (global) or of each layer's heads (``per_layer``). Ties are broken by (layer, head) order,
so every strategy is deterministic; ``random`` depends only on the seed.
"""
from __future__ import annotations

import math

import numpy as np

from trials.errors import UserError, registry_error

Head = tuple[int, int]
STRATEGIES: dict[str, callable] = {}


def register_strategy(name: str):
    def deco(fn):
        STRATEGIES[name] = fn
        return fn
    return deco


def resolve_k(k, n_layers: int, n_heads: int, per_layer: bool = False) -> int:
    """Heads to remove (per layer if ``per_layer``) for an int count or a float fraction in (0, 1).

    Fractions round to the nearest count (half up) and remove at least one head.
    """
    pool = n_heads if per_layer else n_layers * n_heads
    where = "per layer" if per_layer else "in the model"
    if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)):
        raise UserError("k", k, "must be an integer head count or a fraction in (0, 1)")
    if isinstance(k, (float, np.floating)):  # floats are fractions, never counts (1.0 is an error)
        if not 0.0 < k < 1.0:
            raise UserError("k", k, "a fractional K must lie in (0, 1); write head counts as integers")
        return max(1, math.floor(k * pool + 0.5))
    k = int(k)
    if not 0 <= k <= pool:
        raise UserError("k", k, f"must be between 0 and {pool} (heads {where})")
    return k


def _order(scores: np.ndarray, descending: bool) -> np.ndarray:
    """Flat indices sorted by score, ties by flat (layer-major) index: stable and deterministic."""
    flat = scores.reshape(-1)
    key = -flat if descending else flat
    return np.lexsort((np.arange(flat.size), key))


def _pick(scores: np.ndarray, k: int, per_layer: bool, descending: bool) -> list[Head]:
    n_layers, n_heads = scores.shape
    if per_layer:
        return sorted((layer, int(h)) for layer in range(n_layers)
                      for h in _order(scores[layer:layer + 1], descending)[:k])
    return sorted(divmod(int(i), n_heads) for i in _order(scores, descending)[:k])


@register_strategy("none")
def none(scores, k, per_layer=False, seed=0):
    return []


@register_strategy("top")
def top(scores, k, per_layer=False, seed=0):
    """Remove the K most important heads."""
    return _pick(scores, k, per_layer, descending=True)


@register_strategy("bottom")
def bottom(scores, k, per_layer=False, seed=0):
    """Remove the K least important heads."""
    return _pick(scores, k, per_layer, descending=False)


@register_strategy("random")
def random(scores, k, per_layer=False, seed=0):
    """K heads drawn with the trial's seed; prefixes of one permutation, so sets nest as K grows."""
    rng = np.random.default_rng(seed)
    n_layers, n_heads = scores.shape
    if per_layer:
        return sorted((layer, int(h)) for layer in range(n_layers) for h in rng.permutation(n_heads)[:k])
    return sorted(divmod(int(i), n_heads) for i in rng.permutation(n_layers * n_heads)[:k])


@register_strategy("single-head")
def single_head(scores, k=None, per_layer=False, seed=0):
    """Keep only the most important head of every layer (remove all others)."""
    n_layers, n_heads = scores.shape
    return sorted((layer, h) for layer in range(n_layers)
                  for h in range(n_heads) if h != int(_order(scores[layer:layer + 1], True)[0]))


def choose_heads(strategy: str, scores, k=0, *, per_layer: bool = False, seed: int = 0) -> list[Head]:
    """(layer, head) pairs to remove. ``scores``: [n_layers, n_heads] array or tensor."""
    if strategy not in STRATEGIES:
        raise registry_error("strategy", strategy, STRATEGIES)
    scores = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=np.float64)
    n_layers, n_heads = scores.shape
    k_count = 0 if strategy in ("none", "single-head") else resolve_k(k, n_layers, n_heads, per_layer)
    return STRATEGIES[strategy](scores, k_count, per_layer=per_layer, seed=seed)
