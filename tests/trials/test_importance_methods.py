"""The importance methods beyond gradient (trials/ablation.py, trials/entropy.py) against
independent computations: a one-head-at-a-time masking loop, and the entropy of the attention
probabilities transformers returns for each example on its own (no padding)."""
from __future__ import annotations

import copy

import pytest
import torch

from headsweep import trials
from headsweep.trials.ablation import ablation_importance
from headsweep.trials.entropy import attention_entropy
from headsweep.trials.importance import IMPORTANCE_METHODS, ranking_scores, sign
from headsweep.trials.metrics import task_loss

LABELS = torch.tensor([1, 0, 1, 0, 1, 0])


def batches_of(tiny, labels=LABELS):
    b = tiny.batch
    return [{**{k: v[:4] for k, v in b.items()}, "labels": labels[:4]},
            {**{k: v[4:] for k, v in b.items()}, "labels": labels[4:]}]


@torch.no_grad()
def loop_ablation(tiny, model, batches, already=()):
    """Mean loss with one more head masked minus the mean loss, head by head (72 passes for 72)."""
    def mean_loss(heads):
        total, n = 0.0, 0
        with trials.masked(model, list(heads)):
            for b in batches:
                inputs = {k: v for k, v in b.items() if k != "labels"}
                total += float(task_loss(model(**inputs).logits, b["labels"], reduction="sum"))
                n += len(b["labels"])
        return total / n
    base = mean_loss(already)
    out = torch.zeros(tiny.n_layers, tiny.n_heads, dtype=torch.float64)
    for layer in range(tiny.n_layers):
        for head in range(tiny.n_heads):
            out[layer, head] = mean_loss({*already, (layer, head)}) - base
    return out


@pytest.mark.parametrize("tokens_per_pass", [1 << 15, 40])   # 40: one mask per pass (chunked)
def test_ablation_equals_a_one_head_at_a_time_loop(tiny_random, tokens_per_pass):
    model, batches = tiny_random.model, batches_of(tiny_random)
    want = loop_ablation(tiny_random, model, batches)
    got = ablation_importance(model, batches, tokens_per_pass=tokens_per_pass)
    assert got.shape == (tiny_random.n_layers, tiny_random.n_heads) and got.dtype == torch.float32
    assert want.abs().max() > 1e-3                     # the heads matter: the comparison can fail
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
    assert tiny_random.hook_counts(model) == [0] * tiny_random.n_layers
    assert all("forward" not in layer.__dict__ for layer in trials.adapters.adapter_for(model).layers(model))
    assert not [name for name, mod in model.named_modules()          # the layer-level hooks went too
                if mod._forward_hooks or mod._forward_pre_hooks]


def test_ablation_under_a_mask_and_for_regression(tiny_random):
    """Masks already in force stay (a masked head scores 0), and regression uses the MSE loss."""
    model, batches = tiny_random.model, batches_of(tiny_random)
    already = [(0, 1), (1, 0), (1, 3)]
    with trials.masked(model, already):
        got = ablation_importance(model, batches)
    torch.testing.assert_close(got.double(), loop_ablation(tiny_random, model, batches, already), atol=1e-5, rtol=0)
    assert all(abs(float(got[l, h])) < 1e-6 for l, h in already)   # 0 up to rounding

    reg = copy.deepcopy(model)
    reg.config.num_labels = 1
    torch.manual_seed(3)
    head = getattr(reg, "score", None) or getattr(reg, "classifier")
    new = torch.nn.Linear(head.in_features, 1, bias=head.bias is not None)
    setattr(reg, "score" if hasattr(reg, "score") else "classifier", new)
    targets = batches_of(tiny_random, labels=torch.linspace(-1, 2, 6))
    torch.testing.assert_close(ablation_importance(reg, targets).double(),
                               loop_ablation(tiny_random, reg, targets), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["distilbert", "gpt2"])
