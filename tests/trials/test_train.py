"""Fine-tuning and evaluation (trials.train): metrics, precision, evaluate(), training with a mask."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from headsweep import trials
from headsweep.trials.data import Encoded, read_split
from headsweep.trials.spec import DataSpec, TrainSpec
from headsweep.trials.metrics import macro_f1
from headsweep.trials.train import accelerator_scope, evaluate, finetune, resolve_precision


# ---------------------------------------------------------------------------- macro F1

def test_macro_f1_by_hand():
    labels = np.array([0, 0, 1, 1, 1])
    preds = np.array([0, 1, 1, 1, 0])
    # class 0: tp 1, fp 1, fn 1 -> 2/4; class 1: tp 2, fp 1, fn 1 -> 4/6
    assert macro_f1(labels, preds, 2) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert macro_f1(labels, labels, 2) == 1.0
    assert macro_f1(labels, 1 - labels, 2) == 0.0
    # every prediction 1: class 0 scores 0, class 1: tp 3, fp 2, fn 0 -> 6/8
    assert macro_f1(labels, np.ones(5, int), 2) == pytest.approx(0.75 / 2)
    # 3 classes, class 2 absent from labels and predictions: it scores 0 (documented)
    assert macro_f1(labels, labels, 3) == pytest.approx(2 / 3)


def test_macro_f1_against_sklearn(rng):
    metrics = pytest.importorskip("sklearn.metrics")
    for n_classes in (2, 3):
        labels = rng.integers(0, n_classes, 500)
        preds = np.where(rng.random(500) < 0.7, labels, rng.integers(0, n_classes, 500))
        assert macro_f1(labels, preds, n_classes) == pytest.approx(
            metrics.f1_score(labels, preds, average="macro"), abs=1e-12)


# ---------------------------------------------------------------------------- precision

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallbacks")
def test_precision_on_cpu():
    assert resolve_precision("auto") == "no"
    assert resolve_precision("no") == "no"
    with pytest.warns(UserWarning, match="fp16"):
        assert resolve_precision("fp16") == "no"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("auto") == "no"          # no warning for the default


@pytest.mark.parametrize("bad", ["fp8", "FP16", "", "yes"])
def test_bad_precision_is_a_user_error(bad):
    with pytest.raises(trials.UserError) as err:
        resolve_precision(bad)
    assert err.value.key == "finetune.mixed_precision" and "\n" not in str(err.value)
    assert repr(bad) in str(err.value)


# ---------------------------------------------------------------------------- evaluate / finetune

@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model, tok = trials.load_model("preset:tiny-distilbert", 2)
    df = read_split(DataSpec(source="synthetic", synthetic_size=600), "eval")      # 200 rows
    return model.eval(), tok, df, Encoded(df, tok, 32)


def test_evaluate_against_a_direct_forward_pass(small):
    model, tok, df, data = small
    with torch.no_grad():
        model.eval()
        enc = tok(list(df["text"]), truncation=True, max_length=32, padding=True, return_tensors="pt")
        logits = model(**enc).logits
    labels = torch.tensor(df["label"].to_numpy())
    probs = logits.softmax(-1)
    with accelerator_scope("no") as acc:
        metrics, preds = evaluate(model, data, tok.pad_token_id, acc, batch_size=37)
    assert list(preds.columns) == ["example_id", "label", "pred", "correct", "prob"]
    assert preds["example_id"].tolist() == df["example_id"].tolist()          # example_id order
    assert preds["label"].tolist() == df["label"].tolist()
    assert preds["pred"].tolist() == logits.argmax(-1).tolist()
    np.testing.assert_allclose(preds["prob"], probs.max(-1).values.numpy(), atol=1e-5)
    assert (preds["correct"] == (preds["pred"] == preds["label"])).all()
    assert metrics["n_eval"] == len(df)
    assert metrics["accuracy"] == pytest.approx((logits.argmax(-1) == labels).float().mean().item())
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-4)
    assert metrics["f1"] == pytest.approx(macro_f1(df["label"].to_numpy(), logits.argmax(-1).numpy(), 2))


def test_finetune_with_a_mask_trains_only_the_unmasked_heads(small):
    """Recovery fine-tuning keeps the mask in force: with no weight decay, the removed heads'
    q/k/v rows and out-proj columns get no gradient and stay exactly as they were."""
    model, tok, df, data = small
    model = copy.deepcopy(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    removed = [(0, 1), (2, 0), (2, 3)]
    spec = TrainSpec(epochs=1, lr=1e-3, batch_size=32, weight_decay=0.0)
    with accelerator_scope("no") as acc, trials.masked(model, removed):
        stats = finetune(model, data, tok.pad_token_id, spec, acc, seed=0)
    assert stats["train_steps"] == -(-len(df) // 32) and stats["train_examples"] == len(df)
    assert np.isfinite(stats["train_loss"])
    assert not model.training                                    # finetune leaves eval mode
    after = model.state_dict()
    d = model.config.hidden_size // model.config.num_attention_heads
    for layer in range(model.config.num_hidden_layers):
        pre = f"distilbert.transformer.layer.{layer}.attention."
        for h in range(model.config.num_attention_heads):
            rows = slice(h * d, (h + 1) * d)
            pieces = [(pre + f"{n}.{p}", rows, 0) for n in ("q_lin", "k_lin", "v_lin") for p in ("weight", "bias")]
            pieces.append((pre + "out_lin.weight", rows, 1))
            for name, sl, dim in pieces:
                a = before[name].narrow(dim, sl.start, d)
                b = after[name].narrow(dim, sl.start, d)
                if (layer, h) in removed:
                    assert torch.equal(a, b), (name, h)
                else:
                    assert not torch.equal(a, b), (name, h)
    # the rest of the network trained as usual
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])


def test_accelerator_scope_resets_between_trials():
    with accelerator_scope("no") as acc:
        assert acc.mixed_precision == "no"
    with accelerator_scope("auto") as acc:                         # a second trial in the process
        assert acc.mixed_precision == resolve_precision("auto")


def test_adamw_is_fused_on_cpu_and_matches_the_reference_update():
    """_adamw picks torch's fused kernel; its updates equal the single-tensor reference
    implementation (same rule: decoupled weight decay, bias correction)."""
    from headsweep.trials.train import _adamw
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(7, 5, generator=gen), torch.randn(5, generator=gen)]
    grads = [[torch.randn_like(p) for p in init] for _ in range(5)]
    fused_p = [torch.nn.Parameter(p.clone()) for p in init]
    ref_p = [torch.nn.Parameter(p.clone()) for p in init]
    groups = lambda ps: [{"params": [ps[0]], "weight_decay": 0.01}, {"params": [ps[1]], "weight_decay": 0.0}]
    fused = _adamw(groups(fused_p), 1e-2, "cpu")
    ref = torch.optim.AdamW(groups(ref_p), lr=1e-2, foreach=False, fused=False)
    try:                                                            # torch >= 2.4 has a CPU kernel
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], fused=True)
        cpu_fused = True
    except (RuntimeError, ValueError, TypeError):
        cpu_fused = False
    assert bool(fused.defaults.get("fused")) is cpu_fused
    for g in grads:
        for ps, opt in ((fused_p, fused), (ref_p, ref)):
            for p, gi in zip(ps, g):
                p.grad = gi.clone()
            opt.step()
    for a, b, p0 in zip(fused_p, ref_p, init):
        assert not torch.equal(a.detach(), p0)                      # it did move
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)


def test_finetune_in_bf16_on_cpu(small):
    """bf16 autocast works on the CPU (fp16 does not: it falls back to fp32, tested above)."""
    model, tok, df, data = small
    model = copy.deepcopy(model)
    before = model.classifier.weight.detach().clone()
    with accelerator_scope("bf16") as acc:
        assert acc.mixed_precision == "bf16"
        stats = finetune(model, data, tok.pad_token_id, TrainSpec(epochs=1, lr=1e-3, batch_size=64), acc, seed=0)
        metrics, _ = evaluate(model, data, tok.pad_token_id, acc)
    assert np.isfinite(stats["train_loss"]) and np.isfinite(metrics["loss"])
    assert model.classifier.weight.dtype == torch.float32            # master weights stay fp32
    assert not torch.equal(before, model.classifier.weight.detach())
