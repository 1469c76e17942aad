"""What pruning buys (trials/efficiency.py, trials/pruned_model.py): the parameter counts of a row
against a physically pruned model's own count, that pruned model's logits against the masked
model's, saved pruned checkpoints reloaded by plain transformers, and the latency ratio."""
from __future__ import annotations

import copy

import pytest
import torch

from headsweep import trials
from tests.trials.conftest import attention_params
from headsweep.trials.efficiency import efficiency, pruned_copy, speedup
from headsweep.trials.pruned_model import save_pruned


def removal_sets(tiny, random_heads):
    return [[], [(0, 1)], random_heads(tiny.n_layers, tiny.n_heads, 5),
            [(1, h) for h in range(tiny.n_heads)] + [(2, 0)],                # a whole layer
            [(l, h) for l in range(tiny.n_layers) for h in range(tiny.n_heads)]]


def test_counts_equal_a_physically_pruned_model(tiny_random, random_heads, logits):
    model = tiny_random.model
    for removed in removal_sets(tiny_random, random_heads):
        got = efficiency(model, removed)
        pruned = pruned_copy(model, removed)
        assert got["params_total"] == sum(p.numel() for p in model.parameters())
        assert got["params_pruned"] == sum(p.numel() for p in pruned.parameters())
        assert got["attn_params_kept"] == attention_params(pruned)
        with trials.masked(model, removed):
            want = logits(model, tiny_random.batch)
        torch.testing.assert_close(logits(pruned, tiny_random.batch), want, atol=1e-5, rtol=0)
    assert tiny_random.hook_counts(model) == [0] * tiny_random.n_layers


def test_saved_pruned_models_reload_with_from_pretrained(tiny_random, tmp_path, logits):
    from transformers import AutoConfig, AutoModelForSequenceClassification
    model = tiny_random.model
    removed = [(0, 0), (0, 2), (1, 1), (3, 0), (3, 1), (3, 2), (3, 3)]
    pruned = pruned_copy(model, removed)
    save_pruned(pruned, tiny_random.tok, tmp_path)
    config = AutoConfig.from_pretrained(tmp_path, trust_remote_code=True)
    n = tiny_random.n_heads
    kept = [n - 2, n - 1, n, n - 4]   # Llama (groups of 4): layers 0, 1 pad a group, layer 3 loses one
    assert config.headsweep_heads_per_layer == kept
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True).eval()
    assert sum(p.numel() for p in reloaded.parameters()) == efficiency(model, removed)["params_pruned"]
    with trials.masked(model, removed):
        want = logits(model, tiny_random.batch)
    torch.testing.assert_close(logits(reloaded, tiny_random.batch), want, atol=1e-5, rtol=0)
    again, tok = trials.load_model(str(tmp_path), model.config.num_labels)       # no remote code
    torch.testing.assert_close(logits(again.eval(), tiny_random.batch), want, atol=1e-5, rtol=0)
    assert trials.head_layout(again).heads_per_layer == tuple(kept)


def test_save_pruned_refuses_an_unpruned_model(tiny_random, tmp_path):
    with pytest.raises(ValueError, match="prune_heads"):
        save_pruned(copy.deepcopy(tiny_random.model), tiny_random.tok, tmp_path)


def test_speedup_is_a_positive_ratio(tiny_gpt2):
    model = tiny_gpt2.model
    removed = [(l, h) for l in range(tiny_gpt2.n_layers) for h in range(1, tiny_gpt2.n_heads)]
    ratio = speedup(model, pruned_copy(model, removed), [tiny_gpt2.batch] * 2, repeats=3)
    assert isinstance(ratio, float) and ratio > 0
