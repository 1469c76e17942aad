"""Fixtures for the ``trials`` tests: the three tiny presets, built once per test module.

The reference helpers here reach the attention output projections by their literal module
paths (not through ``trials.adapters``), so the tests that use them check the package against
an independent computation:

- GPT-2      ``transformer.h[i].attn.c_proj``                      Conv1D, weight [in, out]
- DistilBERT ``distilbert.transformer.layer[i].attention.out_lin``  Linear, weight [out, in]
- BERT       ``bert.encoder.layer[i].attention.output.dense``      Linear, weight [out, in]
- Llama      ``model.layers[i].self_attn.o_proj``                   Linear, weight [out, in] (no bias;
             8 query heads in 2 KV groups: query head h reads key/value head h // 4)

Head h of layer i owns the projection's input channels h*d .. (h+1)*d.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

# One intra-op thread: on a shared, loaded machine two threads made a tiny fine-tune 13x slower
# (measured: 12 steps of tiny-bert, 4.9 s with 2 threads, 0.38 s with 1).
torch.set_num_threads(1)

ARCHS = ("gpt2", "distilbert", "bert", "llama")

# Sentences in the synthetic task's vocabulary, of different lengths (so batches are padded).
TEXTS = [
    "the movie is good .",
    "the plot was not very clever , but the cast is brilliant .",
    "although the script seems dull , the ending is touching .",
    "frankly , the acting is bad and the pacing feels tedious .",
    "this film remains quite charming .",
    "the story is never boring .",
]


def out_proj(model, arch: str, layer: int) -> torch.nn.Module:
    """Layer ``layer``'s attention output projection, by its literal path."""
    if arch == "gpt2":
        return model.transformer.h[layer].attn.c_proj
    if arch == "distilbert":
        return model.distilbert.transformer.layer[layer].attention.out_lin
    if arch == "bert":
        return model.bert.encoder.layer[layer].attention.output.dense
    if arch == "llama":
        return model.model.layers[layer].self_attn.o_proj
    raise AssertionError(arch)


def head_weight(model, arch: str, layer: int, head: int, grad: bool = False) -> torch.Tensor:
    """View of the output-projection weights (or their ``.grad``) that read head ``head``'s channels."""
    d = head_dim_of(model.config)
    w = out_proj(model, arch, layer).weight
    w = w.grad if grad else w
    # Conv1D weight is [in, out] -> input ROWS; nn.Linear weight is [out, in] -> input COLUMNS.
    return w[head * d:(head + 1) * d, :] if arch == "gpt2" else w[:, head * d:(head + 1) * d]


def head_dim_of(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


@torch.no_grad()
def scale_heads(model, arch: str, factors: dict) -> None:
    """In place: multiply each head's out-proj input weights by ``factors[(layer, head)]``."""
    for (layer, head), f in factors.items():
        head_weight(model, arch, layer, head).mul_(float(f))


def zeroed_copy(model, arch: str, heads) -> torch.nn.Module:
    """A deepcopy with the out-proj input weights of ``heads`` set to zero (no hooks)."""
    ref = copy.deepcopy(model)
    scale_heads(ref, arch, {tuple(h): 0.0 for h in heads})
    return ref


@torch.no_grad()
def perturb_(model, seed: int) -> None:
    """Redraw the weights larger than the presets' init (std 0.02), so every head matters.

    Matrices ~ N(0, 0.15^2); vectors (biases, LayerNorm) get N(0, 0.1^2) added, so the output
    projection biases are non-zero too.
    """
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        noise = torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype)
        if p.dim() >= 2:
            p.copy_(noise * 0.15)
        else:
            p.add_(noise * 0.1)


@torch.no_grad()
def logits_of(model, batch: dict) -> torch.Tensor:
    return model(**batch).logits


def attention_params(model) -> int:
    """Every attention-projection parameter (q, k, v and out; GPT-2's fused c_attn and c_proj),
    by the literal module paths of the model's architecture."""
    arch = model.config.model_type
    total = 0
    for name, p in model.named_parameters():
        parts = name.split(".")
        if arch == "gpt2":
            hit = ".attn.c_attn." in name or ".attn.c_proj." in name
        elif arch == "bert":
            hit = ".attention.self." in name or ".attention.output.dense." in name
        elif arch == "llama":
            hit = ".self_attn." in name and parts[-2] in ("q_proj", "k_proj", "v_proj", "o_proj")
        else:                                                              # distilbert
            hit = ".attention." in name and parts[-2] in ("q_lin", "k_lin", "v_lin", "out_lin")
        total += p.numel() if hit else 0
    return total


