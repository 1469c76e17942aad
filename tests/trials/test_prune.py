"""Physical pruning (trials.prune): same logits as masking, exactly the expected parameters gone."""
from __future__ import annotations

import copy

import pytest
import torch

from headsweep import trials


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def params_per_head(tiny) -> int:
    """q, k, v lose d output rows (weights + biases); the out-proj loses d input columns."""
    hidden, d = tiny.hidden, tiny.head_dim
    return 3 * (hidden * d + d) + d * hidden


def params_removed(tiny, removed) -> int:
    """Parameters that pruning ``removed`` takes away. Grouped-query attention (tiny-llama: 2 KV
    groups of 4 query heads, no biases) keeps every group with a query head left, each with as
    many query slots as the fullest one (q rows and o columns of d each); a group without query
    heads loses its k and v rows (d each) too."""
    if tiny.arch != "llama":
        return len(set(removed)) * params_per_head(tiny)
    hidden, d, gone = tiny.hidden, tiny.head_dim, set(map(tuple, removed))
    per_group = tiny.n_heads // 2
    kept = 0
    for layer in range(tiny.n_layers):
        left = [sum((layer, g * per_group + j) not in gone for j in range(per_group)) for g in range(2)]
        groups = sum(n > 0 for n in left)
        kept += groups * max(left) * 2 * d * hidden + groups * 2 * d * hidden
    full = tiny.n_layers * (tiny.n_heads * 2 * d * hidden + 2 * 2 * d * hidden)
    return full - kept


def masked_logits(tiny, heads, logits):
    with trials.masked(tiny.model, heads):
        return logits(tiny.model, tiny.batch)


def check_pruned(tiny, pruned, removed, logits):
    """Logits, parameter count and head layout of ``pruned`` against the unpruned ``tiny.model``."""
    removed = set(removed)
    torch.testing.assert_close(logits(pruned, tiny.batch), masked_logits(tiny, sorted(removed), logits),
                               atol=1e-4, rtol=0)
    assert n_params(pruned) == n_params(tiny.model) - params_removed(tiny, removed)
    assert trials.count_parameters(pruned) == n_params(pruned)
    layout = trials.head_layout(pruned)
    assert layout.n_layers == tiny.n_layers and layout.n_heads == tiny.n_heads
    assert layout.heads_per_layer == tuple(
        tiny.n_heads - sum(1 for l, _ in removed if l == i) for i in range(tiny.n_layers))


def test_prune_matches_masked_for_random_sets(tiny, random_heads, rng, logits):
    for count in (1, 3, 7):
        heads = random_heads(tiny.n_layers, tiny.n_heads, count)
        pruned = copy.deepcopy(tiny.model)
        assert trials.prune_heads(pruned, heads) is pruned
        check_pruned(tiny, pruned, heads, logits)


def test_prune_a_whole_layer(tiny, rng, logits):
    layer = int(rng.integers(tiny.n_layers))
    other = (layer + 1) % tiny.n_layers
    heads = [(layer, h) for h in range(tiny.n_heads)] + [(other, 1)]
    pruned = trials.prune_heads(copy.deepcopy(tiny.model), heads)
    check_pruned(tiny, pruned, heads, logits)
    assert trials.head_layout(pruned).heads_per_layer[layer] == 0
    if tiny.out_proj(pruned, layer).bias is None:        # Llama: no output bias, the layer adds nothing
        return
    # The layer's output projection bias still applies (as with a zero gate): dropping it changes
    # the result, so the pruned layer is not simply skipped.
    no_bias = copy.deepcopy(pruned)
    with torch.no_grad():
        tiny.out_proj(no_bias, layer).bias.zero_()
    assert (logits(no_bias, tiny.batch) - logits(pruned, tiny.batch)).abs().max() > 1e-3


def test_prune_twice_names_original_heads(tiny, logits):
    first = [(0, 1), (2, 0), (2, 3)]
    second = [(0, 0), (0, 3), (2, 2), (3, 2)]        # original indices, not positions after `first`
    pruned = trials.prune_heads(copy.deepcopy(tiny.model), first)
    check_pruned(tiny, pruned, first, logits)
    trials.prune_heads(pruned, second)
    check_pruned(tiny, pruned, first + second, logits)
    # and a third time, emptying layer 2 (original head 1 is the only one left there)
    trials.prune_heads(pruned, [(2, 1)])
    check_pruned(tiny, pruned, first + second + [(2, 1)], logits)


def test_masking_a_pruned_model_uses_original_indices(tiny, logits):
    pruned = trials.prune_heads(copy.deepcopy(tiny.model), [(1, 0), (1, 2), (3, 3)])
    more = [(1, 3), (3, 0), (0, 2)]
    with trials.masked(pruned, more):
        got = logits(pruned, tiny.batch)
    want = masked_logits(tiny, [(1, 0), (1, 2), (3, 3)] + more, logits)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_fully_pruned_model_runs_and_equals_all_masked(tiny, logits):
    every = [(l, h) for l in range(tiny.n_layers) for h in range(tiny.n_heads)]
    pruned = trials.prune_heads(copy.deepcopy(tiny.model), every)
    check_pruned(tiny, pruned, every, logits)
    assert trials.head_layout(pruned).heads_per_layer == (0,) * tiny.n_layers
    assert torch.isfinite(logits(pruned, tiny.batch)).all()


def test_prune_rejects_unknown_heads(tiny):
    pruned = copy.deepcopy(tiny.model)
    before = n_params(pruned)
    with pytest.raises(trials.UserError):
        trials.prune_heads(pruned, [(0, 0), (tiny.n_layers, 0)])
    assert n_params(pruned) == before


def test_pruned_model_trains(tiny):
    """Gradients reach the sliced projections (recovery fine-tuning of a pruned model works)."""
    pruned = trials.prune_heads(copy.deepcopy(tiny.model), [(0, 0), (1, 1), (1, 2)])
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    pruned(**tiny.batch, labels=labels).loss.backward()
    grad = tiny.out_proj(pruned, 1).weight.grad
    assert grad is not None and grad.abs().sum() > 0
