"""Leave-one-out importance (Michel, Levy & Neubig 2019, §3.1): I_h = L(head h masked) - L(all
heads), the mean task loss over the importance examples. Positive: the model is worse without h.

Two facts make it cheaper than 72 masked passes, exactly:

- Masking one head changes nothing below its layer, and the gates take one mask per example, so
  the single-head masks of a layer are evaluated together: each batch runs once unmasked (its
  layer outputs kept), then once per layer l with the batch repeated for every head of l, where
  the layers below l return their kept outputs instead of recomputing them (``_replay``).
- The classification head reads one position per example ([CLS]; GPT-2: the last non-pad
  token), so the last layer needs its attention output and feed-forward at that row only
  (``_pooled_rows_only``); keys and values still see every token.

A 6 x 12 model then costs 1 + 6 (chunked) passes per batch, each over fewer layers, instead of 72
full passes (bench/ablation.py measures the ratio).

Registered as ``ablation`` in ``trials.importance.IMPORTANCE_METHODS``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import nn

from trials.adapters import adapter_for, head_layout
from trials.data import model_inputs
from trials.gates import gated, repeat_batch
from trials.metrics import task_loss

# Rows (examples x masks) x tokens evaluated per forward pass: bounds the memory of one pass.
TOKENS_PER_PASS = 1 << 15


@torch.no_grad()
def ablation_importance(model: nn.Module, batches: Iterable[dict],
                        tokens_per_pass: int = TOKENS_PER_PASS) -> torch.Tensor:
    """Raw loss increase per head, float32 [n_layers, n_heads] on the CPU. Active masks stay in
    force (a head already masked scores 0: masking it again changes nothing)."""
    layout = head_layout(model)
    n_layers, n_heads = layout.n_layers, layout.n_heads
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    masked_sum = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    base_sum, n = 0.0, 0
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
            inputs, labels = model_inputs(batch), batch["labels"]
            b, seq = labels.shape[0], batch["input_ids"].shape[1]
            with _pooled_rows_only(model, batch["input_ids"]):
                with _keep_layer_outputs(model) as kept:
                    base = task_loss(model(**inputs).logits, labels, reduction="sum")
                base_sum += float(base)
                n += b
                per_pass = max(1, tokens_per_pass // (b * seq))      # masks per forward pass
                for layer in range(n_layers):
                    for start in range(0, n_heads, per_pass):
                        heads = list(range(start, min(start + per_pass, n_heads)))
                        m = len(heads)
                        gates = torch.ones(m, b, n_layers, n_heads, device=device)   # [masks, batch, L, H]
                        gates[torch.arange(m), :, layer, heads] = 0.0
                        with _replay(model, kept, layer, m), gated(
                                model, gates.view(m * b, n_layers, n_heads), layers=[layer]):
                            logits = model(**repeat_batch(inputs, m)).logits
                        losses = task_loss(logits, labels.repeat(m), reduction="none").view(m, b)
                        masked_sum[layer, start:start + m] += losses.double().sum(1).cpu()
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("ablation_importance got no examples")
    return ((masked_sum - base_sum) / n).float()


ablation_importance.sign = 1


@contextlib.contextmanager
def _keep_layer_outputs(model: nn.Module):
    """Record every layer's output during the block: ``{layer: output}``."""
    layers = adapter_for(model).layers(model)
    kept, handles = {}, []

    def keep(i):
        def hook(module, args, kwargs, output):
            kept[i] = output
        return hook
    try:
        for i, layer in enumerate(layers):
            handles.append(layer.register_forward_hook(keep(i), with_kwargs=True))
        yield kept
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _pooled_rows_only(model: nn.Module, input_ids: torch.Tensor):
    """Inside the block, the last layer's attention output projection and feed-forward get only
    the row the classification head reads ([rows, 1, width]). The layer's residual additions then
    broadcast that row over the sequence: the row read is exact, the others (never read) are not
    the model's. Architectures whose pooled position is unknown run unchanged."""
    ad = adapter_for(model)
    last = len(ad.layers(model)) - 1
    pos = ad.pooled_positions(model, input_ids)                   # [batch]
    ffn = ad.ffn(model, last)
    if pos is None or ffn is None:
        yield
        return

    def take(module, args):
        x = args[0]                                               # [rows, seq, width]
        rows = pos.repeat(x.shape[0] // pos.shape[0])             # mask-major, as repeat_batch
        return (x.gather(1, rows.view(-1, 1, 1).expand(-1, 1, x.shape[-1])), *args[1:])
    handles = []
    try:
        for module in (ad.out_proj(model, last), ffn):
            handles.append(module.register_forward_pre_hook(take))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _replay(model: nn.Module, kept: dict, below: int, times: int):
    """Inside the block, layers ``< below`` skip their computation and return their kept output;
    the one layer ``below`` reads gets it repeated ``times`` along the batch (mask-major, as
    ``repeat_batch``): a single-head mask in layer ``below`` cannot change them."""
    layers = adapter_for(model).layers(model)
    saved = []   # (layer, its own instance-level forward or None): accelerate may have set one
    try:
        for i in range(below):
            out = _repeat(kept[i], times) if i == below - 1 else kept[i]   # the others go unread
            saved.append((layers[i], layers[i].__dict__.get("forward")))
            layers[i].forward = lambda *a, _out=out, **kw: _out
        yield
    finally:
        for layer, own in saved:
            if own is None:
                del layer.forward
            else:
                layer.forward = own


def _repeat(output, times: int):
    """A layer output (a tensor, or a tuple/list of them and None) repeated along dim 0."""
    if torch.is_tensor(output):
        return output.repeat(times, *([1] * (output.dim() - 1)))
    if isinstance(output, (tuple, list)):
        return type(output)(_repeat(o, times) for o in output)
    return output
