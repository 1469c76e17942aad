"""headsweep's fine-tune loop vs transformers' ``Trainer``: examples/s at equal accuracy.

Both train the same random-init DistilBERT-style classifier (same initial weights: one
``state_dict`` copied into each run) on the same data (the real SST-2 train subset from
../shared/data/sst2 tokenised with the real DistilBERT vocabulary from ../shared/data/tokenizers
when present, else the synthetic set with a preset word tokenizer), with the same batch size,
epochs, AdamW lr / weight decay / max_grad_norm, linear warmup (10 %) + decay, fp32 on the CPU.

- headsweep: ``trials.train.finetune`` inside ``trials.train.accelerator_scope("no")``
  (dynamic padding, length-grouped batches, loss summed on device).
- Trainer: its common defaults: ``DataCollatorWithPadding``, no ``group_by_length``,
  ``report_to="none"``, no saving, no logging, no evaluation, dataloader workers 0,
  ``use_cpu=True``, default optimizer.

Runs alternate (headsweep, Trainer, Trainer, headsweep, ...); examples/s is the wall time of the
whole ``finetune(...)`` / ``trainer.train()`` call. Both models are then evaluated on the same
validation split with ``trials.train.evaluate``. One torch thread by default (``--threads``; a
trial with ``cpu: 1`` runs so, and on a shared 2-core machine two OpenMP threads stall whenever
another process takes a core).

    python bench/finetune_throughput.py --quick
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
import time
from contextlib import redirect_stdout

from _common import emit, log, machine, median, now_utc, quiet, sst2_dir, tokenizer_dir


def load_data(args):
    """(train_df, eval_df, tokenizer, source) - SST-2 + the real tokenizer when present."""
    from headsweep import trials
    from headsweep.trials.data import read_split
    from headsweep.trials.spec import DataSpec
    sst2, tokdir = sst2_dir(), tokenizer_dir("distilbert-base-uncased")
    if sst2 is not None:
        spec = DataSpec(source=str(sst2))
        train, ev = read_split(spec, "train"), read_split(spec, "eval")
        source = f"sst2 ({sst2})"
    else:
        spec = DataSpec(source="synthetic", synthetic_size=max(args.train_examples, 2000))
        train, ev = read_split(spec, "train"), read_split(spec, "eval")
        source = "synthetic"
    # a fixed random subset of the training split (same for both loops)
    train = train.sample(n=min(args.train_examples, len(train)), random_state=0).reset_index(drop=True)
    if args.eval_examples:
        ev = ev.iloc[: args.eval_examples].reset_index(drop=True)
    if tokdir is not None:
        _, tok = trials.load_model("preset:tiny-distilbert", 2, tokenizer=str(tokdir))
        tok_name = f"distilbert-base-uncased vocab ({tokdir})"
    else:
        _, tok = trials.load_model("preset:tiny-distilbert", 2, texts=train["text"])
        tok_name = "preset word-level tokenizer (built from the train text)"
    return train, ev, tok, source, tok_name


def build_model(tok, args):
    import torch
    from transformers import AutoModelForSequenceClassification, DistilBertConfig
    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=len(tok), dim=args.dim, n_layers=args.layers, n_heads=args.heads,
                           hidden_dim=4 * args.dim, max_position_embeddings=512, num_labels=2,
                           pad_token_id=tok.pad_token_id)
    return AutoModelForSequenceClassification.from_config(cfg)


def run_headsweep(model, train_enc, tok, spec, seed):
    from headsweep.trials.train import accelerator_scope, finetune
    with accelerator_scope("no") as acc:
        t0 = time.perf_counter()
        stats = finetune(model, train_enc, tok.pad_token_id, spec, acc, seed)
        seconds = time.perf_counter() - t0
        model = acc.unwrap_model(model, keep_fp32_wrapper=False)
    return model, {"seconds": seconds, "examples": stats["train_examples"], "steps": stats["train_steps"],
                   "loop_seconds": stats["train_seconds"], "train_loss": stats["train_loss"]}


def run_trainer(model, features, tok, spec, seed, outdir):
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments
    args = TrainingArguments(
        output_dir=outdir, per_device_train_batch_size=spec.batch_size, num_train_epochs=spec.epochs,
        learning_rate=spec.lr, weight_decay=spec.weight_decay, max_grad_norm=spec.max_grad_norm,
        warmup_steps=spec.warmup_ratio, lr_scheduler_type="linear", seed=seed,
        report_to="none", save_strategy="no", eval_strategy="no", logging_strategy="no",
        dataloader_num_workers=0, use_cpu=True, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=features,
                      data_collator=DataCollatorWithPadding(tok))
    t0 = time.perf_counter()
    with redirect_stdout(sys.stderr):                  # Trainer prints its final metrics
        out = trainer.train()
    seconds = time.perf_counter() - t0
    steps = out.global_step
    n = len(features)
    full_epochs, rest = divmod(steps, math.ceil(n / spec.batch_size))
    examples = full_epochs * n + min(rest * spec.batch_size, n)
    return trainer.model, {"seconds": seconds, "examples": examples, "steps": steps,
                           "train_runtime": out.metrics.get("train_runtime"), "train_loss": out.training_loss,
                           "optim": str(args.optim)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller subset, one run each (~2-3 minutes)")
    p.add_argument("--train-examples", type=int, default=None)
    p.add_argument("--eval-examples", type=int, default=0, help="0 = the whole validation split")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--repeats", type=int, default=None, help="runs per side (alternated)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: see BENCHMARKS.md, 'threads')")
    args = p.parse_args(argv)
    args.train_examples = args.train_examples or (2000 if args.quick else 6000)
    args.epochs = args.epochs or (2 if args.quick else 3)
    args.repeats = args.repeats or (1 if args.quick else 2)
    quiet()
    import torch

    from headsweep.trials.data import Encoded
    from headsweep.trials.spec import TrainSpec
    from headsweep.trials.train import accelerator_scope, evaluate
    threads = args.threads
    torch.set_num_threads(threads)
    t_start = time.perf_counter()

    train, ev, tok, source, tok_name = load_data(args)
    train_enc, eval_enc = Encoded(train, tok, args.max_length), Encoded(ev, tok, args.max_length)
    features = [{"input_ids": ids, "attention_mask": [1] * len(ids), "label": int(y)}
                for ids, y in zip(train_enc.input_ids, train_enc.labels)]
    init = copy.deepcopy(build_model(tok, args).state_dict())
    spec = TrainSpec(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, mixed_precision="no",
                     warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0, group_by_length=True)
    log(f"data={source} train={len(train)} eval={len(ev)} mean_len={train_enc.lengths.mean():.1f} "
        f"threads={threads} epochs={args.epochs} repeats={args.repeats}")

    runs = {"headsweep": [], "trainer": []}
    order = []
    for r in range(args.repeats):
        order += ["headsweep", "trainer"] if r % 2 == 0 else ["trainer", "headsweep"]
    with tempfile.TemporaryDirectory(prefix="hs-bench-") as tmp:
        for i, side in enumerate(order):
            model = build_model(tok, args)
            model.load_state_dict(init)
            seed = 0
            if side == "headsweep":
                model, stats = run_headsweep(model, train_enc, tok, spec, seed)
            else:
                model, stats = run_trainer(model, features, tok, spec, seed, os.path.join(tmp, f"t{i}"))
            with accelerator_scope("no") as acc:
                metrics, _ = evaluate(model, eval_enc, tok.pad_token_id, acc, 128)
            stats.update(accuracy=metrics["accuracy"], eval_loss=metrics["loss"],
                         examples_per_s=stats["examples"] / stats["seconds"])
            log(side, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in stats.items()})
            runs[side].append(stats)

    eps = {s: [r["examples_per_s"] for r in runs[s]] for s in runs}
    acc = {s: [r["accuracy"] for r in runs[s]] for s in runs}
    ratio = median(eps["headsweep"]) / median(eps["trainer"])
    paired = [h / t for h, t in zip(eps["headsweep"], eps["trainer"])]
    a_h, a_t = sum(acc["headsweep"]) / len(acc["headsweep"]), sum(acc["trainer"]) / len(acc["trainer"])
    n_eval = len(ev)
    # Noise band for the accuracy difference: two independent binomial proportions on n_eval
    # examples (this ignores the extra seed-to-seed training noise, so it is conservative).
    se_diff = math.sqrt(2 * max(a_h * (1 - a_h), 1e-9) / n_eval)
    result = {
        "benchmark": "finetune_throughput",
        "ratio": round(ratio, 4),
        "accuracy_headsweep": round(a_h, 4),
        "accuracy_trainer": round(a_t, 4),
        "target": {"ratio": ">= 1.3", "accuracy": "equal within noise"},
        "met": {"ratio": ratio >= 1.3, "accuracy_within_noise": abs(a_h - a_t) <= 2 * se_diff},
        "accuracy_diff": round(a_h - a_t, 4), "accuracy_noise_2se": round(2 * se_diff, 4),
        "examples_per_s": {s: [round(x, 2) for x in v] for s, v in eps.items()},
        "paired_ratios": [round(x, 4) for x in paired],
        "runs": runs, "order": order,
        "data": {"source": source, "tokenizer": tok_name, "train_examples": len(train), "eval_examples": n_eval,
                 "max_length": args.max_length, "mean_tokens": float(train_enc.lengths.mean()),
                 "max_tokens": int(train_enc.lengths.max())},
        "model": {"config": "random-init DistilBERT", "dim": args.dim, "layers": args.layers, "heads": args.heads,
                  "params": sum(v.numel() for v in init.values())},
        "train": {"batch_size": args.batch_size, "epochs": args.epochs, "lr": args.lr, "warmup_ratio": 0.1,
                  "weight_decay": 0.01, "max_grad_norm": 1.0, "precision": "fp32", "seed": 0},
        "threads": threads, "quick": args.quick, "seconds": round(time.perf_counter() - t_start, 1),
        "machine": machine(), "date": now_utc(),
    }
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
