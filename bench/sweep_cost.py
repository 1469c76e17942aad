"""One grid run two ways under Ray: headsweep's two-stage sweep vs the naive sweep.

Grid: the tiny GPT-2 preset, 3 seeds, strategies none + single-head + top/bottom/random at 4 K
values (14 trials per seed, 42 in all), SST-2 from ../shared/data/sst2 when present (else the
synthetic set), fine-tunes of ~20 s each (``--finetune-seconds``; the training rows are
calibrated on this machine first). ``--quick``: 2 seeds and ~4-5 s fine-tunes, said so in the JSON.

- two-stage: the real orchestrator, ``orchestrator.plan.plan_file(raw, storage=tmp)`` then
  ``orchestrator.driver.run_sweep(plan, address=None, cpus=2, gpus=0)``: 3 fine-tunes (stage A) and
  39 stage-B trials on their checkpoints, each released as soon as its checkpoint exists.
- naive: what a plain Ray Tune grid (or the seed study) does: ``ray.tune.Tuner`` over the same
  42 trials, ``tune.with_resources`` at the same per-trial resources, ``reuse_actors=True``, where
  every trial fine-tunes its own model (``trials.run.run_finetune``) and then, unless it is the
  ``none`` trial, prunes and evaluates it with ``trials.run.run_prune`` on its own checkpoint.

Each side gets a fresh local Ray (its start-up is inside its wall time). Fine-tunes are counted
from what ran (stage-A rows with ``train_steps`` / each naive trial's ``train_steps``), and the
accuracies of the two sides are compared row by row (the same specs and seeds give the same
fine-tunes on the CPU, so they should agree exactly).

    python bench/sweep_cost.py --quick
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

from _common import finish, log, quiet, sst2_dir

from headsweep.trials import layout

STRATEGIES = ["none", "single-head", "top", "bottom", "random"]
K = [0.125, 0.25, 0.5, 0.75]          # 2, 4, 8, 12 of the preset's 16 heads


def sweep_dict(args, storage: str) -> dict:
    sst2 = sst2_dir()
    if sst2 is not None:
        data = {"source": str(sst2), "max_length": 64, "train_limit": args.train_limit,
                "eval_limit": args.eval_limit}
    else:
        data = {"source": "synthetic", "synthetic_size": max(args.train_limit + 300, 4000), "max_length": 48,
                "train_limit": args.train_limit, "eval_limit": args.eval_limit}
    return {
        "name": "bench-sweep-cost",
        "models": [{"name": "preset:tiny-gpt2", "label": "tiny-gpt2"}],
        "data": data,
        "importance": {"examples": 300, "normalize": "auto"},
        "finetune": {"epochs": args.epochs, "lr": 1.0e-3, "batch_size": 32, "mixed_precision": "auto",
                     "recovery_epochs": 0},
        "strategies": STRATEGIES, "k": K, "per_layer": False,
        "seeds": list(range(args.seeds)), "single_head_arch": False,
        "resources": {"finetune": {"cpu": 1, "gpu": 0}, "prune": {"cpu": 1, "gpu": 0}},
        "max_failures": 0,
        "storage": storage,
    }


def calibrate(args) -> dict:
    """Training rows that make one fine-tune take ~``args.finetune_seconds`` on this machine now:
    time a short warm fine-tune of the same model and data in this process (1 thread, as a
    trial runs), then scale. The trials' own ``train_seconds`` are reported as measured."""
    import torch

    from headsweep import trials
    from headsweep.trials.data import Encoded, load_task
    from headsweep.trials.spec import DataSpec, TrainSpec
    from headsweep.trials.train import accelerator_scope, finetune
    torch.set_num_threads(1)
    raw = sweep_dict(args, "/tmp")
    d = raw["data"]
    spec = DataSpec(source=d["source"], max_length=d["max_length"], train_limit=None,
                    synthetic_size=d.get("synthetic_size", 4000))
    task = load_task(spec, 300)
    pool = len(task.train)
    probe = task.train.iloc[:640]
    per_example = []
    for _ in range(2):                                  # the first run pays the imports
        model, tok = trials.load_model("preset:tiny-gpt2", 2, texts=task.train["text"].iloc[:4000])
        with accelerator_scope("no") as acc:
            st = finetune(model, Encoded(probe, tok, d["max_length"]), tok.pad_token_id,
                          TrainSpec(epochs=1, lr=1e-3, batch_size=32, mixed_precision="no"), acc, 0)
        per_example.append(st["train_seconds"] / st["train_examples"])
    rows = int(args.finetune_seconds / (per_example[-1] * args.epochs))
    return {"train_limit": max(320, min(rows, pool)), "seconds_per_example": per_example[-1],
            "pool": pool, "target_finetune_s": args.finetune_seconds}