def test_ablation_does_only_the_work_an_exact_leave_one_out_cannot_skip(arch):
    """Counted matrix-product FLOPs: the loop's over the batched form's equal the analytic count
    of trials.ablation.flop_ceiling (replay below the masked layer, the masked layer's attention
    once, the last layer at the pooled row), so none of the three savings silently goes."""
    from types import SimpleNamespace

    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForSequenceClassification, DistilBertConfig, GPT2Config

    from headsweep.trials.ablation import flop_ceiling
    layers, heads, dim, seq = 6, 12, 48, 16
    cfg = (DistilBertConfig(vocab_size=100, dim=dim, n_layers=layers, n_heads=heads, hidden_dim=4 * dim,
                            num_labels=2) if arch == "distilbert" else
           GPT2Config(vocab_size=100, n_embd=dim, n_layer=layers, n_head=heads, n_positions=64,
                      pad_token_id=0, num_labels=2))
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(cfg).eval()
    ids = torch.randint(1, 100, (4, seq))
    batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 1, 0])}]

    def flops(fn):
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()
    tiny = SimpleNamespace(n_layers=layers, n_heads=heads)
    ratio = flops(lambda: loop_ablation(tiny, model, batches)) / flops(lambda: ablation_importance(model, batches))
    assert ratio == pytest.approx(flop_ceiling(layers, heads, dim, 4 * dim, seq), rel=0.02)


@torch.no_grad()
def hand_entropy(tiny, model, texts):
    """Each text alone (no padding) with output_attentions; -sum p log p per query, averaged over
    every query token of every text."""
    ref = copy.deepcopy(model)
    ref.set_attn_implementation("eager")
    total = torch.zeros(tiny.n_layers, tiny.n_heads, dtype=torch.float64)
    tokens = 0
    for text in texts:
        enc = tiny.tok([text], return_tensors="pt")
        atts = ref(input_ids=enc["input_ids"], output_attentions=True).attentions
        for layer, a in enumerate(atts):                       # [1, heads, q, k]
            p = a[0].double()
            logp = torch.where(p > 0, p.log(), torch.zeros_like(p))
            total[layer] += -(p * logp).sum(-1).sum(-1)         # summed over queries
        tokens += enc["input_ids"].shape[1]
    return total / tokens


def test_entropy_equals_the_entropy_of_output_attentions(tiny_random):
    from tests.trials.conftest import TEXTS
    model = tiny_random.model
    before = model.config._attn_implementation
    got = attention_entropy(model, batches_of(tiny_random))
    want = hand_entropy(tiny_random, model, TEXTS)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    assert (got > 0).all()
    assert model.config._attn_implementation == before        # eager only for that pass
    assert tiny_random.hook_counts(model) == [0] * tiny_random.n_layers


def test_methods_are_registered_with_their_direction_and_normalisation(rng):
    from headsweep.trials.importance import normalization
    assert list(IMPORTANCE_METHODS) == ["gradient", "ablation", "entropy"]
    assert (sign("gradient"), sign("ablation"), sign("entropy")) == (1, 1, -1)
    assert [normalization(m) for m in IMPORTANCE_METHODS] == ["layer_l2", "none", "none"]
    raw = torch.from_numpy(rng.random((3, 4)) + 0.1)
    unit = raw / raw.norm(dim=1, keepdim=True)
    torch.testing.assert_close(ranking_scores(raw, "gradient"), unit)          # Michel: per-layer L2
    torch.testing.assert_close(ranking_scores(raw, "ablation"), raw)           # canonical: raw
    torch.testing.assert_close(ranking_scores(raw, "entropy"), -raw)           # low entropy ranks high
    # an explicit importance.normalize overrides every method's own form
    torch.testing.assert_close(ranking_scores(raw, "entropy", "layer_l2"), -unit)
    torch.testing.assert_close(ranking_scores(raw, "gradient", "none"), raw)
