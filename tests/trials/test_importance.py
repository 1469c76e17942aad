"""Head importance (trials.importance) against finite differences and per-example autograd."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from headsweep import trials
from headsweep.trials.importance import model_inputs

EPS = 1e-4
# The Llama family's RMSNorm computes in float32 even in a float64 model: a step this small would
# measure float32 rounding, so its finite differences take a larger one (error ~ step^2).
EPS_FLOAT32_NORM = 1e-2


@pytest.fixture(scope="module")
def f64(tiny):
    """The tiny preset in float64 and two labelled batches (3 + 3 examples, padded)."""
    model = copy.deepcopy(tiny.model).double().eval()
    batch = tiny.batch
    labels = torch.tensor([1, 0, 1, 0, 1, 0])
    batches = [{**{k: v[:3] for k, v in batch.items()}, "labels": labels[:3]},
               {**{k: v[3:] for k, v in batch.items()}, "labels": labels[3:]}]
    return model, batches


@torch.no_grad()
def per_example_losses(model, batches) -> torch.Tensor:
    return torch.cat([F.cross_entropy(model(**model_inputs(b)).logits, b["labels"], reduction="none")
                      for b in batches])


def finite_difference_importance(tiny, model, batches) -> torch.Tensor:
    """E_x |dL(x)/d xi_h|, xi_h scaling head h's out-proj input weights; no hooks involved."""
    ref = copy.deepcopy(model)
    eps = EPS_FLOAT32_NORM if tiny.arch == "llama" else EPS
    out = torch.zeros(tiny.n_layers, tiny.n_heads, dtype=torch.float64)
    for layer in range(tiny.n_layers):
        for head in range(tiny.n_heads):
            w = tiny.head_weight(ref, layer, head)
            orig = w.detach().clone()
            with torch.no_grad():
                w.copy_(orig * (1 + eps))
            up = per_example_losses(ref, batches)
            with torch.no_grad():
                w.copy_(orig * (1 - eps))
            down = per_example_losses(ref, batches)
            with torch.no_grad():
                w.copy_(orig)
            out[layer, head] = ((up - down) / (2 * eps)).abs().mean()
    return out


def autograd_importance(tiny, model, batches) -> torch.Tensor:
    """One example at a time: dL/dxi_h = <dL/dW_h, W_h> over head h's out-proj input weights."""
    ref = copy.deepcopy(model)
    rows = []
    for b in batches:
        for i in range(b["labels"].shape[0]):
            ref.zero_grad(set_to_none=False)
            one = {k: v[i:i + 1] for k, v in b.items()}
            F.cross_entropy(ref(**model_inputs(one)).logits, one["labels"]).backward()
            rows.append(torch.tensor([[(tiny.head_weight(ref, l, h).detach()
                                        * tiny.head_weight(ref, l, h, grad=True)).sum().item()
                                       for h in range(tiny.n_heads)] for l in range(tiny.n_layers)],
                                     dtype=torch.float64))
    return torch.stack(rows).abs().mean(0)


def test_matches_finite_differences(tiny, f64):
    model, batches = f64
    got = trials.head_importance(model, batches)
    assert got.shape == (tiny.n_layers, tiny.n_heads) and got.dtype == torch.float32
    assert got.device.type == "cpu"
    want = finite_difference_importance(tiny, model, batches)
    assert want.min() > 1e-4          # every head matters, so a relative comparison is meaningful
    torch.testing.assert_close(got.double(), want, rtol=1e-3, atol=1e-7)


def test_matches_per_example_autograd(tiny, f64):
    model, batches = f64
    want = autograd_importance(tiny, model, batches)
    torch.testing.assert_close(trials.head_importance(model, batches).double(), want, rtol=1e-4, atol=1e-7)
    # The mean of |per-example gradient| is not |gradient of the mean loss|: a sum over the batch
    # before the absolute value would give smaller scores, so the test can tell them apart.
    summed = copy.deepcopy(model)
    loss = sum(F.cross_entropy(summed(**model_inputs(b)).logits, b["labels"], reduction="sum")
               for b in batches) / 6
    loss.backward()
    pooled = torch.tensor([[(tiny.head_weight(summed, l, h).detach()
                             * tiny.head_weight(summed, l, h, grad=True)).sum().abs().item()
                            for h in range(tiny.n_heads)] for l in range(tiny.n_layers)],
                          dtype=torch.float64)
    assert (want - pooled).abs().max() > 1e-3


