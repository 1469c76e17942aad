"""Fixtures for the ``trials`` tests: the three tiny presets, built once per test module.

The reference helpers here reach the attention output projections by their literal module
paths (not through ``trials.adapters``), so the tests that use them check the package against
an independent computation:

- GPT-2      ``transformer.h[i].attn.c_proj``                      Conv1D, weight [in, out]
- DistilBERT ``distilbert.transformer.layer[i].attention.out_lin``  Linear, weight [out, in]
- BERT       ``bert.encoder.layer[i].attention.output.dense``      Linear, weight [out, in]

Head h of layer i owns the projection's input channels h*d .. (h+1)*d.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

ARCHS = ("gpt2", "distilbert", "bert")

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
    raise AssertionError(arch)


def head_weight(model, arch: str, layer: int, head: int, grad: bool = False) -> torch.Tensor:
    """View of the output-projection weights (or their ``.grad``) that read head ``head``'s channels."""
    d = model.config.hidden_size // model.config.num_attention_heads
    w = out_proj(model, arch, layer).weight
    w = w.grad if grad else w
    # Conv1D weight is [in, out] -> input ROWS; nn.Linear weight is [out, in] -> input COLUMNS.
    return w[head * d:(head + 1) * d, :] if arch == "gpt2" else w[:, head * d:(head + 1) * d]


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


def out_proj_hook_counts(model, arch: str) -> list[int]:
    return [len(out_proj(model, arch, i)._forward_pre_hooks)
            for i in range(model.config.num_hidden_layers)]


def build_tiny(arch: str, seed: int = 0) -> SimpleNamespace:
    import trials
    torch.manual_seed(seed)
    model, tok = trials.load_model(f"preset:tiny-{arch}", 2)
    perturb_(model, seed)
    model.eval()
    cfg = model.config
    batch = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    return SimpleNamespace(
        arch=arch, model=model, tok=tok, batch=batch,
        n_layers=cfg.num_hidden_layers, n_heads=cfg.num_attention_heads,
        hidden=cfg.hidden_size, head_dim=cfg.hidden_size // cfg.num_attention_heads,
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