def out_proj_hook_counts(model, arch: str) -> list[int]:
    return [len(out_proj(model, arch, i)._forward_pre_hooks)
            for i in range(model.config.num_hidden_layers)]


def build_tiny(arch: str, seed: int = 0, suffix: str = "", num_labels: int = 2) -> SimpleNamespace:
    from headsweep import trials
    torch.manual_seed(seed)
    model, tok = trials.load_model(f"preset:tiny-{arch}{suffix}", num_labels)
    perturb_(model, seed)
    model.eval()
    cfg = model.config
    batch = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    return SimpleNamespace(
        arch=arch, model=model, tok=tok, batch=batch,
        n_layers=cfg.num_hidden_layers, n_heads=cfg.num_attention_heads,
        hidden=cfg.hidden_size, head_dim=head_dim_of(cfg),
        out_proj=lambda m, i: out_proj(m, arch, i),
        head_weight=lambda m, i, h, grad=False: head_weight(m, arch, i, h, grad),
        scale_heads=lambda m, factors: scale_heads(m, arch, factors),
        zeroed_copy=lambda m, heads: zeroed_copy(m, arch, heads),
        hook_counts=lambda m: out_proj_hook_counts(m, arch),
    )


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request) -> SimpleNamespace:
    """One tiny preset per architecture (eval mode, larger random weights), built once per module.

    Tests that change the model must work on ``copy.deepcopy(tiny.model)``.
    """
    return build_tiny(request.param)


@pytest.fixture(scope="module", params=ARCHS)
def tiny_random(request) -> SimpleNamespace:
    """As ``tiny``, from the random-init presets (``preset:tiny-<arch>-random``: no shipped
    weights needed)."""
    return build_tiny(request.param, suffix="-random")


@pytest.fixture(scope="module")
def tiny_gpt2() -> SimpleNamespace:
    return build_tiny("gpt2")


@pytest.fixture
def random_heads(rng):
    """``random_heads(n_layers, n_heads, count)``: ``count`` distinct (layer, head) pairs."""
    def draw(n_layers: int, n_heads: int, count: int) -> list[tuple[int, int]]:
        flat = rng.choice(n_layers * n_heads, size=count, replace=False)
        return sorted(divmod(int(i), n_heads) for i in flat)
    return draw


@pytest.fixture
def logits():
    return logits_of


# ---------------------------------------------------------------------------- stage-B checkpoints

def make_checkpoint(out, arch: str, data, methods=("gradient",), seed: int = 0, examples: int = 32,
                    shape: tuple[int, int] | None = None, unit: str = "head"):
    """A stage-A checkpoint without fine-tuning (stage B does not care how it was trained): the
    random-init preset of ``arch`` with the larger weights of ``perturb_`` (so every head matters),
    saved in HF format with its tokenizer and the importance table of ``methods`` (scored per
    ``unit``) beside it. ``shape`` = (layers, heads) builds that many instead of the preset's 4 x 4
    (hidden 4 per head). Returns the ``FinetuneSpec`` that stage-B specs point at."""
    from pathlib import Path

    import pandas as pd

    from headsweep import trials
    from headsweep.trials import layout
    from headsweep.trials.data import Encoded, eval_loader, load_task
    from headsweep.trials.importance import IMPORTANCE_METHODS
    from headsweep.trials.rows import importance_frame
    from headsweep.trials.spec import FinetuneSpec, ImportanceSpec, ModelSpec, TrainSpec
    from headsweep.trials.tokenizers import uses_token_types
    spec = FinetuneSpec(model=ModelSpec(name=f"preset:tiny-{arch}-random"), data=data,
                        train=TrainSpec(epochs=1, lr=1e-3, batch_size=16, eval_batch_size=32, mixed_precision="no"),
                        importance=ImportanceSpec(examples=examples, batch_size=16, method=tuple(methods), unit=unit),
                        seed=seed)
    task = load_task(data, examples)
    texts = list(task.train["text"]) + (list(task.train["text_pair"]) if "text_pair" in task.train else [])
    torch.manual_seed(seed)
    model, tok = trials.load_model(spec.model.name, data.num_labels, texts=texts)
    if shape is not None:
        from transformers import AutoModelForSequenceClassification
        n_layers, n_heads = shape
        cfg = model.config.to_dict()
        names = {"gpt2": ("n_layer", "n_head", "n_embd"), "distilbert": ("n_layers", "n_heads", "dim"),
                 "bert": ("num_hidden_layers", "num_attention_heads", "hidden_size")}[arch]
        cfg.update(dict(zip(names, (n_layers, n_heads, 4 * n_heads))))
        model = AutoModelForSequenceClassification.from_config(type(model.config).from_dict(cfg))
    perturb_(model, seed)
    model.eval()
    enc = Encoded(task.importance, tok, data.max_length, token_types=uses_token_types(model))
    batches = list(eval_loader(enc, tok.pad_token_id, 16))
    from headsweep.trials.units import units
    with units(model, unit):
        imp = pd.concat([importance_frame(IMPORTANCE_METHODS[m](model, batches), m) for m in methods],
                        ignore_index=True)
    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    imp.to_parquet(out / layout.CKPT_IMPORTANCE)
    return spec