def test_deterministic_eval_mode_and_clean(tiny, f64):
    model, batches = f64
    first = trials.head_importance(model, batches)
    assert torch.equal(first, trials.head_importance(model, batches))
    assert not model.training

    train_model = copy.deepcopy(model).train()        # dropout is on in train mode ...
    in_train = trials.head_importance(train_model, batches)
    assert train_model.training                        # ... mode restored afterwards
    assert all(m.training for m in train_model.modules())
    torch.testing.assert_close(in_train, first, atol=0, rtol=0)   # computed with dropout off
    assert tiny.hook_counts(train_model) == [0] * tiny.n_layers
    assert tiny.hook_counts(model) == [0] * tiny.n_layers
    assert all(p.grad is None for p in model.parameters())


def test_restores_state_after_an_error(tiny, f64):
    model, batches = f64
    m = copy.deepcopy(model).train()

    def broken():
        yield batches[0]
        raise RuntimeError("reader failed")

    with pytest.raises(RuntimeError, match="reader failed"):
        trials.head_importance(m, broken())
    assert m.training
    assert tiny.hook_counts(m) == [0] * tiny.n_layers


def test_no_examples_is_an_error(f64):
    model, _ = f64
    with pytest.raises(ValueError):
        trials.head_importance(model, [])


def test_normalize_per_layer_gives_unit_rows(rng):
    scores = torch.from_numpy(rng.random((6, 12)) * rng.uniform(0.01, 100, (6, 1)))
    norm = trials.normalize_per_layer(scores)
    np.testing.assert_allclose(np.linalg.norm(norm.numpy(), axis=1), 1.0, rtol=1e-12)
    # Each row is only rescaled: ratios within a layer (and so the ranking) are unchanged.
    ratio = norm.numpy() / scores.numpy()
    np.testing.assert_allclose(ratio, ratio[:, :1].repeat(12, axis=1), rtol=1e-12)
    # A layer with all-zero scores stays zero instead of becoming NaN.
    zero = trials.normalize_per_layer(torch.zeros(2, 4))
    assert torch.equal(zero, torch.zeros(2, 4))


def test_importance_methods_registry():
    assert trials.IMPORTANCE_METHODS["gradient"] is trials.head_importance


def test_each_method_ranks_in_its_own_normalisation_the_toy_case(tmp_path):
    """Issue 22's toy case, by hand. Leave-one-out loss increases: layer 0 = [.001 .002 .001 .0015],
    layer 1 = [.90 .05 .04 .03]. Ranked raw (ablation's own form), bottom-4 is all of layer 0, the
    four cheapest heads. Per-layer L2 (what every method used to get) makes layer 1's .03-.05
    heads (~0.03-0.06 of their layer's norm) look cheaper than layer 0's (~0.35-0.70 of a tiny
    norm): it would remove three layer-1 heads costing 20-50x more than the layer-0 heads kept."""
    import pandas as pd

    from headsweep.trials import layout
    from headsweep.trials.rows import importance_frame, load_scores
    raw = torch.tensor([[.001, .002, .001, .0015], [.90, .05, .04, .03]])
    imp = importance_frame(raw, "ablation")
    assert set(imp["normalization"]) == {"none"}
    np.testing.assert_allclose(imp["score"], imp["score_raw"])                     # ranked raw
    imp.to_parquet(tmp_path / layout.CKPT_IMPORTANCE)
    scores = load_scores(tmp_path, "ablation")
    assert trials.choose_heads("bottom", scores, 4) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    # the override importance.normalize: layer_l2, by hand: layer 0 / 0.002872, layer 1 / 0.9028
    l2 = load_scores(tmp_path, "ablation", "layer_l2")
    np.testing.assert_allclose(l2[1].numpy(), [.9969, .0554, .0443, .0332], atol=1e-4)
    assert trials.choose_heads("bottom", l2, 4) == [(0, 2), (1, 1), (1, 2), (1, 3)]   # tie .348: (0, 2) first
    # gradient's own form is per-layer L2 (Michel et al.): the same raw numbers rank as l2 does
    grad = importance_frame(raw, "gradient")
    assert set(grad["normalization"]) == {"layer_l2"}
    np.testing.assert_allclose(grad["score"].to_numpy().reshape(2, 4), l2.numpy(), rtol=1e-6)
    # a file saved in another form is re-normalised from score_raw
    pd.concat([grad.assign(method="ablation")]).to_parquet(tmp_path / layout.CKPT_IMPORTANCE)
    torch.testing.assert_close(load_scores(tmp_path, "ablation"), raw.double())
