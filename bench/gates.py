"""Head gates on a realistic-width model: what masking, pruning and multi-mask passes cost.

A random-init DistilBERT-base-sized classifier (hidden 768, 12 heads, 6 layers; ``--layers 12``
for BERT-base depth), sequence length 128, batch 8, eval mode, no_grad, fixed threads:

- ``masked_over_plain``: forward with 50 % of the heads gated off (6 of 12 in every layer, so
  every layer carries a hook: the worst case) over the plain forward.          target <= 1.02
- ``pruned_over_masked``: the same heads physically removed (``trials.prune_heads``) over the
  masked forward.                                                               target <= 0.85
- ``multimask_over_sequential``: M masks in ONE pass (``trials.multi_masked`` on
  ``trials.repeat_batch(batch, M)``) over M passes, one per mask (``trials.masked``).

Timings are interleaved (A B, B A, ...); each headline is the median over rounds of the ratio of
the two adjacent calls, with a bootstrap 95 % interval. Outputs are checked equal (the pruned and
multi-mask logits against the masked ones). Because a shared machine's noise (+-10-15 % between
consecutive forwards here) is far above a 2 % effect, two finer measurements come with it: the
same ratios on one encoder layer (5x more pairs) and ``masked_over_plain_from_hook_cost`` =
1 + layers x (the gate hook's own time, best of 1000 calls) / (best plain forward).

Threads: 1 intra-op thread by default (``--threads``). On a shared 2-core machine two OpenMP
threads lose whole time slices whenever another process runs (every parallel region waits for
the descheduled thread), which makes 2-thread timings swing by 2-10x.

    python bench/gates.py --quick
"""
from __future__ import annotations

import argparse
import copy
import sys
import time

from _common import Clock, emit, log, machine, median, now_utc, quiet