def naive_trainable(config: dict, specs: dict) -> None:
    """One naive trial: fine-tune its own model, then (unless ``none``) prune and evaluate it."""
    import torch
    from ray import tune

    from headsweep.trials.run import run_finetune, run_prune
    from headsweep.trials.spec import PruneSpec, from_dict
    job = specs[config["key"]]
    os.chdir(job["cwd"])
    torch.set_num_threads(1)        # as the orchestrator's trainable does for {"cpu": 1}
    spec = from_dict(job["spec"])
    out = Path(job["out"]) / spec.key
    try:
        ft = spec.finetune if isinstance(spec, PruneSpec) else spec
        row_a = run_finetune(ft, out / "a")
        row = run_prune(spec, out / "a" / "checkpoint", out / "b") if isinstance(spec, PruneSpec) else row_a
        tune.report({"accuracy": row["accuracy"], "train_steps": row_a["train_steps"],
                     "train_seconds": row_a["train_seconds"], "trial_key": spec.key})
    finally:
        shutil.rmtree(out, ignore_errors=True)


def run_naive(specs: list, tmp: Path, cpus: int, resources: dict) -> tuple[float, list[dict]]:
    import ray
    from ray import tune

    from headsweep.orchestrator.driver import start_ray
    from headsweep.trials.spec import to_dict
    jobs = {s.key: {"spec": to_dict(s), "out": str(tmp / "naive_out"), "cwd": os.getcwd()} for s in specs}
    t0 = time.perf_counter()
    start_ray(None, cpus, 0)
    try:
        fn = tune.with_resources(tune.with_parameters(naive_trainable, specs=jobs), resources)
        tuner = tune.Tuner(
            fn, param_space={"key": tune.grid_search(list(jobs))},
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(name="naive", storage_path=str(tmp / "ray_naive"), verbose=1,
                                      failure_config=tune.FailureConfig(max_failures=0)))
        grid = tuner.fit()
    finally:
        ray.shutdown()
    wall = time.perf_counter() - t0
    rows = []
    for r in grid:
        if r.error is not None:
            raise RuntimeError(f"naive trial failed: {r.error}")
        rows.append(dict(r.metrics))
    return wall, rows


def run_two_stage(raw: dict, tmp: Path, cpus: int) -> tuple[float, "object", dict]:
    import pandas as pd

    from headsweep.orchestrator.driver import run_sweep
    from headsweep.orchestrator.plan import plan_file
    pl = plan_file(raw, storage=str(tmp / "sweeps"))
    msgs = io.StringIO()
    t0, epoch0 = time.perf_counter(), time.time()
    counts = run_sweep(pl, address=None, cpus=cpus, gpus=0, out=msgs)
    wall = time.perf_counter() - t0
    root = Path(pl.store.root)
    df = pd.read_parquet(root / layout.RESULTS)
    return wall, df, {"counts": counts, "stage_a": len(pl.stage_a), "stage_b": len(pl.stage_b),
                      "log": msgs.getvalue().strip().splitlines(),
                      "breakdown": breakdown(root, pl, epoch0, wall)}


