"""Leave-one-out importance (Michel, Levy & Neubig 2019, §3.1): I_h = L(head h masked) - L(all
heads), the mean task loss over the importance examples. Positive: the model is worse without h.

Three facts make it cheaper than 72 masked passes, exactly:

- Masking one head changes nothing below its layer, so the single-head masks of a layer are
  evaluated together: each batch runs once unmasked (its layer outputs kept), then once per layer
  l over the batch repeated for every head of l, where the layers below l return their kept
  outputs instead of recomputing them (``_replay``).
- Nor does it change layer l's queries, keys, values or attention probabilities: layer l runs
  them once over the batch, and the batch fans out into one copy per mask only at the output
  projection's input, where each copy has its head zeroed (``_fan_out``).
- The classification head reads one position per example ([CLS]; GPT-2: the last non-pad
  token), so the last layer needs its attention output and feed-forward at that row only
  (``_pooled_rows_only``); keys and values still see every token.

A 6 x 12 model then costs 1 + 6 (chunked) passes per batch, each over fewer layers, instead of 72
full passes; bench/ablation.py measures the ratio and counts the work no exact method can skip.

Registered as ``ablation`` in ``trials.importance.IMPORTANCE_METHODS``. ``layer_mask_passes``,
the same passes for any masks that touch one layer each, also evaluates every head's own removal
and every layer's best survivor on the evaluation split (trials/head_eval.py).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import nn

from headsweep.trials.adapters import adapter_for, head_layout
from headsweep.trials.data import model_inputs
from headsweep.trials.gates import repeat_batch
from headsweep.trials.metrics import task_loss

# Rows (examples x masks) x tokens evaluated per forward pass: bounds the memory of one pass.
TOKENS_PER_PASS = 1 << 15


@torch.no_grad()
def ablation_importance(model: nn.Module, batches: Iterable[dict],
                        tokens_per_pass: int = TOKENS_PER_PASS) -> torch.Tensor:
    """Raw loss increase per head, float32 [n_layers, n_heads] on the CPU. Active masks stay in
    force (a head already masked scores 0: masking it again changes nothing)."""
    layout = head_layout(model)
    if getattr(model, "headsweep_present_heads", None):
        raise ValueError("ablation_importance needs the unpruned model (mask heads instead of pruning them)")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    masked_sum = torch.zeros(layout.n_layers, layout.n_heads, dtype=torch.float64)
    base_sum, n = 0.0, 0
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
            labels = batch["labels"]
            b = labels.shape[0]

            def add(layer, start, logits):                       # logits [masks, batch, out]
                m = logits.shape[0]
                losses = task_loss(logits.reshape(m * b, -1), labels.repeat(m), reduction="none").view(m, b)
                masked_sum[layer, start:start + m] += losses.double().sum(1).cpu()
            base = layer_mask_passes(model, batch, one_head_masked(layout, device), add, tokens_per_pass)
            base_sum += float(task_loss(base, labels, reduction="sum"))
            n += b
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("ablation_importance got no examples")
    return ((masked_sum - base_sum) / n).float()


def one_head_masked(layout, device=None) -> dict[int, torch.Tensor]:
    """Per layer, its single-head masks as gate rows: row h masks head h alone. [heads, heads]."""
    eye = torch.eye(layout.n_heads, device=device)
    return {layer: 1.0 - eye for layer in range(layout.n_layers)}


def layer_mask_passes(model: nn.Module, batch: dict, layer_gates: dict[int, torch.Tensor], visit,
                      tokens_per_pass: int = TOKENS_PER_PASS) -> torch.Tensor:
    """Evaluate one batch under many masks that each gate the heads of one layer: ``layer_gates``
    maps a layer to its masks as gate rows ``[masks, heads]`` (1 keeps a head, 0 removes it; every
    other layer intact). Returns the unmasked logits [batch, out] and calls ``visit(layer, start,
    logits)`` with the logits [masks, batch, out] of rows ``start..start+masks`` of the layer's
    gates, as many masks per forward pass as ``tokens_per_pass`` allows. Only the logits are exact
    (the classifier's row; see ``_pooled_rows_only``). Runs under the caller's grad mode and
    autocast; every hook is removed on return."""
    inputs, input_ids = model_inputs(batch), batch["input_ids"]
    b, seq = input_ids.shape
    with _pooled_rows_only(model, input_ids):
        with _keep_layer_outputs(model) as kept:
            base = model(**inputs).logits
        per_pass = max(1, tokens_per_pass // (b * seq))          # masks per forward pass
        for layer, gates in layer_gates.items():
            for start in range(0, gates.shape[0], per_pass):
                g = gates[start:start + per_pass]
                m = g.shape[0]
                with _replay(model, kept, layer), _fan_out(model, layer, g, b):
                    logits = model(**repeat_batch(inputs, m)).logits
                visit(layer, start, logits.view(m, b, -1))
    return base


ablation_importance.sign = 1
ablation_importance.normalization = "none"    # loss increases are on one scale in every layer


def flop_ceiling(n_layers: int, n_heads: int, dim: int, ffn: int, seq: int) -> float:
    """Matrix-product work of 72 single-head masked passes + 1 unmasked (the plain loop) over
    the work of ``ablation_importance``: the best speed-up an exact leave-one-out can reach where
    both are compute-bound (attention scores, a few % at these lengths, left out). Per token, a
    layer's q/k/v cost 3 dim^2 and the rest dim^2 + 2 dim ffn; the last layer's rest runs at one
    row of ``seq``; a mask in layer l recomputes the rest of l and everything above it."""
    qkv, rest = 3 * dim * dim, dim * dim + 2 * dim * ffn
    full, last = qkv + rest, qkv + rest / seq
    loop = (n_layers * n_heads + 1) * n_layers * full
    unmasked = (n_layers - 1) * full + last
    masks = sum(rest + (n_layers - 2 - l) * full + last for l in range(n_layers - 1)) + rest / seq
    return loop / (unmasked + n_heads * masks)


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
        x = args[0]                                 # [rows, seq, width] or [masks, batch, seq, width]
        lead, (s, width) = x.shape[:-2], x.shape[-2:]
        flat = x.reshape(-1, s, width)
        rows = pos.repeat(flat.shape[0] // pos.shape[0])          # mask-major, as repeat_batch
        row = flat.gather(1, rows.view(-1, 1, 1).expand(-1, 1, width))
        return (row.view(*lead, 1, width), *args[1:])
    handles = []
    try:
        for module in (ad.out_proj(model, last), ffn):
            handles.append(module.register_forward_pre_hook(take))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _replay(model: nn.Module, kept: dict, below: int):
    """Inside the block, layers ``< below`` skip their computation and return their kept output
    (unrepeated: layer ``below`` fans out itself): a single-head mask in layer ``below`` cannot
    change them."""
    layers = adapter_for(model).layers(model)
    saved = []   # (layer, its own instance-level forward or None): accelerate may have set one
    try:
        for i in range(below):
            saved.append((layers[i], layers[i].__dict__.get("forward")))
            layers[i].forward = lambda *a, _out=kept[i], **kw: _out
        yield
    finally:
        for layer, own in saved:
            if own is None:
                del layer.forward
            else:
                layer.forward = own


@contextlib.contextmanager
def _fan_out(model: nn.Module, layer: int, gates: torch.Tensor, b: int):
    """Inside the block, the model runs on the batch repeated once per row of ``gates`` ([masks,
    heads], mask-major, as ``repeat_batch``) and layer ``layer`` multiplies its heads by row j in
    copy j, but computes its attention over the ``b`` original rows only: the copies fan out at
    the output projection's input, the one place where they differ.

    The projection's output comes back as [masks, batch, seq, width], so the layer's residual
    additions broadcast its unrepeated input over the masks; the layer's output is flattened to
    [masks * batch, seq, width] for the layers above."""
    ad = adapter_for(model)
    block, proj = ad.layers(model)[layer], ad.out_proj(model, layer)
    m, n_heads = gates.shape
    g = gates.view(m, 1, 1, n_heads, 1)                              # [masks, 1, 1, heads, 1]

    def first_rows(v):   # the batch's first copy of a repeated tensor (copies are identical)
        return v[:b] if torch.is_tensor(v) and v.dim() >= 2 and v.shape[0] == m * b else v

    def unrepeat_inputs(module, args, kwargs):
        return tuple(first_rows(a) for a in args), {k: first_rows(v) for k, v in kwargs.items()}

    def fan(module, args):
        x = args[0]                                                  # [batch, seq, heads*head_dim]
        _, s, width = x.shape
        x = x.reshape(1, b, s, n_heads, width // n_heads) * g.to(x.dtype)   # [masks, batch, seq, H, hd]
        return (x.view(m * b, s, width), *args[1:])

    def unflatten(module, args, out):
        return out.view(m, b, *out.shape[1:])                        # [masks, batch, seq, width]

    def flatten(module, args, kwargs, out):
        return _flat(out, m * b)

    handles = []
    try:
        handles.append(block.register_forward_pre_hook(unrepeat_inputs, with_kwargs=True))
        handles.append(proj.register_forward_pre_hook(fan))
        handles.append(proj.register_forward_hook(unflatten))
        handles.append(block.register_forward_hook(flatten, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def _flat(output, rows: int):
    """A layer's output (its hidden states, or a tuple that starts with them), [masks, batch, seq,
    width] -> [rows, seq, width]."""
    if torch.is_tensor(output):
        return output.reshape(rows, *output.shape[2:])
    return type(output)((_flat(output[0], rows), *output[1:]))
