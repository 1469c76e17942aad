"""Head-removal strategies and K (trials.strategies) against independent sorting."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from headsweep import trials

L, H = 4, 12          # 48 heads


@pytest.fixture
def scores(rng):
    s = rng.random((L, H))
    assert len(np.unique(s)) == s.size            # distinct: the expected sets are unambiguous
    return s


def all_heads():
    return [(l, h) for l in range(L) for h in range(H)]


def ranked(scores, descending):
    """(layer, head) pairs by score; ties: the lowest (layer, head) first when the highest scores
    come first, the highest (layer, head) first when the lowest scores do."""
    if descending:
        return sorted(all_heads(), key=lambda lh: (-scores[lh], lh))
    return sorted(all_heads(), key=lambda lh: (scores[lh], -lh[0], -lh[1]))


@pytest.mark.parametrize("k", [0, 1, 5, 12, 47, 48])
def test_top_and_bottom_pick_the_k_extremes(scores, k):
    order = np.argsort(scores, axis=None)                          # ascending, flat
    lowest = {divmod(int(i), H) for i in order[:k]}
    highest = {divmod(int(i), H) for i in order[::-1][:k]}
    top = trials.choose_heads("top", scores, k)
    bottom = trials.choose_heads("bottom", scores, k)
    assert set(top) == highest and len(top) == k
    assert set(bottom) == lowest and len(bottom) == k
    assert top == sorted(top) and all(isinstance(v, int) for pair in top for v in pair)
    if 0 < k < L * H:
        assert min(scores[p] for p in top) > max(scores[p] for p in set(all_heads()) - set(top))


def test_accepts_torch_tensors(scores):
    for strategy in ("top", "bottom", "random", "single-head"):
        assert (trials.choose_heads(strategy, torch.from_numpy(scores).float(), 7, seed=3)
                == trials.choose_heads(strategy, scores.astype(np.float32), 7, seed=3))


def test_ties_break_in_opposite_directions_for_top_and_bottom(rng):
    tied = rng.integers(0, 3, size=(L, H)).astype(float)           # many equal scores
    for k in (1, 5, 17, 30):
        top = trials.choose_heads("top", tied, k)
        bottom = trials.choose_heads("bottom", tied, k)
        assert top == sorted(ranked(tied, True)[:k])
        assert bottom == sorted(ranked(tied, False)[:k])
        assert top == trials.choose_heads("top", tied.copy(), k)   # run twice: same answer
        assert bottom == trials.choose_heads("bottom", tied.copy(), k)
    flat = np.zeros((L, H))
    assert trials.choose_heads("top", flat, 3) == [(0, 0), (0, 1), (0, 2)]
    assert trials.choose_heads("bottom", flat, 3) == [(3, 9), (3, 10), (3, 11)]
    # per layer, the same rule within each layer
    assert trials.choose_heads("bottom", flat, 0.25, per_layer=True) == [(l, h) for l in range(L) for h in (9, 10, 11)]
    assert trials.choose_heads("top", flat, 0.25, per_layer=True) == [(l, h) for l in range(L) for h in (0, 1, 2)]


@pytest.mark.parametrize("per_layer", [False, True])
def test_top_and_bottom_do_not_overlap_on_all_equal_scores_while_2k_fits(per_layer):
    equal = np.full((L, H), 0.5)
    pool = H if per_layer else L * H
    for k in range(1, pool // 2 + 1):
        top = set(trials.choose_heads("top", equal, k, per_layer=per_layer))
        bottom = set(trials.choose_heads("bottom", equal, k, per_layer=per_layer))
        assert len(top) == len(bottom) == k * (L if per_layer else 1)
        assert not top & bottom, k
    # past half the heads they must share some: exactly 2K - heads of them
    k = pool // 2 + 1
    top = set(trials.choose_heads("top", equal, k, per_layer=per_layer))
    bottom = set(trials.choose_heads("bottom", equal, k, per_layer=per_layer))
    assert len(top & bottom) == (2 * k - pool) * (L if per_layer else 1)


def test_resolve_k_fractions():
    assert trials.resolve_k(0.25, L, H) == 12
    assert trials.resolve_k(0.5, L, H) == 24
    assert trials.resolve_k(0.75, 12, 12) == 108
    assert trials.resolve_k(0.25, L, H, per_layer=True) == 3
    # half rounds up: 5/32 of 16 heads = 2.5 -> 3; 3/16 of 8 = 1.5 -> 2
    assert trials.resolve_k(5 / 32, 4, 4) == 3
    assert trials.resolve_k(3 / 16, 2, 4) == 2
    assert trials.resolve_k(0.26, L, H) == 12                       # 12.48 -> 12
    assert trials.resolve_k(0.001, L, H) == 1                       # a tiny fraction removes one
    assert trials.resolve_k(1e-9, 2, 2, per_layer=True) == 1
    assert trials.resolve_k(7, L, H) == 7
    assert trials.resolve_k(np.int64(7), L, H) == 7
    assert trials.resolve_k(0, L, H) == 0
    assert trials.resolve_k(L * H, L, H) == L * H


def test_fraction_k_through_choose_heads(scores):
    top = trials.choose_heads("top", scores, 0.25)
    assert set(top) == set(ranked(scores, True)[:12])


@pytest.mark.parametrize("k, per_layer", [
    (49, False), (13, True), (-1, False), (-1, True), (1.5, False), (2.5, True), (-0.25, False),
    (1.0, False), (0.0, False), (2.0, True),
    ("3", False), ("0.25", False), (True, False), (False, False), (None, False), ([3], False),
])
def test_bad_k_is_a_user_error(scores, k, per_layer):
    with pytest.raises(trials.UserError) as err:
        trials.choose_heads("top", scores, k, per_layer=per_layer)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("k:") and repr(k) in msg
    with pytest.raises(trials.UserError):
        trials.resolve_k(k, L, H, per_layer)


def test_unknown_strategy_lists_the_available_ones(scores):
    with pytest.raises(trials.UserError) as err:
        trials.choose_heads("topk", scores, 3)
    msg = str(err.value)
    assert "'topk'" in msg and "\n" not in msg
    for name in ("top", "bottom", "random", "none", "single-head"):
        assert name in msg
    assert set(trials.STRATEGIES) >= {"top", "bottom", "random", "none", "single-head"}


def test_none_removes_nothing(scores):
    assert trials.choose_heads("none", scores, 0) == []
    assert trials.choose_heads("none", scores, 5) == []


def test_random_is_seeded_nested_and_ignores_scores(scores, rng):
    a = trials.choose_heads("random", scores, 12, seed=7)
    assert len(set(a)) == 12 and a == sorted(a)
    assert a == trials.choose_heads("random", scores, 12, seed=7)
    assert a == trials.choose_heads("random", rng.random((L, H)), 12, seed=7)
    others = [trials.choose_heads("random", scores, 12, seed=s) for s in (0, 1, 2, 8)]
    assert all(o != a for o in others)
    prev = set()
    for k in range(L * H + 1):
        cur = set(trials.choose_heads("random", scores, k, seed=7))
        assert len(cur) == k and prev <= cur
        prev = cur
    assert prev == set(all_heads())


def test_random_heads_are_spread_evenly_over_seeds(scores):
    """Over many seeds every head is drawn about equally often (K/48 of the time)."""
    counts = np.zeros((L, H))
    for seed in range(400):
        for l, h in trials.choose_heads("random", scores, 12, seed=seed):
            counts[l, h] += 1
    assert counts.sum() == 400 * 12
    assert counts.min() > 60 and counts.max() < 140                 # expected 100 each


@pytest.mark.parametrize("strategy", ["top", "bottom", "random"])
def test_per_layer_removes_k_in_each_layer(scores, strategy):
    for k in (0, 1, 3, H):
        heads = trials.choose_heads(strategy, scores, k, per_layer=True, seed=5)
        assert len(heads) == L * k == len(set(heads))
        for layer in range(L):
            in_layer = sorted(h for l, h in heads if l == layer)
            assert len(in_layer) == k
            if strategy != "random":
                order = np.argsort(scores[layer])
                want = order[::-1][:k] if strategy == "top" else order[:k]
                assert set(in_layer) == {int(h) for h in want}
    assert len(trials.choose_heads(strategy, scores, 0.25, per_layer=True, seed=5)) == L * 3


def test_single_head_keeps_each_layers_argmax(scores):
    removed = trials.choose_heads("single-head", scores, 0)
    assert len(removed) == L * (H - 1) == len(set(removed))
    kept = set(all_heads()) - set(removed)
    assert kept == {(l, int(np.argmax(scores[l]))) for l in range(L)}
    # K is ignored, and ties keep the lowest head index
    assert trials.choose_heads("single-head", scores, 0.5) == removed
    tied = np.ones((L, H))
    tied[2, 5] = 2.0
    kept = set(all_heads()) - set(trials.choose_heads("single-head", tied))
    assert kept == {(0, 0), (1, 0), (2, 5), (3, 0)}


def test_iterative_targets_stop_at_every_grid_count():
    from headsweep.trials.strategies import iterative_targets
    assert iterative_targets(16, 4) == [4, 8, 12, 16]                       # no grid: as before
    assert iterative_targets(16, 5) == [5, 10, 15, 16]
    assert iterative_targets(72, 7, (7, 14, 22, 29, 36)) == [7, 14, 21, 22, 29, 36, 43, 50, 57, 64, 71, 72]
    assert iterative_targets(16, 4, (2, 3, 16, 0)) == [2, 3, 7, 11, 15, 16]  # 0 and all heads need no stop
    assert iterative_targets(10, 3, (9, 4)) == [3, 4, 7, 9, 10]             # grid order does not matter


def test_each_head_sets_are_every_head_alone(scores):
    sets = trials.STRATEGIES["each-head"](scores)
    assert sets == [[h] for h in all_heads()]
    with pytest.raises(ValueError, match="each_head_sets"):
        trials.choose_heads("each-head", scores, 1)
