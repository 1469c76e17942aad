"""Leave-one-out (ablation) importance: the batched form against a one-head-at-a-time loop.

A random-init DistilBERT-shaped classifier, 6 layers x 12 heads (``--dim`` sets the width:
head_dim = dim / 12), ``--batches`` batches of ``--batch`` examples of ``--seq`` tokens (SST-2's
sentences are ~25 tokens), eval mode, fixed threads:

- ``ratio``: seconds of the loop (72 passes over the batches, ``trials.masked`` one head at a
  time, minus one unmasked pass) over seconds of ``trials.ablation.ablation_importance`` (each
  batch once unmasked, then each layer's 12 masks in passes that replay the layers below, run the
  masked layer's attention once and fan out at its output projection, and compute the last
  layer's attention output and feed-forward at the pooled row only).
                                                                                 target >= 3
The two results are checked equal (max abs difference, target <= 1e-5). Timings are interleaved
(loop, batched, batched, loop, ...); the headline is the median of the paired ratios.

Where the ratio comes from, in layer-batches of floating-point work (a layer's q/k/v projections
are 3/12 of it, the output projection and feed-forward 9/12 at DistilBERT's 4x feed-forward
width; ``trials.ablation.flop_ceiling`` counts it, and the bench checks the count with
torch's FlopCounterMode): the loop runs 73 x 6 = 438 (72 masked passes and the unmasked
one). The batched form runs, per batch, one unmasked pass (5.25: the last layer only needs keys
and values over every token) and, for each mask of layer l < 5, the rest of layer l (0.75), the
layers l+1..4 in full and 0.25 of the last: 12 x (5 + 4 + 3 + 2 + 1) = 180; a mask of the last
layer costs only its pooled row (0.75 / seq). That is 187 in all at seq 32, a ceiling of 2.34x
(2.15x before the masked layer's attention was shared, 1.7x with the replay alone): the work an
exact leave-one-out cannot skip, since a mask in layer l changes every layer above it at every
token. What the ratio gains above it is per-pass overhead (Python, kernel launches, small matrix
products), which large batches amortise on a GPU; what it loses below it is mostly memory
traffic of the larger passes (GELU, copies), hence ``TOKENS_PER_PASS``. ``--dim 768``
(DistilBERT-base width) is compute-bound on a CPU.

    python bench/ablation.py --quick
"""
from __future__ import annotations

import argparse
import time

from _common import finish, log, median, quiet


def build(dim: int, layers: int, heads: int, seed: int = 0):
    import torch
    from transformers import AutoModelForSequenceClassification, DistilBertConfig
    torch.manual_seed(seed)
    cfg = DistilBertConfig(vocab_size=5000, dim=dim, n_layers=layers, n_heads=heads, hidden_dim=4 * dim,
                           max_position_embeddings=512, num_labels=2)
    model = AutoModelForSequenceClassification.from_config(cfg).eval()
    with torch.no_grad():  # larger weights than the init, so every head changes the loss
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.08)
    return model


def counted_flops(fn, model, batches) -> int:
    """Floating-point operations of ``fn(model, batches)`` as torch's FlopCounterMode counts them
    (matrix products; the CPU's fused attention kernel is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn(model, batches)
    return counter.get_total_flops()


def loop_ablation(model, batches):
    """The reference: mask one head at a time, mean loss over every batch, minus the unmasked."""
    import torch

    from headsweep import trials
    from headsweep.trials.metrics import task_loss
    layout = trials.head_layout(model)

    def mean_loss():
        total, n = 0.0, 0
        for b in batches:
            inputs = {k: v for k, v in b.items() if k != "labels"}
            total += float(task_loss(model(**inputs).logits, b["labels"], reduction="sum"))
            n += b["labels"].shape[0]
        return total / n

    out = torch.zeros(layout.n_layers, layout.n_heads, dtype=torch.float64)
    with torch.no_grad():
        base = mean_loss()
        for layer in range(layout.n_layers):
            for head in range(layout.n_heads):
                with trials.masked(model, [(layer, head)]):
                    out[layer, head] = mean_loss() - base
    return out.float()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--dim", type=int, default=192, help="hidden width (head_dim = dim / heads)")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (bench/gates.py says why 1)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--tokens-per-pass", type=int, default=None,
                   help="rows x tokens per batched pass (default: trials.ablation.TOKENS_PER_PASS)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (bench/gpu_check.py runs it there)")
    return p


def measure(args) -> dict:
    """The paired loop / batched timings of ``args`` (see ``parser``), as the result dict."""
    import torch

    from functools import partial

    from headsweep.trials.ablation import TOKENS_PER_PASS, flop_ceiling
    from headsweep.trials.ablation import ablation_importance as batched
    ablation_importance = partial(batched, tokens_per_pass=args.tokens_per_pass or TOKENS_PER_PASS)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 8)
    device = torch.device(args.device)
    model = build(args.dim, args.layers, args.heads).to(device)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.batches):
        lengths = torch.randint(args.seq // 2, args.seq + 1, (args.batch,), generator=g)
        mask = (torch.arange(args.seq)[None, :] < lengths[:, None]).long()       # [batch, seq], right-padded
        ids = torch.randint(10, 5000, (args.batch, args.seq), generator=g) * mask
        batches.append({k: v.to(device) for k, v in {"input_ids": ids, "attention_mask": mask,
                        "labels": torch.randint(0, 2, (args.batch,), generator=g)}.items()})

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(model, batches)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    ref, got = loop_ablation(model, batches), ablation_importance(model, batches)   # also the warm-up
    max_diff = float((ref - got).abs().max())
    log(f"dim={args.dim} layers={args.layers} heads={args.heads} seq={args.seq} batch={args.batch}x"
        f"{args.batches} device={args.device} threads={args.threads} repeats={repeats}; "
        f"max |diff| = {max_diff:.2e}")
    loop_s, batched_s = [], []
    for r in range(repeats):
        order = ("loop", "batched") if r % 2 == 0 else ("batched", "loop")
        for name in order:
            (loop_s if name == "loop" else batched_s).append(
                timed(loop_ablation if name == "loop" else ablation_importance))
        log(f"round {r}: loop {loop_s[-1]:.2f}s batched {batched_s[-1]:.2f}s")
    paired = [a / b for a, b in zip(loop_s, batched_s)]
    ceiling = flop_ceiling(args.layers, args.heads, args.dim, model.config.hidden_dim, args.seq)
    one = batches[:1]                                 # the ratio is per batch
    counted = counted_flops(loop_ablation, model, one) / counted_flops(ablation_importance, model, one)
    return {"bench": "ablation", "ratio": median(paired), "target": 3.0, "max_abs_diff": max_diff,
            "flop_ceiling": round(ceiling, 3),
            "counted_flop_ratio": round(counted, 3), "share_of_ceiling": round(median(paired) / ceiling, 3),
            "loop_median_s": median(loop_s), "batched_median_s": median(batched_s),
            "loop_s": [round(x, 3) for x in loop_s], "batched_s": [round(x, 3) for x in batched_s],
            "config": vars(args)}


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    quiet()
    import torch
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        log(f"bench/ablation: --device {args.device}: no CUDA device here")
        return 2
    torch.set_num_interop_threads(1)
    t_start = time.perf_counter()
    finish(measure(args), args.quick, t_start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
