"""Ray Tune execution: one ``Tuner`` per stage, each restorable on its own.

Stage A fine-tunes every (model variant, seed) once and saves a checkpoint; stage B runs one trial
per (model, strategy, K, seed, recovery_epochs) on those checkpoints. A trial whose
``result.json`` already exists returns it without recomputing (the trial key is the cache key),
so a re-run or resume never repeats finished work, even for trials Ray did not know had ended.
"""
from __future__ import annotations

import os
import socket
import tempfile
import time
import traceback
from pathlib import Path

from orchestrator import faults
from orchestrator.results import read_rows, trial_dir, write_importance, write_results
from orchestrator.storage import Store
from trials.spec import FinetuneSpec, PruneSpec, from_dict, to_dict

METRICS = ("accuracy", "f1", "loss", "k", "heads_kept")
CACHE = Path(os.environ.get("HEADSWEEP_CACHE", Path.home() / ".cache" / "headsweep"))


# ---------------------------------------------------------------------------- worker side

def run_one(spec: FinetuneSpec | PruneSpec, store: Store, fault_rules: str = "") -> dict:
    """Run (or fetch the cached result of) one trial and publish its outputs. No Ray here."""
    d = trial_dir(spec.key)
    if store.exists(f"{d}/result.json"):
        return store.read_json(f"{d}/result.json")
    attempt = store.read_json(f"{d}/status.json").get("attempt", 0) + 1 if store.exists(
        f"{d}/status.json") else 1
    store.write_json(f"{d}/status.json", {"state": "running", "attempt": attempt, "pid": os.getpid(),
                                          "host": socket.gethostname(), "started": time.time()})
    try:
        faults.maybe_inject(spec, store, fault_rules)
        with tempfile.TemporaryDirectory(prefix="headsweep-") as tmp:
            out = Path(tmp) / "out"
            if isinstance(spec, PruneSpec):
                from trials.run import run_prune
                ft = spec.finetune
                ckpt = store.get_dir(f"checkpoints/{ft.checkpoint_name}", CACHE / "checkpoints" / ft.key)
                row = run_prune(spec, ckpt, out)
            else:
                from trials.run import run_finetune
                row = run_finetune(spec, out)
                store.put_dir(out / "checkpoint", f"checkpoints/{spec.checkpoint_name}")
                store.put_file(out / "importance.parquet", f"{d}/importance.parquet")
            store.put_file(out / "predictions.parquet", f"predictions/{spec.key}.parquet")
        row["attempt"] = attempt
        store.write_json(f"{d}/result.json", row)  # last: its presence means the trial is complete
        return row
    except BaseException as e:
        store.write_json(f"{d}/error.json", {"error": f"{type(e).__name__}: {e}", "attempt": attempt,
                                             "traceback": traceback.format_exc()[-4000:]})
        raise


def trainable(config: dict, trials: dict) -> None:
    """The Ray Tune function trainable: one trial (``trials[config["key"]]``), reported once."""
    import torch
    from ray import tune
    trial = trials[config["key"]]
    # Relative data/tokenizer paths mean the user's directory: the driver's (same machine) or the
    # job's working dir (cluster), never Ray's per-trial directory.
    cwd = trial.get("cwd")
    os.chdir(cwd if cwd and os.path.isdir(cwd) else os.environ.get("TUNE_ORIG_WORKING_DIR", os.getcwd()))
    torch.set_num_threads(max(1, int(trial["threads"])))
    _quiet_libraries()
    row = run_one(from_dict(trial["spec"]), Store(trial["sweep"]), trial.get("faults", ""))
    tune.report({k: row[k] for k in METRICS} | {"trial_key": row["trial_key"]})


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


# ---------------------------------------------------------------------------- driver side

