"""What pruning buys: parameter counts after physical pruning, and the latency ratio.

Every attention projection of a layer (q, k, v and the output projection, GPT-2's fused
``c_attn`` too) is split evenly over the layer's heads, except the output projection's bias,
which stays however many heads go (as with a zero gate). So removing a head removes
``per_head[layer]`` parameters, and the counts here equal ``count_parameters(prune_heads(...))``
without copying the model (tests/trials/test_efficiency.py checks both ways).

``speedup`` times the unpruned model and a physically pruned copy on the same batches, on the same
worker, interleaved (A B, B A, ...), and divides the medians: unpruned / pruned, > 1 = faster.
"""
from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn

from headsweep.trials.adapters import adapter_for, head_layout
from headsweep.trials.prune import count_parameters, prune_heads

Head = tuple[int, int]
SPEED_REPEATS = 7        # interleaved timing rounds (median over them)
SPEED_BATCHES = 8        # evaluation batches timed per round


def attention_parameters(model: nn.Module) -> tuple[list[int], int]:
    """(parameters one head owns in each layer, all attention-projection parameters) of an
    unpruned model."""
    layout = head_layout(model)
    if getattr(model, "headsweep_present_heads", None):
        raise ValueError("attention_parameters needs the unpruned model")
    ad = adapter_for(model)
    per_head, total = [], 0
    for i in range(layout.n_layers):
        out_proj = ad.out_proj(model, i)
        split = 0
        for mod in ad.attention_modules(model, i):
            for name, p in mod.named_parameters(recurse=False):
                total += p.numel()
                if not (mod is out_proj and name == "bias"):   # the output bias stays
                    split += p.numel()
        per_head.append(split // layout.n_heads)
    return per_head, total


def efficiency(model: nn.Module, removed: Sequence[Head]) -> dict:
    """``params_total``, ``params_pruned`` and ``attn_params_kept`` of removing ``removed``."""
    per_head, attn_total = attention_parameters(model)
    gone = sum(per_head[int(layer)] for layer, _ in set(map(tuple, removed)))
    total = count_parameters(model)
    return {"params_total": total, "params_pruned": total - gone, "attn_params_kept": attn_total - gone}


def pruned_copy(model: nn.Module, removed: Sequence[Head]) -> nn.Module:
    """A physically pruned deep copy (the model itself is left as it is)."""
    return prune_heads(copy.deepcopy(model), [tuple(h) for h in removed]).eval()


@torch.inference_mode()
def speedup(model: nn.Module, pruned: nn.Module, batches: list[dict], accelerator=None,
            repeats: int = SPEED_REPEATS) -> float:
    """Median latency of ``model`` over ``batches`` / that of ``pruned``, timed interleaved."""
    from headsweep.trials.data import model_inputs
    device = next(model.parameters()).device
    pruned.to(device).eval()
    model.eval()
    batches = [{k: v.to(device) for k, v in model_inputs(b).items()} for b in batches]
    autocast = accelerator.autocast if accelerator is not None else _nothing
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run(m) -> float:
        sync()
        t0 = time.perf_counter()
        with autocast():
            for b in batches:
                m(**b)
        sync()
        return time.perf_counter() - t0

    run(model), run(pruned)                                   # warm-up (allocations, kernels)
    times = {"unpruned": [], "pruned": []}
    for r in range(repeats):
        for name in (("unpruned", "pruned") if r % 2 == 0 else ("pruned", "unpruned")):
            times[name].append(run(model if name == "unpruned" else pruned))
    return statistics.median(times["unpruned"]) / statistics.median(times["pruned"])


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
