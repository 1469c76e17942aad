"""Head gates (trials.gates): masked / gated / multi_masked against zeroed or scaled weights."""
from __future__ import annotations

import copy

import pytest
import torch

from headsweep import trials


def test_masked_equals_zeroed_out_proj_inputs(tiny, random_heads, rng, logits):
    model, batch = tiny.model, tiny.batch
    base = logits(model, batch)
    head_sets = [random_heads(tiny.n_layers, tiny.n_heads, int(c)) for c in rng.integers(1, 7, size=4)]
    layer = int(rng.integers(tiny.n_layers))
    head_sets.append([(layer, h) for h in range(tiny.n_heads)])          # a whole layer
    for heads in head_sets:
        with trials.masked(model, heads):
            got = logits(model, batch)
        want = logits(tiny.zeroed_copy(model, heads), batch)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        # The heads matter in these models, so a mask that did nothing would fail above.
        assert (got - base).abs().max() > 1e-3, heads


def test_masked_accepts_lists_and_numpy_pairs(tiny, logits):
    import numpy as np
    heads = [(0, 1), (2, 3)]
    with trials.masked(tiny.model, heads):
        want = logits(tiny.model, tiny.batch)
    with trials.masked(tiny.model, np.array([[0, 1], [2, 3]])):
        got = logits(tiny.model, tiny.batch)
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_gpt2_mask_hooks_attention_c_proj_not_mlp(tiny_gpt2, logits):
    model = tiny_gpt2.model
    blocks = model.transformer.h
    base = logits(model, tiny_gpt2.batch)
    with trials.masked(model, [(1, 2)]):
        assert len(blocks[1].attn.c_proj._forward_pre_hooks) > 0
        assert all(len(b.mlp.c_proj._forward_pre_hooks) == 0 for b in blocks)
        masked_logits = logits(model, tiny_gpt2.batch)
    assert (masked_logits - base).abs().max() > 1e-3
    # Same result as zeroing the attention c_proj rows; zeroing mlp.c_proj's instead differs.
    want = logits(tiny_gpt2.zeroed_copy(model, [(1, 2)]), tiny_gpt2.batch)
    torch.testing.assert_close(masked_logits, want, atol=1e-6, rtol=0)
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong.transformer.h[1].mlp.c_proj.weight[32:48, :] = 0
    assert (logits(wrong, tiny_gpt2.batch) - masked_logits).abs().max() > 1e-3


def test_hooks_removed_on_exit_even_after_exception(tiny, logits):
    model, batch = tiny.model, tiny.batch
    before = logits(model, batch)
    assert tiny.hook_counts(model) == [0] * tiny.n_layers
    heads = [(0, 0), (2, 1), (2, 3)]

    with trials.masked(model, heads):
        counts = tiny.hook_counts(model)
    # one hook on each layer that loses heads, none elsewhere
    assert counts == [1 if i in {0, 2} else 0 for i in range(tiny.n_layers)]
    assert tiny.hook_counts(model) == [0] * tiny.n_layers

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with trials.masked(model, [(i, 0) for i in range(tiny.n_layers)]):
            assert tiny.hook_counts(model) == [1] * tiny.n_layers
            logits(model, batch)
            raise Boom
    assert tiny.hook_counts(model) == [0] * tiny.n_layers

    gates = torch.rand(tiny.n_layers, tiny.n_heads)
    with pytest.raises(Boom):
        with trials.gated(model, gates):
            assert tiny.hook_counts(model) == [1] * tiny.n_layers
            raise Boom
    assert tiny.hook_counts(model) == [0] * tiny.n_layers
    torch.testing.assert_close(logits(model, batch), before, atol=0, rtol=0)


def test_masked_rejects_heads_outside_the_model(tiny):
    for bad in ([(tiny.n_layers, 0)], [(0, tiny.n_heads)], [(-1, 0)], [(0, 1), (0, -1)]):
        with pytest.raises(trials.UserError) as err:
            with trials.masked(tiny.model, bad):
                pass
        assert "\n" not in str(err.value)
        assert tiny.hook_counts(tiny.model) == [0] * tiny.n_layers


def test_gated_rejects_wrong_gate_shape(tiny):
    with pytest.raises(ValueError):
        with trials.gated(tiny.model, torch.ones(tiny.n_layers + 1, tiny.n_heads)):
            pass
    assert tiny.hook_counts(tiny.model) == [0] * tiny.n_layers


def _row(batch: dict, i: int) -> dict:
    return {k: v[i:i + 1] for k, v in batch.items()}


