"""Fine-tuning and evaluation, in the shape of accelerate's ``examples/nlp_example.py``.

Mixed precision is set only in ``Accelerator(mixed_precision=...)``. The training loop keeps the
loss on the device (no ``.item()`` per step), pads per batch and groups similar lengths, which is
where it gains on a stock ``Trainer`` loop.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings

import numpy as np
import pandas as pd
import torch

from headsweep.trials.data import Encoded, eval_loader, train_loader
from headsweep.trials.errors import UserError
from headsweep.trials.importance import model_inputs
from headsweep.trials.metrics import compute, task_loss
from headsweep.trials.spec import PRECISIONS, TrainSpec


def resolve_precision(requested: str) -> str:
    """``auto``: bf16 on GPUs that support it, fp16 on older GPUs, fp32 ("no") on CPU.

    fp16 on a CPU would silently run fp32 in accelerate, so it resolves to "no" with a warning.
    """
    if requested not in PRECISIONS:
        raise UserError("finetune.mixed_precision", requested, f"must be one of {', '.join(PRECISIONS)}")
    cuda = torch.cuda.is_available()
    if requested == "auto":
        if not cuda:
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "fp16" and not cuda:
        warnings.warn("fp16 needs a GPU; running fp32 on the CPU", stacklevel=2)
        return "no"
    return requested


@contextlib.contextmanager
def accelerator_scope(mixed_precision: str):
    """An ``Accelerator`` whose process-global state is reset on exit, so the next trial in the
    same (reused Ray) worker can choose another precision."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    acc = Accelerator(mixed_precision=resolve_precision(mixed_precision))
    try:
        yield acc
    finally:
        _release(acc)
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


def _release(acc) -> None:
    """``acc.free_memory()``, minus its full ``gc.collect()`` on the CPU.

    On an accelerator the collection lets ``empty_cache`` hand freed device memory back. On the CPU
    there is no device cache, and a full collection in a process that has imported torch,
    transformers and Ray costs ~0.5-1 s, paid by every trial (bench/trial_overhead.py).
    """
    if acc.device.type != "cpu":
        acc.free_memory()
        return
    acc._schedulers, acc._optimizers, acc._models, acc._dataloaders = [], [], [], []
    acc.step = 0


def finetune(model, data: Encoded, pad_id: int, spec: TrainSpec, accelerator, seed: int,
             epochs: float | None = None, progress: bool = False) -> dict:
    """Train ``model`` in place (AdamW, linear warmup then linear decay). Returns train stats.

    Active head gates (``trials.masked``) stay in force: recovery fine-tuning trains with the mask.
    """
    from transformers import get_linear_schedule_with_warmup
    epochs = spec.epochs if epochs is None else epochs
    loader = train_loader(data, pad_id, spec.batch_size, seed, spec.group_by_length)
    steps = max(1, math.ceil(epochs * len(loader)))
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "ln_")
    params = [
        {"params": [p for n, p in model.named_parameters() if not any(s in n for s in no_decay)],
         "weight_decay": spec.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(s in n for s in no_decay)],
         "weight_decay": 0.0},
    ]
    optimizer = _adamw(params, spec.lr, accelerator.device)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(spec.warmup_ratio * steps), steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    model.train()
    running = torch.zeros((), device=accelerator.device)  # summed on device: no host sync per step
    n_examples, step, t0 = 0, 0, time.perf_counter()
    bar = _progress(steps, "fine-tune", enabled=progress and accelerator.is_local_main_process)
    while step < steps:
        for batch in loader:
            batch.pop("example_id")
            out = model(**batch)
            accelerator.backward(out.loss)
            if spec.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), spec.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            running += out.loss.detach()
            n_examples += batch["labels"].shape[0]
            step += 1
            bar.update(1)
            if step >= steps:
                break
    bar.close()
    train_loss = float(running) / steps  # the one host sync: queued GPU work ends before the clock stops
    seconds = time.perf_counter() - t0
    model.eval()
    return {"train_loss": train_loss, "train_steps": steps, "train_examples": n_examples,
            "train_seconds": seconds, "train_examples_per_s": n_examples / max(seconds, 1e-9)}


def _adamw(params, lr: float, device) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel over all parameters) on the CPU and CUDA, where torch has it;
    torch's default implementation elsewhere. The same update rule either way.

    The default on the CPU is a Python loop over the parameters (~10 small ops each per step);
    fused is ~4x faster there (bench/finetune_throughput.py) and is what ``Trainer`` uses.
    """
    if torch.device(device).type in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(params, lr=lr, fused=True)
        except (RuntimeError, ValueError, TypeError):  # an older torch, or a dtype fused lacks
            pass
    return torch.optim.AdamW(params, lr=lr)


@torch.no_grad()
def evaluate(model, data: Encoded, pad_id: int, accelerator, batch_size: int = 128) -> tuple[dict, pd.DataFrame]:
    """Every applicable metric (trials.metrics.compute), mean loss, and per-example predictions
    (in example_id order). Regression (one output): ``pred`` is the predicted value and
    ``correct`` / ``prob`` are missing."""
    loader = accelerator.prepare(eval_loader(data, pad_id, batch_size))
    # Not prepare(model): that would patch the model's forward in place (autocast), and stage B
    # reuses one loaded checkpoint across trials. Move it and autocast here instead.
    model.to(accelerator.device).eval()
    t0 = time.perf_counter()
    logits_all, labels_all, ids_all = [], [], []
    for batch in loader:
        with accelerator.autocast():
            logits = model(**model_inputs(batch)).logits.float()         # [batch, labels]
        logits, labels, ids = accelerator.gather_for_metrics((logits, batch["labels"], batch["example_id"]))
        logits_all.append(logits.cpu()), labels_all.append(labels.cpu()), ids_all.append(ids.cpu())
    metrics, preds = summarize(torch.cat(logits_all), torch.cat(labels_all), torch.cat(ids_all))
    return {**metrics, "eval_seconds": time.perf_counter() - t0}, preds


def summarize(logits: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor) -> tuple[dict, pd.DataFrame]:
    """Metrics (every applicable one, mean loss, n_eval) and per-example predictions (in
    example_id order) of one evaluation's logits [examples, out] on the CPU. Regression (one
    output): ``pred`` is the predicted value and ``correct`` / ``prob`` are missing."""
    n_out = logits.shape[-1]
    if n_out == 1:                                   # regression
        pred = logits[:, 0]
        correct = pd.array([pd.NA] * len(pred), dtype="boolean")
        prob = np.full(len(pred), np.nan)
    else:
        probs = logits.softmax(-1)
        pred = probs.argmax(-1)
        correct = (pred == labels).numpy()
        prob = probs.gather(1, pred[:, None])[:, 0].numpy()
    preds = pd.DataFrame({
        "example_id": ids.numpy(), "label": labels.numpy(), "pred": pred.numpy(),
        "correct": correct, "prob": prob,
    }).sort_values("example_id", kind="stable").reset_index(drop=True)
    metrics = {
        **compute(preds["label"].to_numpy(), preds["pred"].to_numpy(), n_out),
        "loss": float(task_loss(logits, labels)),
        "n_eval": int(len(preds)),
    }
    return metrics, preds


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)
