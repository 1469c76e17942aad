"""What pruning buys: parameter counts and KV-cache size after physical pruning, and the latency ratio.

Every attention projection of a layer (q, k, v and the output projection, GPT-2's fused
``c_attn`` too) is split evenly over the layer's heads, except the output projection's bias,
which stays however many heads go (as with a zero gate). So removing a head removes
``per_head[layer]`` parameters; grouped-query layers count query slots and KV heads as their
pruning keeps them (trials/gqa.py). The counts here equal ``count_parameters(prune_heads(...))``
without copying the model (tests/trials/test_efficiency.py and test_gqa.py check both ways).

``kv_cache_bytes_per_token`` is what one token adds to a KV cache: a key and a value vector per
KV head and layer, in the dtype of the model's weights (fp32 checkpoints: 4 bytes; a bf16 cache
holds half). Only removing every query head of a KV group shrinks it; without GQA each head has its
own key and value. (Encoders keep no cache; the count is the same keys and values.)

``speedup`` times the unpruned model and a physically pruned copy on the same batches, on the same
worker, interleaved (A B, B A, ...), and divides the medians: unpruned / pruned, > 1 = faster.
"""
from __future__ import annotations

import copy
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import nn

from headsweep.trials.adapters import adapter_for, head_layout
from headsweep.trials.prune import count_parameters, prune_heads

Head = tuple[int, int]
SPEED_REPEATS = 7        # interleaved timing rounds (median over them)
SPEED_BATCHES = 8        # evaluation batches timed per round


def efficiency(model: nn.Module, removed: Sequence[Head]) -> dict:
    """``params_total``, ``params_pruned``, ``attn_params_kept`` and the KV-cache bytes per token
    (``kv_cache_bytes_per_token_total`` unpruned, ``kv_cache_bytes_per_token`` after) of removing
    ``removed`` from the unpruned ``model`` (units of ``trials.units.units`` if active)."""
    if getattr(model, "headsweep_present_heads", None):
        raise ValueError("efficiency needs the unpruned model")
    layout = head_layout(model)
    by_layer = defaultdict(set)
    for layer, head in layout.query_heads_of(removed):
        by_layer[layer].add(head)
    ad = adapter_for(model)
    kept = [ad.attention_params_kept(model, i, by_layer[i]) for i in range(layout.n_layers)]
    attn_total = sum(ad.attention_params_kept(model, i, set()) for i in range(layout.n_layers))
    total = count_parameters(model)
    per_kv = 2 * layout.head_dim // layout.query_per_unit * ad.out_proj(model, 0).weight.element_size()
    kv = [ad.kv_heads_kept(model, i, by_layer[i]) for i in range(layout.n_layers)]
    return {"params_total": total, "params_pruned": total - attn_total + sum(kept), "attn_params_kept": sum(kept),
            "kv_cache_bytes_per_token_total": per_kv * layout.kv_heads * layout.n_layers,
            "kv_cache_bytes_per_token": per_kv * sum(kv)}


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