def test_per_example_binary_gates_equal_single_masked_runs(tiny, rng, logits):
    model, batch = tiny.model, tiny.batch
    b = batch["input_ids"].shape[0]
    gates = torch.from_numpy((rng.random((b, tiny.n_layers, tiny.n_heads)) > 0.3).astype("float32"))
    gates[0] = 1.0                                     # one row with nothing removed
    gates[1, 2] = 0.0                                  # one row with a whole layer removed
    with trials.gated(model, gates):
        got = logits(model, batch)
    for i in range(b):
        heads = [tuple(int(v) for v in hl) for hl in (gates[i] == 0).nonzero()]
        with trials.masked(model, heads):
            want = logits(model, _row(batch, i))
        torch.testing.assert_close(got[i:i + 1], want, atol=1e-5, rtol=0)
        # and independently: the same example through a copy with those weights zeroed
        torch.testing.assert_close(got[i:i + 1], logits(tiny.zeroed_copy(model, heads), _row(batch, i)),
                                   atol=1e-5, rtol=0)


def test_fractional_gates_equal_scaled_weights(tiny, rng, logits):
    model, batch = tiny.model, tiny.batch
    b = batch["input_ids"].shape[0]
    gates = torch.from_numpy(rng.uniform(0.0, 1.5, (b, tiny.n_layers, tiny.n_heads)).astype("float32"))
    with trials.gated(model, gates):
        got = logits(model, batch)
    for i in range(b):
        ref = copy.deepcopy(model)
        tiny.scale_heads(ref, {(l, h): gates[i, l, h] for l in range(tiny.n_layers)
                               for h in range(tiny.n_heads)})
        torch.testing.assert_close(got[i:i + 1], logits(ref, _row(batch, i)), atol=1e-5, rtol=1e-5)
    # one [layers, heads] gate for the whole batch
    shared = gates[0]
    with trials.gated(model, shared):
        got = logits(model, batch)
    ref = copy.deepcopy(model)
    tiny.scale_heads(ref, {(l, h): shared[l, h] for l in range(tiny.n_layers) for h in range(tiny.n_heads)})
    torch.testing.assert_close(got, logits(ref, batch), atol=1e-5, rtol=1e-5)


def test_multi_masked_equals_separate_masked_passes(tiny, random_heads, rng, logits):
    model, batch = tiny.model, tiny.batch
    b = batch["input_ids"].shape[0]
    masks = [[], random_heads(tiny.n_layers, tiny.n_heads, 3),
             [(1, h) for h in range(tiny.n_heads)], random_heads(tiny.n_layers, tiny.n_heads, 9)]
    big = trials.repeat_batch(batch, len(masks))
    for k, v in batch.items():                        # mask-major copies of the batch
        assert big[k].shape[0] == len(masks) * b
        for m in range(len(masks)):
            assert torch.equal(big[k][m * b:(m + 1) * b], v)
    with trials.multi_masked(model, masks, b):
        got = logits(model, big)
    for m, heads in enumerate(masks):
        with trials.masked(model, heads):
            want = logits(model, batch)
        torch.testing.assert_close(got[m * b:(m + 1) * b], want, atol=1e-5, rtol=0)
    assert tiny.hook_counts(model) == [0] * tiny.n_layers


def test_repeat_batch_keeps_non_tensors():
    batch = {"input_ids": torch.arange(6).view(2, 3), "note": "x"}
    out = trials.repeat_batch(batch, 3)
    assert out["note"] == "x"
    assert out["input_ids"].tolist() == [[0, 1, 2], [3, 4, 5]] * 3


def test_gate_gradients_flow(tiny):
    """d logit / d gate at gate = 1 equals <dlogit/dW, W> over that head's out-proj inputs."""
    model, batch = tiny.model, {k: v[:1] for k, v in tiny.batch.items()}
    gates = torch.ones(tiny.n_layers, tiny.n_heads, requires_grad=True)
    with trials.gated(model, gates):
        out = model(**batch).logits[0, 1]
    (g,) = torch.autograd.grad(out, gates)
    ref = copy.deepcopy(model)
    ref.zero_grad()
    ref(**batch).logits[0, 1].backward()
    want = torch.zeros_like(g)
    for l in range(tiny.n_layers):
        for h in range(tiny.n_heads):
            w, dw = tiny.head_weight(ref, l, h), tiny.head_weight(ref, l, h, grad=True)
            want[l, h] = (w.detach() * dw).sum()
    assert want.abs().max() > 1e-3
    torch.testing.assert_close(g, want, atol=1e-5, rtol=1e-4)
