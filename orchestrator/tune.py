"""Ray Tune: one ``Tuner`` per stage, and the callback that keeps the results table live.

Stage A fine-tunes every (model variant, seed) once and saves a checkpoint; stage B runs one
trial per (model, strategy, K, seed, recovery_epochs) on those checkpoints. Ray is imported here
(and in the driver and pipeline), never by the trials or the analysis.
"""
from __future__ import annotations

import os
import threading
import time

from ray.tune import Stopper

from headsweep.orchestrator import faults
from headsweep.orchestrator.grid import trial_name
from headsweep.orchestrator.results import write_results
from headsweep.orchestrator.storage import Store
from headsweep.orchestrator.sweep import TrackingSpec
from headsweep.orchestrator.tracking import callbacks as tracking_callbacks
from headsweep.orchestrator.tracking import flat_params
from headsweep.orchestrator.worker import trainable
from headsweep.trials import layout


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


_STOP_EVENTS: dict[str, threading.Event] = {}   # run id -> the driver's stop event (this process)


class RunStopper(Stopper):
    """Ends the whole experiment once the driver's stop event for ``run_id`` is set (its first
    Ctrl+C / SIGTERM), so every stage stops the same way and the driver knows it was stopped.
    Holds only the run id: Tune pickles its stopper, and an event does not pickle."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def __call__(self, trial_id, result):
        return False

    def stop_all(self):
        event = _STOP_EVENTS.get(self.run_id)
        return event is not None and event.is_set()


def fit_stage(stage: str, specs: list, store: Store, resources: dict, max_failures: int, *,
              run_id: str = "bench", after: list | None = None):
    """Fit the Tuner of one stage; returns Ray's ResultGrid (None: no trials)."""
    tuner = stage_tuner(stage, specs, store, resources, max_failures, run_id=run_id, after=after)
    return tuner.fit() if tuner is not None else None


def stage_tuner(stage: str, specs: list, store: Store, resources: dict, max_failures: int, *,
                run_id: str, after: list | None = None, tracking: TrackingSpec | None = None,
                experiment: str = "headsweep", stop=None, verbose: bool = False):
    """A fresh Tuner for one stage of one driver run, ready to ``fit()``.

    Never restored from Tune's state: the sweep directory is the truth (a trial with a result is
    done), so every run, a resume included, starts new experiments under ``ray/<run_id>/`` over the
    trials that still need to run (docs/reliability.md says why).

    ``after``: the stage-A specs this run still runs, for a stage-B Tuner running beside them: its
    trials are released as their checkpoints land (``orchestrator.pipeline``). ``tracking``: the
    trackers to log to (``experiment``: their experiment / project name). ``stop``: a threading
    event that ends the experiment. ``verbose``: Tune's own per-trial tables.

    Build Tuners in the driver's main thread; only ``fit()`` may run in another. The trainable is
    registered here under a per-stage name: Tune's registry is process-global and not
    thread-safe, and two stages registering the same name would hand one stage's trials the
    other's trainable.
    """
    from ray import tune
    if not specs:
        return None
    if stop is not None:
        _STOP_EVENTS[run_id] = stop
    threads = max(1, int(resources.get("cpu", 1)))
    # The grid is over trial keys only (short progress tables); the frozen specs themselves
    # travel to the workers via with_parameters (they pickle).
    trials = {s.key: {"spec": s, "sweep": store.root, "threads": threads, "cwd": os.getcwd(),
                      "faults": faults.rules_from_env(), "run": run_id} for s in specs}
    names = {s.key: trial_name(s) for s in specs}
    name = f"headsweep_{stage}"
    tune.register_trainable(name, tune.with_resources(tune.with_parameters(trainable, trials=trials), resources))
    if after is None:
        space, search = {"key": tune.grid_search(list(trials))}, {}
    else:
        from headsweep.orchestrator.pipeline import ready_first
        space, search = {}, {"search_alg": ready_first(store.root, specs, after, run_id),
                             "num_samples": len(specs)}
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
            name=stage, storage_path=store.uri(layout.ray_run(run_id)),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            stop=RunStopper(run_id) if stop is not None else None,
            callbacks=[publish_callback(store),
                       *tracking_callbacks(tracking or TrackingSpec(), store, experiment,
                                           {s.key: flat_params(s) for s in specs})],
            verbose=1 if verbose else 0,
        ),
    )