def stage_a_scores(checkpoint, method: str = "gradient"):
    """[n_layers, n_heads] numpy ``score`` grid of ``method`` read straight from the parquet."""
    from pathlib import Path

    import pandas as pd

    from headsweep.trials import layout
    imp = pd.read_parquet(Path(checkpoint) / layout.CKPT_IMPORTANCE)
    imp = imp[imp["method"] == method]
    return imp.pivot(index="layer", columns="head", values="score").sort_index().sort_index(axis=1).to_numpy()


@torch.no_grad()
def recheck(checkpoint, data, heads) -> dict:
    """Loss and per-example probabilities of the checkpoint with ``heads`` masked, computed with
    plain transformers on the whole evaluation split in one padded batch (pairs: the tokenizer's
    own pair template, or ``A <eos> B`` for a tokenizer without a separator, by hand)."""
    import torch.nn.functional as F
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from headsweep import trials
    from headsweep.trials.data import limit_eval, read_split
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    tok = AutoTokenizer.from_pretrained(checkpoint)
    ev = limit_eval(read_split(data, "eval"), data)
    texts = list(ev["text"])
    pairs = list(ev["text_pair"]) if "text_pair" in ev.columns else None
    if pairs is not None and tok.sep_token is None:
        seqs = [tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                + tok(b, add_special_tokens=False)["input_ids"] for a, b in zip(texts, pairs)]
        width = max(map(len, seqs))
        enc = {"input_ids": torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs]),
               "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])}
    else:
        segments = getattr(model.config, "type_vocab_size", 0) >= 2     # BERT: segment embeddings
        enc = dict(tok(texts, pairs, truncation=True, max_length=data.max_length, padding=True,
                       return_tensors="pt", return_token_type_ids=segments))
    with trials.masked(model, [tuple(h) for h in heads]):
        logits = model(**enc).logits.float()                       # [eval, labels]
    labels = torch.tensor(ev["label"].to_numpy())
    probs = logits.softmax(-1)
    return {"loss": float(F.cross_entropy(logits, labels)), "probs": probs,
            "accuracy": float((probs.argmax(-1) == labels).double().mean()), "enc": enc,
            "example_id": ev["example_id"].to_numpy()}


def check_row(row, preds, checkpoint, data, atol: float = 1e-5):
    """The row's loss and accuracy, and each prediction's probability, equal ``recheck`` of its
    ``heads_removed``."""
    import json

    import numpy as np
    ref = recheck(checkpoint, data, json.loads(row["heads_removed"]))
    assert abs(row["loss"] - ref["loss"]) <= atol, (row["loss"], ref["loss"])
    assert row["accuracy"] == pytest.approx(ref["accuracy"], abs=1e-9)
    assert preds["example_id"].tolist() == ref["example_id"].tolist()
    want = ref["probs"].gather(1, torch.tensor(preds["pred"].to_numpy())[:, None])[:, 0].numpy()
    np.testing.assert_allclose(preds["prob"].to_numpy(), want, atol=atol, rtol=0)
