"""The driver: start Ray, run stage A and stage B (beside it), publish the tables.

Assumes the plan passed validation. The driver owns the sweep directory while it runs
(``driver.json``); every trial's truth is its own files (orchestrator/worker.py).
"""
from __future__ import annotations

import os
import sys
import threading
import time

from orchestrator.plan import Plan
from orchestrator.results import finalize_errors, publish_tables
from orchestrator.sweepdir import claim_directory, mark_driver, unmark_driver
from trials import layout


def start_ray(address: str | None, cpus: float, gpus: float) -> None:
    import ray
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # The dashboard (when ray[default] is installed) listens on loopback only.
        # address="local": always a fresh instance, never another process's cluster.
        ray.init(address="local", num_cpus=int(cpus), num_gpus=int(gpus), dashboard_host="127.0.0.1",
                 log_to_driver=False, configure_logging=True, logging_level="WARNING")


def run_sweep(pl: Plan, *, address: str | None, cpus: float, gpus: float, restore: bool = False,
              out=sys.stdout) -> dict:
    """Run both stages; returns counts.

    ``HEADSWEEP_STOP_AFTER=stage_a`` (a testing hook) ends the run after stage A, as if the
    driver had been stopped there.
    """
    import ray
    from orchestrator.tune import stage_tuner
    store, sweep = pl.store, pl.sweep
    over = layout.stage_over_marker("stage_a")
    claim_directory(pl)
    mark_driver(store)
    own_ray = not ray.is_initialized()  # a notebook or test may have started Ray already
    if own_ray:
        start_ray(address, cpus, gpus)
    stop_after_a = os.environ.get("HEADSWEEP_STOP_AFTER") == "stage_a"
    stage_b, err_b = [], []
    try:
        if store.exists(over):
            store.remove(over)            # a resumed sweep: stage A is about to run (again)
        print(f"headsweep: stage A — {len(pl.stage_a)} fine-tunes (one per model variant and seed)", file=out)
        track = {"tracking": sweep.tracking, "experiment": sweep.name}
        tuner_a = stage_tuner("stage_a", pl.stage_a, store, sweep.resources["finetune"].as_ray(),
                              sweep.max_failures, restore, **track)
        tuners_b = [] if stop_after_a else [
            stage_tuner(name, specs, store, sweep.resources[need].as_ray(), sweep.max_failures, restore,
                        after=pl.stage_a, **track)
            for name, need, specs in _stage_b_groups(pl.stage_b)]
        beside = [Background(t.fit) for t in tuners_b if t is not None]
        if beside:
            print(f"headsweep: stage B — {len(pl.stage_b)} trials, each starting as soon as its "
                  "checkpoint exists and a slot is free", file=out)
        try:
            if tuner_a is not None:
                tuner_a.fit()
        finally:
            store.write_json(over, {"at": time.time()})  # lets stage B finish without missing checkpoints
        err_a = finalize_errors(store, pl.stage_a)
        publish_tables(store)  # stage-A rows and importance.parquet
        if stop_after_a:
            return {"errored": len(err_a), "skipped": len(pl.stage_b), "trials": len(pl.stage_a),
                    "stopped": True}
        for thread in beside:
            thread.result()
        ready = {s.key for s in pl.stage_a if store.exists(layout.result_file(s.key))}
        stage_b = [s for s in pl.stage_b if s.finetune.key in ready]
        err_b = finalize_errors(store, stage_b)
        publish_tables(store)
    finally:
        if own_ray:
            ray.shutdown()
        unmark_driver(store)
    failed_a = set(err_a)  # stage-B trials on a fine-tune that errored for good are skipped;
    skipped = sum(s.finetune.key in failed_a for s in pl.stage_b)  # others merely did not run yet
    every = list(pl.stage_a) + list(pl.stage_b)
    done = sum(store.exists(layout.result_file(s.key)) for s in every)
    return {"errored": len(err_a) + len(err_b), "skipped": skipped, "trials": len(every), "done": done}


def _stage_b_groups(specs: list) -> list[tuple[str, str, list]]:
    """(experiment name, resources key, specs): recovery trials fine-tune, so they get
    fine-tuning resources and their own experiment."""
    groups = {}
    for s in specs:
        groups.setdefault("finetune" if s.recovery_epochs else "prune", []).append(s)
    return [("stage_b" if need == "prune" else "stage_b_recovery", need, g) for need, g in groups.items()]


class Background:
    """Run ``fn(*args)`` in a daemon thread; ``result()`` joins it and re-raises its exception."""

    def __init__(self, fn, *args):
        self._error = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True, name="headsweep-stage-b")
        self._thread.start()

    def _run(self, fn, args):
        try:
            fn(*args)
        except BaseException as e:  # re-raised in the driver's main thread by result()
            self._error = e

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
