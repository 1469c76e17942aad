"""Head-removal strategies: which (layer, head) pairs to remove, given importance scores.

K always counts heads removed; ``resolve_k`` turns an integer or a fraction into a count, of all
heads (global) or of each layer's heads (``per_layer``). Ties are broken by (layer, head) order in
opposite directions: the most important first takes the lower (layer, head), the least important
first (bottom, iterative) the higher, so under ties top-K and bottom-K do not overlap while
2K <= heads. Every strategy is deterministic; ``random`` depends only on the seed (and the draw).

Three strategies yield several removal sets, one results row each: ``layer-single-head`` (one set
per layer: ``layer_sets``; ``keep: best`` picks each layer's survivor on the evaluation set in
trials/head_eval.py), ``iterative`` (one per step, re-scored in between: trials/iterative.py,
which calls ``remove_least`` at every step) and ``each-head`` (every head alone: ``each_head_sets``,
evaluated many masks per pass by trials/head_eval.py). ``MULTI_ROW`` names them.
"""
from __future__ import annotations

import math

import numpy as np

from headsweep.trials.errors import UserError
from headsweep.trials.registry import Registry
from headsweep.trials.schema import REMOVAL_STRATEGIES

Head = tuple[int, int]
STRATEGIES = Registry("strategy", key="strategies")
MULTI_ROW = ("layer-single-head", "iterative", "each-head")


def k_problem(k) -> str | None:
    """What is wrong with a K as the sweep file gives it, or None. The rules, stated once:
    integers count heads (>= 0), floats are fractions in (0, 1) (so 1.0 is refused)."""
    if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)):
        return "must be an integer head count or a fraction in (0, 1)"
    if isinstance(k, (float, np.floating)):
        if float(k).is_integer():
            return "write head counts as integers (e.g. 3) and fractions in (0, 1)"
        if not 0.0 < k < 1.0:
            return "a fractional K must lie in (0, 1)"
    elif k < 0:
        return "must be >= 0"
    return None


def resolve_k(k, n_layers: int, n_heads: int, per_layer: bool = False) -> int:
    """Heads to remove (per layer if ``per_layer``) for an int count or a float fraction in (0, 1).

    Fractions round to the nearest count (half up) and remove at least one head.
    """
    problem = k_problem(k)
    if problem:
        raise UserError("k", k, problem)
    pool = n_heads if per_layer else n_layers * n_heads
    if isinstance(k, (float, np.floating)):
        return max(1, math.floor(k * pool + 0.5))
    if int(k) > pool:
        raise UserError("k", k, f"must be between 0 and {pool} (heads {'per layer' if per_layer else 'in the model'})")
    return int(k)


def _order(scores: np.ndarray, descending: bool) -> np.ndarray:
    """Flat indices sorted by score; ties by flat (layer-major) index, lower first when the most
    important come first, higher first when the least important do (so top and bottom split a
    tie between them instead of both taking its first heads)."""
    flat = scores.reshape(-1)
    index = np.arange(flat.size)
    return np.lexsort((index, -flat)) if descending else np.lexsort((-index, flat))


def _pick(scores: np.ndarray, k: int, per_layer: bool, descending: bool) -> list[Head]:
    n_layers, n_heads = scores.shape
    if per_layer:
        return sorted((layer, int(h)) for layer in range(n_layers)
                      for h in _order(scores[layer:layer + 1], descending)[:k])
    return sorted(divmod(int(i), n_heads) for i in _order(scores, descending)[:k])


@STRATEGIES.register("none")
def remove_nothing(scores, k, per_layer=False, seed=0):
    return []


@STRATEGIES.register("top")
def remove_top(scores, k, per_layer=False, seed=0):
    """Remove the K most important heads."""
    return _pick(scores, k, per_layer, descending=True)


@STRATEGIES.register("bottom")
def remove_bottom(scores, k, per_layer=False, seed=0):
    """Remove the K least important heads."""
    return _pick(scores, k, per_layer, descending=False)


def draw_rng(seed: int, draw: int | None = None) -> np.random.Generator:
    """The generator of random-K draw ``draw`` of a seed: independent streams per (seed, draw)
    (numpy's SeedSequence of both numbers); ``draw=None`` is the seed's own stream."""
    return np.random.default_rng(seed if draw is None else [seed, draw])


