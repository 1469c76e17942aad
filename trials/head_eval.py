"""Per-head evaluations on the evaluation split, many masks per forward pass.

Two stage-B questions need one evaluation per head, and each mask touches one layer only, so
trials/ablation.py's passes (``layer_mask_passes``: replay the layers below, fan out at the
output projection, read the classifier's row) evaluate them together:

- ``each-head`` (Michel, Levy & Neubig 2019, Table 1): every head masked alone on the fine-tuned
  model; a results row per head, with ``layer`` and ``head``.
- ``layer-single-head`` with ``layer_single_head.keep: best`` (Michel Table 2's oracle): each head
  of a layer tried as the layer's only survivor; the layer keeps the best one. It looks at the
  evaluation set, so its rows carry ``importance_method = "oracle"``.

Each mask's metrics and predictions come from the same code as ``train.evaluate`` (``summarize``)
and equal evaluating that mask alone (tests/trials/test_each_head.py).
"""
from __future__ import annotations

import math
import time

import pandas as pd
import torch

from headsweep.trials.ablation import TOKENS_PER_PASS, layer_mask_passes, one_head_masked
from headsweep.trials.data import Encoded, eval_loader
from headsweep.trials.train import summarize

Head = tuple[int, int]


@torch.no_grad()
def evaluate_layer_masks(model, data: Encoded, pad_id: int, accelerator, batch_size: int,
                         layer_gates: dict[int, torch.Tensor],
                         tokens_per_pass: int = TOKENS_PER_PASS) -> dict[int, list[tuple[dict, pd.DataFrame]]]:
    """{layer: [(metrics, predictions) of each gate row of the layer]} on ``data``; ``layer_gates``
    as ``ablation.layer_mask_passes`` takes them ([masks, heads], 1 keeps a head). Each metrics
    dict has ``eval_seconds``: the whole evaluation's time over the number of masks."""
    loader = accelerator.prepare(eval_loader(data, pad_id, batch_size))
    model.to(accelerator.device).eval()         # as train.evaluate: the cached model is not prepared
    gates = {layer: g.to(accelerator.device) for layer, g in layer_gates.items()}
    t0 = time.perf_counter()
    logits_all = {layer: [] for layer in gates}  # per batch: [batch, masks, out]
    labels_all, ids_all = [], []
    for batch in loader:
        out = {layer: [None] * g.shape[0] for layer, g in gates.items()}

        def keep(layer, start, logits):        # logits [masks, batch, out]
            for j in range(logits.shape[0]):
                out[layer][start + j] = logits[j].float()
        with accelerator.autocast():
            layer_mask_passes(model, batch, gates, keep, tokens_per_pass)
        stacked = {layer: torch.stack(rows, 1) for layer, rows in out.items()}   # [batch, masks, out]
        stacked, labels, ids = accelerator.gather_for_metrics((stacked, batch["labels"], batch["example_id"]))
        for layer, logits in stacked.items():
            logits_all[layer].append(logits.cpu())
        labels_all.append(labels.cpu()), ids_all.append(ids.cpu())
    labels, ids = torch.cat(labels_all), torch.cat(ids_all)
    per_mask = (time.perf_counter() - t0) / max(1, sum(g.shape[0] for g in gates.values()))
    result = {}
    for layer, parts in logits_all.items():
        logits = torch.cat(parts)                                              # [examples, masks, out]
        result[layer] = []
        for j in range(logits.shape[1]):
            metrics, preds = summarize(logits[:, j], labels, ids)
            result[layer].append(({**metrics, "eval_seconds": per_mask}, preds))
    return result


def each_head(model, data: Encoded, pad_id: int, accelerator, batch_size: int,
              tokens_per_pass: int = TOKENS_PER_PASS) -> dict[Head, tuple[dict, pd.DataFrame]]:
    """{(layer, head): (metrics, predictions)} of the model with that head alone masked."""
    from headsweep.trials.adapters import head_layout
    per_layer = evaluate_layer_masks(model, data, pad_id, accelerator, batch_size,
                                     one_head_masked(head_layout(model)), tokens_per_pass)
    return {(layer, h): r for layer, results in per_layer.items() for h, r in enumerate(results)}


def only_survivor(model, data: Encoded, pad_id: int, accelerator, batch_size: int,
                  tokens_per_pass: int = TOKENS_PER_PASS) -> dict[Head, dict]:
    """{(layer, head): metrics} of the model with every other head of that layer masked (the
    head as its layer's only survivor; the other layers intact)."""
    from headsweep.trials.adapters import head_layout
    layout = head_layout(model)
    eye = torch.eye(layout.n_heads)
    per_layer = evaluate_layer_masks(model, data, pad_id, accelerator, batch_size,
                                     {layer: eye for layer in range(layout.n_layers)}, tokens_per_pass)
    return {(layer, h): m for layer, results in per_layer.items() for h, (m, _) in enumerate(results)}


def best_survivors(metrics: dict[Head, dict], metric: str) -> dict[int, int]:
    """{layer: the head whose survival scores best}: the highest primary ``metric`` (every
    metric in trials.metrics is higher-is-better), then the lowest loss, then the lower head."""
    best: dict[int, tuple] = {}
    for (layer, head), m in sorted(metrics.items()):
        value = m.get(metric)
        value = float("-inf") if value is None or math.isnan(value) else value   # undefined: last
        key = (-value, m["loss"], head)
        if layer not in best or key < best[layer][0]:
            best[layer] = (key, head)
    return {layer: head for layer, (_, head) in best.items()}