def trial_name(spec) -> str:
    if isinstance(spec, PruneSpec):
        ft = spec.finetune
        rec = f"-r{spec.recovery_epochs:g}" if spec.recovery_epochs else ""
        return f"B-{ft.model.variant}-{spec.strategy}-k{spec.k}-s{ft.seed}{rec}-{spec.key[:6]}"
    return f"A-{spec.model.variant}-s{spec.seed}-{spec.key[:6]}"


def publish_callback(store: Store, min_interval_s: float = 10.0):
    """Tune callback: rewrite the results table as trials complete (live partial results).

    At most once per ``min_interval_s``: a rewrite reads every finished trial's result, so doing it
    per trial costs the driver O(trials^2) work that competes with the trials for the CPUs. Each
    stage ends with a full ``publish_tables`` anyway.
    """
    from ray.tune import Callback

    class Publish(Callback):
        last = 0.0

        def on_trial_complete(self, iteration, trials, trial, **info):
            if time.monotonic() - self.last >= min_interval_s:
                write_results(store)
                self.last = time.monotonic()

    return Publish()


def run_stage(stage: str, specs: list, store: Store, resources: dict, max_failures: int,
              restore: bool = False, after: list | None = None):
    """Fit (or restore) the Tuner of one stage; returns Ray's ResultGrid (None: no trials)."""
    tuner = stage_tuner(stage, specs, store, resources, max_failures, restore, after)
    return tuner.fit() if tuner is not None else None


def stage_tuner(stage: str, specs: list, store: Store, resources: dict, max_failures: int,
                restore: bool = False, after: list | None = None):
    """The Tuner of one stage, new or restored, ready to ``fit()``.

    ``after``: the stage-A specs this stage-B stage runs beside. Its trials are then released as
    their checkpoints land (``orchestrator.pipeline``) instead of as one fixed grid.

    Build Tuners in the driver's main thread; only ``fit()`` may run in another. The trainable is
    registered here under a per-stage name: Tune's registry is process-global and not
    thread-safe, and two stages registering the same name would hand one stage's trials the
    other's trainable.
    """
    from ray import tune
    if not specs:
        return None
    threads = max(1, int(resources.get("cpu", 1)))
    # The grid is over trial keys only (short progress tables); specs travel via with_parameters.
    trials = {s.key: {"spec": to_dict(s), "sweep": store.root, "threads": threads, "cwd": os.getcwd(),
                      "faults": faults.rules_from_env()} for s in specs}
    names = {s.key: trial_name(s) for s in specs}
    name = f"headsweep_{stage}"
    tune.register_trainable(name, tune.with_resources(tune.with_parameters(trainable, trials=trials), resources))
    path = store.uri(f"ray/{stage}")
    if restore and tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, name, resume_errored=True)
    if after is None:
        space, search = {"key": tune.grid_search(list(trials))}, {}
    else:
        from orchestrator.pipeline import ready_first
        space, search = {}, {"search_alg": ready_first(store.root, specs, after), "num_samples": len(specs)}
    return tune.Tuner(
        name,
        param_space=space,
        tune_config=tune.TuneConfig(
            **search,
            trial_name_creator=lambda t: names[t.config["key"]],
            trial_dirname_creator=lambda t: names[t.config["key"]],
            reuse_actors=True,  # safe: trials leave no hooks or Accelerator state behind
        ),
        run_config=tune.RunConfig(
            name=stage, storage_path=store.uri("ray"),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            callbacks=[publish_callback(store)], verbose=1,
        ),
    )


def finalize_errors(store: Store, specs: list) -> list[str]:
    """Mark trials that ended without a result as finally errored; return their keys."""
    errored = []
    for s in specs:
        d = trial_dir(s.key)
        if not store.exists(f"{d}/result.json") and store.exists(f"{d}/error.json"):
            err = store.read_json(f"{d}/error.json")
            store.write_json(f"{d}/error.json", err | {"final": True})
            errored.append(s.key)
    return errored


def publish_tables(store: Store) -> None:
    rows = read_rows(store)
    write_results(store, rows)
    write_importance(store, rows)
