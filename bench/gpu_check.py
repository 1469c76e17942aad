"""GPU check (run by bench/gpu_check.sh on a machine with a CUDA GPU; not part of the CPU suite).

1. Fine-tune throughput of headsweep's loop (``trials.train.finetune`` in ``accelerator_scope``)
   in bf16 and fp16 for random-init GPT-2-small- (124M) and DistilBERT-sized (66M) classifiers
   (no hub) on synthetic data at sequence length 128: examples/s, tokens/s and model-FLOPs
   utilisation, MFU = 6 * params * tokens/s / peak dense bf16/fp16 FLOP/s of the GPU (from a small
   table by GPU name; null for GPUs not in it). Timed between ``torch.cuda.synchronize()`` calls,
   after a warm-up run.
2. Four stage-B trials sharing the GPU (``resources.prune.gpu: 0.25``) through the orchestrator
   (``orchestrator.plan.plan_file`` + ``driver.run_sweep``) after a tiny stage A: rows, precision, and how far
   the four trials overlapped in time.
3. Leave-one-out importance (bench/ablation.py) on the GPU at DistilBERT-base width, 6 x 12 heads:
   the batched form against the one-head loop, paired and interleaved, and their max difference.
   On a CPU it is compute-bound (2.34x at most, BENCHMARKS.md); on a GPU the loop's 73 small
   passes per batch are launch-bound, which the batched passes amortise.

Prints one JSON line. Exits 2 with a clear message when no CUDA device is present
(``--cpu-smoke`` runs the same code paths with tiny models on the CPU, to check the script
itself; its numbers mean nothing).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

from _common import emit, log, machine, now_utc, quiet

from headsweep.trials import layout

# Peak dense (no sparsity) tensor-core FLOP/s for bf16 / fp16, per GPU. First match wins, so the
# more specific names come first. None: the GPU has no such tensor-core format.
PEAK_FLOPS = [
    ("H200 NVL", {"bf16": 835e12, "fp16": 835e12}),
    ("H200", {"bf16": 989e12, "fp16": 989e12}),
    ("H100 PCIe", {"bf16": 756e12, "fp16": 756e12}),
    ("H100 NVL", {"bf16": 835e12, "fp16": 835e12}),
    ("H100", {"bf16": 989e12, "fp16": 989e12}),            # SXM
    ("A100", {"bf16": 312e12, "fp16": 312e12}),
    ("A10G", {"bf16": 125e12, "fp16": 125e12}),            # approx.: NVIDIA publishes the A10's 125 TF
    ("L4", {"bf16": 121e12, "fp16": 121e12}),
    ("T4", {"bf16": None, "fp16": 65e12}),
]


def peak_for(name: str) -> dict | None:
    for key, peaks in PEAK_FLOPS:
        if key.lower() in name.lower():
            return {"match": key, **peaks}
    return None


def synthetic_encoded(n: int, seq: int, vocab_lo: int, vocab_hi: int, seed: int):
    """A ``trials.data.Encoded`` of random full-length sequences (no tokenizer needed)."""
    import numpy as np

    from headsweep.trials.data import Encoded
    rng = np.random.default_rng(seed)
    d = Encoded.__new__(Encoded)
    d.input_ids = rng.integers(vocab_lo, vocab_hi, size=(n, seq)).tolist()
    d.token_type_ids = None
    d.labels = rng.integers(0, 2, size=n)
    d.example_ids = np.arange(n)
    d.lengths = np.full(n, seq, dtype=np.int64)
    return d


def model_configs(smoke: bool) -> dict:
    from transformers import DistilBertConfig, GPT2Config
    if smoke:
        return {
            "gpt2-small": (GPT2Config(vocab_size=1000, n_positions=256, n_embd=64, n_layer=2, n_head=4,
                                      pad_token_id=999, num_labels=2), 999, (0, 999)),
            "distilbert-base": (DistilBertConfig(vocab_size=1000, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                                                 pad_token_id=0, num_labels=2), 0, (1, 1000)),
        }
    return {  # the real sizes: GPT-2 small (124M) and DistilBERT base (66M), random init
        "gpt2-small": (GPT2Config(pad_token_id=50256, num_labels=2), 50256, (0, 50256)),
        "distilbert-base": (DistilBertConfig(pad_token_id=0, num_labels=2), 0, (1000, 30522)),
    }


def finetune_throughput(name, cfg, pad, vocab, precision, args, device_name) -> dict:
    import torch
    from accelerate.utils import set_seed
    from transformers import AutoModelForSequenceClassification

    from headsweep.trials.spec import TrainSpec
    from headsweep.trials.train import accelerator_scope, finetune
    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    set_seed(0)
    model = AutoModelForSequenceClassification.from_config(cfg)
    params = sum(p.numel() for p in model.parameters())
    b, seq = args.batch_size, args.seq
    warm = synthetic_encoded(args.warmup_steps * b, seq, *vocab, seed=1)
    data = synthetic_encoded(args.steps * b, seq, *vocab, seed=2)
    spec = TrainSpec(epochs=1, lr=5e-5, batch_size=b, mixed_precision=precision, warmup_ratio=0.1)
    with accelerator_scope(precision) as acc:                       # warm-up: kernels, allocator
        finetune(model, warm, pad, spec, acc, 0)
        model = acc.unwrap_model(model, keep_fp32_wrapper=False)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with accelerator_scope(precision) as acc:
        resolved = acc.mixed_precision
        sync()
        t0 = time.perf_counter()
        stats = finetune(model, data, pad, spec, acc, 0)
        sync()
        seconds = time.perf_counter() - t0
    examples = stats["train_examples"]
    tokens_per_s = examples * seq / seconds
    peak = peak_for(device_name) if cuda else None
    peak_flops = peak.get(precision) if peak else None
    out = {
        "model": name, "precision": precision, "resolved_precision": resolved, "params": params,
        "batch_size": b, "seq": seq, "steps": stats["train_steps"], "seconds": round(seconds, 3),
        "examples_per_s": round(examples / seconds, 2), "tokens_per_s": round(tokens_per_s, 1),
        "model_tflops_per_s": round(6 * params * tokens_per_s / 1e12, 2),
        "mfu": round(6 * params * tokens_per_s / peak_flops, 4) if peak_flops else None,
        "train_loss": round(stats["train_loss"], 4),
        "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    }
    del model
    if cuda:
        torch.cuda.empty_cache()
    return out


def shared_gpu_trials(args, smoke: bool) -> dict:
    """Tiny stage A, then four stage-B trials with ``gpu: 0.25`` each, through the orchestrator."""
    import pandas as pd

    from headsweep.orchestrator.driver import run_sweep
    from headsweep.orchestrator.plan import plan_file
    tmp = Path(tempfile.mkdtemp(prefix="hs-gpucheck-"))
    os.environ["HEADSWEEP_CACHE"] = str(tmp / "cache")
    gpus = 0 if smoke else 1
    raw = {
        "name": "gpu-check",
        "models": [{"name": "preset:tiny-gpt2", "label": "tiny-gpt2"}],
        "data": {"source": "synthetic", "synthetic_size": 600, "max_length": 48},
        "importance": {"examples": 100},
        "finetune": {"epochs": 1, "lr": 1.0e-3, "batch_size": 32, "mixed_precision": "auto"},
        "strategies": ["top", "bottom"], "k": [0.25, 0.5], "seeds": [0],
        "resources": {"finetune": {"cpu": 1, "gpu": gpus},
                      "prune": {"cpu": 0.5, "gpu": 0} if smoke else {"cpu": 1, "gpu": 0.25}},
        "max_failures": 0, "storage": str(tmp / "sweeps"),
    }
    try:
        pl = plan_file(raw, storage=str(tmp / "sweeps"))
        msgs = io.StringIO()
        t0 = time.perf_counter()
        with redirect_stdout(sys.stderr):
            counts = run_sweep(pl, address=None, cpus=max(4, os.cpu_count() or 4) if not smoke else 2,
                                 gpus=gpus, out=msgs)
        wall = time.perf_counter() - t0
        root = Path(pl.store.root)
        df = pd.read_parquet(root / layout.RESULTS)
        b = df[df["stage"] == "B"]
        spans = []
        for key in b["trial_key"]:
            started = json.loads((root / layout.status_file(key)).read_text())["started"]
            spans.append((started, (root / layout.result_file(key)).stat().st_mtime))
        busy = sum(e - s for s, e in spans)
        window = max(e for _, e in spans) - min(s for s, _ in spans) if spans else 0.0
        return {
            "stage_b_trials": int(len(b)), "stage_a_trials": int((df["stage"] == "A").sum()),
            "errored": counts.get("errored"), "gpu_per_trial": 0 if smoke else 0.25,
            "mixed_precision": sorted(set(df["mixed_precision"].astype(str))),
            "stage_b_window_s": round(window, 2), "stage_b_busy_s": round(busy, 2),
            "overlap": round(busy / window, 2) if window else None,   # ~4 when all four ran at once
            "starts_spread_s": round(max(s for s, _ in spans) - min(s for s, _ in spans), 2) if spans else None,
            "accuracy": [round(float(x), 4) for x in b["accuracy"]],
            "wall_s": round(wall, 1),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ablation_ratio(smoke: bool) -> dict:
    """bench/ablation.py's measurement on the GPU: DistilBERT-base width, SST-2-like lengths."""
    import ablation
    flags = (["--dim", "96", "--seq", "16", "--batch", "8", "--batches", "1", "--repeats", "1"] if smoke else
             ["--dim", "768", "--seq", "64", "--batch", "32", "--batches", "4", "--repeats", "3"])
    args = ablation.parser().parse_args([*flags, "--device", "cpu" if smoke else "cuda"])
    r = ablation.measure(args)
    return {k: r[k] for k in ("ratio", "max_abs_diff", "flop_ceiling", "counted_flop_ratio", "loop_median_s",
                              "batched_median_s")} | {
        "flags": " ".join(flags)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-smoke", action="store_true",
                   help="run the code paths with tiny models on the CPU (checks the script, not the GPU)")
    p.add_argument("--steps", type=int, default=None, help="timed optimizer steps per run (default 60)")
    p.add_argument("--warmup-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--skip-shared", action="store_true", help="skip the four shared-GPU stage-B trials")
    p.add_argument("--skip-ablation", action="store_true", help="skip the leave-one-out importance ratio")
    args = p.parse_args(argv)
    quiet()
    import torch
    t_start = time.perf_counter()
    smoke = args.cpu_smoke
    if not torch.cuda.is_available() and not smoke:
        msg = (f"gpu_check: no CUDA device (torch {torch.__version__}, built for CUDA "
               f"{torch.version.cuda or 'none'}; torch.cuda.is_available() is False). Run bench/gpu_check.sh "
               "on a machine with an NVIDIA GPU and a CUDA build of torch.")
        print(msg, file=sys.stderr)
        emit({"benchmark": "gpu_check", "error": "no CUDA device", "message": msg, "date": now_utc()})
        return 2
    args.steps = args.steps or (3 if smoke else 60)
    args.warmup_steps = args.warmup_steps or (2 if smoke else 10)
    if smoke:
        args.seq = min(args.seq, 32)
        args.batch_size = min(args.batch_size, 8)
    device_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (smoke)"
    peak = peak_for(device_name) if torch.cuda.is_available() else None
    bf16_ok = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else True
    runs = []
    for name, (cfg, pad, vocab) in model_configs(smoke).items():
        for precision in ("bf16", "fp16"):
            if precision == "bf16" and not bf16_ok:
                runs.append({"model": name, "precision": precision, "skipped": "bf16 not supported by this GPU"})
                continue
            r = finetune_throughput(name, cfg, pad, vocab, precision, args, device_name)
            log(r)
            runs.append(r)
    shared = None if args.skip_shared else shared_gpu_trials(args, smoke)
    if shared:
        log(shared)
    ablation = None if args.skip_ablation else ablation_ratio(smoke)
    if ablation:
        log(ablation)
    emit({
        "benchmark": "gpu_check", "gpu": device_name, "smoke": smoke,
        "peak_flops": peak, "finetune": runs, "shared_gpu_trials": shared,
        "ablation": ablation,
        "mfu_formula": "6 * params (all, embeddings included) * tokens/s / peak dense bf16|fp16 FLOP/s",
        "seconds": round(time.perf_counter() - t_start, 1),
        "cuda": torch.version.cuda, "machine": machine(), "date": now_utc(),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