def breakdown(root: Path, pl, epoch0: float, wall: float) -> dict:
    """Where the two-stage wall time went, from each trial's start (status.json) and end
    (result.json written): Ray start-up and the first workers, stage A, the hand-over (negative:
    stage B started before stage A ended), stage B."""
    import json

    def span(specs):
        s = [json.loads((root / layout.status_file(x.key)).read_text())["started"] for x in specs]
        e = [(root / layout.result_file(x.key)).stat().st_mtime for x in specs]
        return min(s) - epoch0, max(e) - epoch0, sum(b - a for a, b in zip(s, e))
    a0, a1, a_busy = span(pl.stage_a)
    b0, b1, b_busy = span(pl.stage_b)
    return {"until_first_finetune_starts_s": round(a0, 1), "stage_a_s": round(a1 - a0, 1),
            "stage_a_busy_slot_s": round(a_busy, 1), "a_to_b_handover_s": round(b0 - a1, 1),
            "stage_b_s": round(b1 - b0, 1), "stage_b_busy_slot_s": round(b_busy, 1),
            "stage_b_per_trial_busy_s": round(b_busy / max(1, len(pl.stage_b)), 2),
            "after_last_trial_s": round(wall - b1, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="2 seeds (28 trials, same ideal ratio), ~4-5 s fine-tunes, 256 eval examples (<3 min)")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--finetune-seconds", type=float, default=None,
                   help="target length of one fine-tune (default 20, quick 4); sets the training rows")
    p.add_argument("--train-limit", type=int, default=None, help="training rows per fine-tune (skips calibration)")
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--eval-limit", type=int, default=None, help="evaluation rows (default: all 872 / 256 quick)")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--order", choices=["naive-first", "two-stage-first"], default="two-stage-first")
    args = p.parse_args(argv)
    args.seeds = args.seeds or (2 if args.quick else 3)
    args.finetune_seconds = args.finetune_seconds or (4.0 if args.quick else 20.0)
    if args.eval_limit is None and args.quick:
        args.eval_limit = 256
    quiet()
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="hs-sweep-cost-"))
    os.environ["HEADSWEEP_CACHE"] = str(tmp / "cache")
    result = {"benchmark": "sweep_cost"}
    try:
        calib = None
        if not args.train_limit:
            args.train_limit = 1000                     # placeholder for the calibration's data spec
            calib = calibrate(args)
            args.train_limit = calib["train_limit"]
            log(f"calibration: {calib}")
        raw = sweep_dict(args, str(tmp / "sweeps"))
        from headsweep.orchestrator.plan import plan_file
        pl = plan_file(raw, storage=str(tmp / "sweeps"))
        specs = list(pl.stage_a) + list(pl.stage_b)      # the naive grid: the same 42 (28) trials
        n_trials = len(specs)
        log(f"grid: {len(pl.stage_a)} stage-A + {len(pl.stage_b)} stage-B = {n_trials} trials; "
            f"data={raw['data']['source']} train_limit={args.train_limit} epochs={args.epochs}")
        sides = ["two_stage", "naive"] if args.order == "two-stage-first" else ["naive", "two_stage"]
        for side in sides:
            with redirect_stdout(sys.stderr):          # Tune's progress tables: not on our stdout
                if side == "two_stage":
                    wall_2, df, info = run_two_stage(raw, tmp, args.cpus)
                else:
                    wall_n, naive_rows = run_naive(specs, tmp, args.cpus, {"cpu": 1})
            log(side, "done", f"{(wall_2 if side == 'two_stage' else wall_n):.1f}s")

        ft_two = int((df["train_steps"].fillna(0) > 0).sum()) if "train_steps" in df else 0
        ft_naive = sum(1 for r in naive_rows if r.get("train_steps", 0) > 0)
        train_s_two = float(df["train_seconds"].fillna(0).sum()) if "train_seconds" in df else None
        train_s_naive = sum(r.get("train_seconds", 0.0) for r in naive_rows)
        acc_two = dict(zip(df["trial_key"], df["accuracy"]))
        diffs = [abs(acc_two[r["trial_key"]] - r["accuracy"]) for r in naive_rows if r["trial_key"] in acc_two]
        ratio = wall_2 / wall_n
        result.update({
            "ratio": round(ratio, 4),
            "ideal_ratio": round(ft_two / ft_naive, 4) if ft_naive else None,
            "finetunes_two_stage": ft_two,
            "finetunes_naive": ft_naive,
            "target": {"ratio": "<= 0.15"},
            "met": {"ratio": ratio <= 0.15},
            "wall_two_stage_s": round(wall_2, 1), "wall_naive_s": round(wall_n, 1),
            "trials": n_trials, "rows_two_stage": int(len(df)), "rows_naive": len(naive_rows),
            "errored_two_stage": info["counts"].get("errored"),
            "two_stage_breakdown": info["breakdown"],
            "finetune_seconds_mean": round(train_s_naive / max(ft_naive, 1), 2),
            "finetune_seconds_target": args.finetune_seconds, "calibration": calib,
            "train_seconds_total": {"two_stage": round(train_s_two or 0, 1), "naive": round(train_s_naive, 1)},
            "accuracy_max_abs_diff": round(max(diffs), 6) if diffs else None, "rows_compared": len(diffs),
            "order": sides,
            "grid": {"model": "preset:tiny-gpt2 (4 layers x 4 heads)", "seeds": args.seeds,
                     "strategies": STRATEGIES, "k": K, "data": raw["data"],
                     "epochs": args.epochs, "batch_size": 32},
            "resources": {"cpus": args.cpus, "finetune": {"cpu": 1}, "prune": {"cpu": 1}, "threads_per_trial": 1},
            "quick_note": ("quick mode: 2 seeds (28 trials; ideal ratio unchanged, 2/28), ~4-5 s fine-tunes and 256 eval rows, "
                           "so fixed per-trial costs weigh more than in the default mode") if args.quick else None,
        })
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish(result, args.quick, t_start)
    return 0 if "ratio" in result else 1


if __name__ == "__main__":
    sys.exit(main())