@STRATEGIES.register("random")
def remove_random(scores, k, per_layer=False, seed=0, draw=None):
    """K heads drawn with the trial's seed (and draw); prefixes of one permutation, so the sets
    of one draw nest as K grows."""
    rng = draw_rng(seed, draw)
    n_layers, n_heads = scores.shape
    if per_layer:
        return sorted((layer, int(h)) for layer in range(n_layers) for h in rng.permutation(n_heads)[:k])
    return sorted(divmod(int(i), n_heads) for i in rng.permutation(n_layers * n_heads)[:k])


@STRATEGIES.register("single-head")
def keep_one_per_layer(scores, k=None, per_layer=False, seed=0):
    """Keep only the most important head of every layer (remove all others)."""
    n_layers, n_heads = scores.shape
    return sorted((layer, h) for layer in range(n_layers)
                  for h in range(n_heads) if h != _top_head(scores, layer))


def _top_head(scores: np.ndarray, layer: int) -> int:
    return int(_order(scores[layer:layer + 1], True)[0])


@STRATEGIES.register("layer-single-head")
def layer_sets(scores, k=None, per_layer=False, seed=0) -> list[list[Head]]:
    """One removal set per layer l: every head of l but its most important; other layers intact
    (Michel et al. Table 2). ``single-head`` does this to every layer at once."""
    scores = _array(scores)
    n_layers, n_heads = scores.shape
    return [[(layer, h) for h in range(n_heads) if h != _top_head(scores, layer)] for layer in range(n_layers)]


@STRATEGIES.register("iterative")
def remove_least(scores, k, per_layer=False, seed=0, removed=()) -> list[Head]:
    """One iterative step: ``removed`` plus the ``k`` least important heads not yet removed
    (ties: the higher (layer, head) first, as bottom). trials/iterative.py re-scores between steps."""
    scores = _array(scores)
    n_heads = scores.shape[1]
    gone = {tuple(h) for h in removed}
    fresh = [divmod(int(i), n_heads) for i in _order(scores, descending=False)
             if divmod(int(i), n_heads) not in gone][:k]
    return sorted(gone | set(fresh))


@STRATEGIES.register("each-head")
def each_head_sets(scores, k=None, per_layer=False, seed=0) -> list[list[Head]]:
    """One removal set per head, that head alone (Michel et al. Table 1), layer-major order."""
    n_layers, n_heads = _array(scores).shape
    return [[(layer, h)] for layer in range(n_layers) for h in range(n_heads)]


def step_count(step: float, total: int) -> int:
    """Heads one iterative step removes: ``step`` of all heads, rounded half up, at least one."""
    return max(1, math.floor(step * total + 0.5))


def iterative_targets(total: int, per_step: int, grid=()) -> list[int]:
    """Heads removed after each iterative step: from 0, ``per_step`` more at a time, but never
    past the next grid count (a step that would pass it stops at it), until ``total``. So every
    grid K (head counts) gets a row, and no step removes more than ``per_step``."""
    stops = sorted({int(k) for k in grid if 0 < k < total}) + [total]
    out, done = [], 0
    for stop in stops:
        while done < stop:
            done = min(done + per_step, stop)
            out.append(done)
    return out


def _array(scores) -> np.ndarray:
    return np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=np.float64)


def choose_heads(strategy: str, scores, k=0, *, per_layer: bool = False, seed: int = 0,
                 draw: int | None = None) -> list[Head]:
    """(layer, head) pairs to remove. ``scores``: [n_layers, n_heads] array or tensor, higher =
    more important. For ``iterative`` this is its first step (K heads); ``layer-single-head``
    yields one set per layer (``layer_sets``)."""
    choose = STRATEGIES.lookup(strategy, "strategy")
    if strategy in ("layer-single-head", "each-head"):
        raise ValueError(f"{strategy} yields several removal sets: use layer_sets / each_head_sets")
    scores = _array(scores)
    n_layers, n_heads = scores.shape
    counted = strategy in REMOVAL_STRATEGIES or strategy == "iterative"
    k_count = resolve_k(k, n_layers, n_heads, per_layer and strategy != "iterative") if counted else 0
    if strategy == "random":
        return choose(scores, k_count, per_layer=per_layer, seed=seed, draw=draw)
    return choose(scores, k_count, per_layer=per_layer, seed=seed)