def build_model(layers: int, seed: int = 0):
    import torch
    from transformers import AutoModelForSequenceClassification, DistilBertConfig
    torch.manual_seed(seed)
    cfg = DistilBertConfig(vocab_size=30522, dim=768, n_layers=layers, n_heads=12, hidden_dim=3072,
                           max_position_embeddings=512, num_labels=2)
    return AutoModelForSequenceClassification.from_config(cfg).eval()


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> tuple[dict, dict]:
    """Wall and process-CPU seconds per call for each fn, run interleaved; the order is reversed
    every round (A B, B A, ...) so drifts in machine load hit both sides alike."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    wall, cpu = {n: [] for n in names}, {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            c0, t0 = time.process_time(), time.perf_counter()
            fns[n]()
            wall[n].append(time.perf_counter() - t0)
            cpu[n].append(time.process_time() - c0)
    return wall, cpu


def summarize(timed: tuple[dict, dict], num: str, den: str) -> dict:
    wall, cpu = timed
    a, b = wall[num], wall[den]
    paired = [x / y for x, y in zip(a, b)]
    return {"ratio": median(paired), "ci95": bootstrap_ci(paired), "ratio_of_medians": median(a) / median(b), "ratio_of_mins": min(a) / min(b),
            "median_paired_ratio": median(paired),
            "cpu_time_ratio_of_medians": median(cpu[num]) / median(cpu[den]),
            f"{num}_median_s": median(a), f"{den}_median_s": median(b),
            f"{num}_s": [round(x, 4) for x in a], f"{den}_s": [round(x, 4) for x in b],
            f"{num}_cpu_s": [round(x, 4) for x in cpu[num]], f"{den}_cpu_s": [round(x, 4) for x in cpu[den]]}


def bootstrap_ci(paired: list[float], n: int = 2000, seed: int = 0) -> list[float]:
    """95 % percentile-bootstrap interval of the median of the paired ratios."""
    import random
    rng = random.Random(seed)
    meds = sorted(median([rng.choice(paired) for _ in paired]) for _ in range(n))
    return [round(meds[int(0.025 * n)], 4), round(meds[int(0.975 * n) - 1], 4)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats (about a minute or two)")
    p.add_argument("--layers", type=int, default=6, help="6 (DistilBERT-base) or 12 (BERT-base depth)")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--masks", type=int, default=4, help="M, masks evaluated in one pass")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: see BENCHMARKS.md, 'threads')")
    p.add_argument("--repeats", type=int, default=None)
    args = p.parse_args(argv)
    quiet()

    import torch

    from headsweep import trials
    threads = args.threads
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    repeats = args.repeats or (6 if args.quick else 24)
    t_start = time.perf_counter()

    model = build_model(args.layers)
    layout = trials.head_layout(model)
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 30000, (args.batch, args.seq), generator=g),
             "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long)}
    # 50 % of the heads: 6 random heads of 12 in every layer (every layer hooked / pruned)
    half = [(layer, int(h)) for layer in range(layout.n_layers)
            for h in torch.randperm(layout.n_heads, generator=g)[: layout.n_heads // 2]]
    pruned = trials.prune_heads(copy.deepcopy(model), half).eval()
    params = {"plain": trials.count_parameters(model), "pruned": trials.count_parameters(pruned)}

    def plain():
        return model(**batch).logits

    def masked():
        with trials.masked(model, half):
            return model(**batch).logits

    def physically_pruned():
        return pruned(**batch).logits

    with torch.inference_mode():
        ref = masked()
        max_diff_pruned = float((physically_pruned() - ref).abs().max())
        log(f"threads={threads} layers={args.layers} seq={args.seq} batch={args.batch} repeats={repeats}")
        with Clock() as c1:
            t1 = interleaved({"masked": masked, "plain": plain}, repeats + repeats // 2)
        log("masked/plain", summarize(t1, "masked", "plain")["ratio"], f"({c1.s:.0f}s)")
        with Clock() as c2:
            t2 = interleaved({"pruned": physically_pruned, "masked": masked}, repeats)
        log("pruned/masked", summarize(t2, "pruned", "masked")["ratio"], f"({c2.s:.0f}s)")

        # M different masks (random 25 %..75 % of the heads each), one pass vs one pass per mask
        masks = []
        for m in range(args.masks):
            n = int(layout.total * (0.25 + 0.5 * m / max(1, args.masks - 1)))
            flat = torch.randperm(layout.total, generator=g)[:n]
            masks.append([divmod(int(i), layout.n_heads) for i in flat])
        big = trials.repeat_batch(batch, len(masks))

        def one_pass():
            with trials.multi_masked(model, masks, args.batch):
                return model(**big).logits

        def sequential():
            out = []
            for hs in masks:
                with trials.masked(model, hs):
                    out.append(model(**batch).logits)
            return torch.cat(out)

        max_diff_multi = float((one_pass() - sequential()).abs().max())
        with Clock() as c3:
            t3 = interleaved({"multimask": one_pass, "sequential": sequential},
                             max(3, repeats // 4))
        log("multimask/sequential", summarize(t3, "multimask", "sequential")["ratio"], f"({c3.s:.0f}s)")

        # The same comparisons on ONE encoder layer (what differs between the models is all inside
        # the layers): ~1/6 of a forward per call, so many more interleaved pairs in the same time.
        x = model.distilbert.embeddings(batch["input_ids"])                  # [batch, seq, hidden]
        plain_layer, pruned_layer = model.distilbert.transformer.layer[0], pruned.distilbert.transformer.layer[0]
        half0 = [(0, h) for layer, h in half if layer == 0]

        def layer_plain():
            return plain_layer(x)

        def layer_masked():
            with trials.masked(model, half0):
                return plain_layer(x)

        def layer_pruned():
            return pruned_layer(x)

        layer_repeats = 5 * repeats
        with Clock() as c4:
            t4 = interleaved({"masked": layer_masked, "plain": layer_plain}, layer_repeats)
            t5 = interleaved({"pruned": layer_pruned, "masked": layer_masked}, layer_repeats)
        log("one layer: masked/plain", summarize(t4, "masked", "plain")["ratio"],
            "pruned/masked", summarize(t5, "pruned", "masked")["ratio"], f"({c4.s:.0f}s)")

        # The hook's own cost, timed alone (thousands of calls, so noise averages out), against
        # the plain forward: what the masked forward adds, with no machine noise in the ratio.
        from headsweep.trials.gates import _make_pre_hook, mask_tensor
        hook = _make_pre_hook(mask_tensor(layout, half), 0, layout.head_dim, None)
        proj_in = torch.randn(args.batch, args.seq, layout.n_heads * layout.head_dim)
        hook_t = []
        for _ in range(20):
            t0 = time.perf_counter()
            for _ in range(50):
                hook(None, (proj_in,))
            hook_t.append((time.perf_counter() - t0) / 50)
        hook_s = min(hook_t)
        hook_estimate = 1 + layout.n_layers * hook_s / min(t1[0]["plain"])

    s1, s2, s3 = summarize(t1, "masked", "plain"), summarize(t2, "pruned", "masked"), \
        summarize(t3, "multimask", "sequential")
    s4, s5 = summarize(t4, "masked", "plain"), summarize(t5, "pruned", "masked")
    result = {
        "benchmark": "gates",
        "masked_over_plain": round(s1["ratio"], 4),
        "pruned_over_masked": round(s2["ratio"], 4),
        "multimask_over_sequential": round(s3["ratio"], 4),
        "masked_over_plain_from_hook_cost": round(hook_estimate, 5),
        "hook_cost": {"seconds_per_call": hook_s, "hooked_layers": layout.n_layers,
                      "plain_forward_min_s": min(t1[0]["plain"]),
                      "note": "1 + layers * (one pre-hook call, best of 20x50) / best plain forward"},
        "ci95": {"masked_over_plain": s1["ci95"], "pruned_over_masked": s2["ci95"],
                 "multimask_over_sequential": s3["ci95"]},
        "one_layer": {"masked_over_plain": round(s4["ratio"], 4), "masked_over_plain_ci95": s4["ci95"],
                      "pruned_over_masked": round(s5["ratio"], 4), "pruned_over_masked_ci95": s5["ci95"],
                      "repeats": layer_repeats,
                      "note": "encoder layer 0 alone (6 of 12 heads masked / pruned), same input"},
        "targets": {"masked_over_plain": "<= 1.02", "pruned_over_masked": "<= 0.85"},
        "met": {"masked_over_plain": s1["ratio"] <= 1.02, "pruned_over_masked": s2["ratio"] <= 0.85},
        "model": {"config": "random-init DistilBERT", "hidden": 768, "heads": 12, "layers": args.layers,
                  "params": params["plain"], "params_pruned": params["pruned"],
                  "heads_removed": len(half)},
        "seq": args.seq, "batch": args.batch, "masks": len(masks), "repeats": repeats,
        "threads": threads, "interop_threads": torch.get_num_interop_threads(),
        "max_abs_diff": {"pruned_vs_masked": max_diff_pruned, "multimask_vs_sequential": max_diff_multi},
        "detail": {"masked_over_plain": s1, "pruned_over_masked": s2, "multimask_over_sequential": s3,
                   "one_layer_masked_over_plain": s4, "one_layer_pruned_over_masked": s5},
        "method": "interleaved repeats (A B, B A, ...); ratio = median over rounds of the ratio of the "
                  "two adjacent calls (robust to load drifts); ratio_of_medians, ratio_of_mins and the "
                  "process-CPU-time ratio in detail",
        "quick": args.quick, "seconds": round(time.perf_counter() - t_start, 1),
        "machine": machine(), "date": now_utc(),
    }
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
