"""The driver: start Ray, run stage A and stage B (beside it) over the trials that still need to
run, publish the tables.

The sweep directory is the truth and Tune's state only a log: a trial whose ``result.json`` exists
is done and never runs again; every other trial of the grid runs in this run's fresh Tune
experiments (``ray/<run_id>/``). So a run, a re-run and a resume are the same thing, whatever a
kill left behind (docs/reliability.md). The first thing a run does is take the directory's lease
(``orchestrator.lease``): a second driver is refused before it writes or deletes anything.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager

from headsweep.orchestrator import faults
from headsweep.orchestrator.lease import Held, Lease
from headsweep.orchestrator.plan import Plan, Refused
from headsweep.orchestrator.results import finalize_errors, publish_tables, read_result
from headsweep.orchestrator.sweepdir import claim_directory, clean_debris, new_run_id
from headsweep.trials import layout

STALL_S = 600.0   # the progress display warns when no trial started or finished for this long


def start_ray(address: str | None, cpus: float, gpus: float, verbose: bool = False) -> None:
    import ray
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if address:
        ray.init(address=address, log_to_driver=verbose, logging_level="INFO" if verbose else "WARNING")
    else:
        # The dashboard (when ray[default] is installed) listens on loopback only.
        # address="local": always a fresh instance, never another process's cluster.
        ray.init(address="local", num_cpus=int(cpus), num_gpus=int(gpus), dashboard_host="127.0.0.1",
                 log_to_driver=verbose, configure_logging=verbose,
                 logging_level="INFO" if verbose else "WARNING")


def _ray_processes() -> dict:
    """What this driver's local Ray is (session dir, process ids), for ``headsweep status``
    after a kill; empty on a cluster the driver did not start."""
    try:
        import ray
        node = ray._private.worker._global_node
        if node is None or not node.head:
            return {}
        pids = {name: [p.process.pid for p in infos] for name, infos in node.all_processes.items()}
        return {"ray_session": node.get_session_dir_path(), "ray_pids": pids}
    except Exception:  # a private API: its absence must not stop a sweep
        return {}


def run_sweep(pl: Plan, *, address: str | None, cpus: float, gpus: float, verbose: bool = False,
              out=sys.stdout, allow_drift: bool = False, stall_s: float = STALL_S) -> dict:
    """Run every trial of the plan that has no result yet; returns what happened (``summarize``).
    Raises ``Refused`` (nothing written or deleted) while another driver holds the sweep."""
    store = pl.store
    run_id = new_run_id(store)
    stop = threading.Event()
    lease = Lease(store, run_id, on_lost=stop.set)
    try:
        lease.acquire()
    except Held as e:
        raise Refused([str(e)])
    try:
        claim_directory(pl, allow_drift=allow_drift, run_id=run_id)
        clean_debris(store, before=lease.acquired_at)
        todo_a = [s for s in pl.stage_a if read_result(store, s.key) is None]  # a damaged one: quarantined
        todo_b = [s for s in pl.stage_b if read_result(store, s.key) is None]
        if not todo_a and not todo_b:
            publish_tables(store)
            return summarize(pl, ran=0, stopped=False, failure=None)
        failures = _run(pl, todo_a, todo_b, run_id, lease, stop, address=address, cpus=cpus, gpus=gpus,
                        verbose=verbose, out=out, stall_s=stall_s)
    finally:
        lease.release()
    return summarize(pl, ran=len(todo_a) + len(todo_b), stopped=stop.is_set(),
                     failure=failures[0] if failures else None)


def _run(pl: Plan, todo_a: list, todo_b: list, run_id: str, lease: Lease, stop: threading.Event, *,
         address, cpus, gpus, verbose, out, stall_s) -> list:
    import ray  # first: importing Ray sets up its loggers, which _driver_logging then redirects
    store = pl.store
    failures: list[BaseException] = []
    # Tune's new console output prints experiment boxes whatever its verbosity; the classic
    # reporter at verbose=0 prints nothing, and the progress display speaks instead.
    quiet = {} if verbose else {"RAY_AIR_NEW_OUTPUT": "0"}
    with _driver_logging(store, run_id, verbose), _stop_signals(stop, out), _env(**quiet):
        own_ray = not ray.is_initialized()  # a notebook or test may have started Ray already
        if own_ray:
            start_ray(address, cpus, gpus, verbose)
            lease.renew(**_ray_processes())  # for `headsweep status` after a kill
        from headsweep.orchestrator.progress import Progress
        progress = Progress(store, pl, run_id, out=out, stall_s=stall_s)
        try:
            progress.start()
            _run_stages(pl, todo_a, todo_b, run_id, stop, failures, verbose)
        finally:
            progress.stop()
            if own_ray:
                _keep_ray_logs(store, run_id)
                ray.shutdown()
    return failures


def _run_stages(pl: Plan, todo_a: list, todo_b: list, run_id: str, stop: threading.Event,
                failures: list, verbose: bool) -> None:
    from headsweep.orchestrator.tune import stage_tuner
    store, sweep = pl.store, pl.sweep
    common = {"run_id": run_id, "tracking": sweep.tracking, "experiment": sweep.name, "stop": stop,
              "verbose": verbose}
    tuner_a = stage_tuner("stage_a", todo_a, store, sweep.resources["finetune"].as_ray(),
                          sweep.max_failures, **common)
    tuners_b = [stage_tuner(name, specs, store, sweep.resources[need].as_ray(), sweep.max_failures,
                            after=todo_a, **common)
                for name, need, specs in _stage_b_groups(todo_b)]
    beside = [Background(t.fit) for t in tuners_b if t is not None]
    try:
        if tuner_a is not None:
            tuner_a.fit()
    except Exception as e:  # Tune itself failed (not a trial: those are errored trials)
        failures.append(e)
    finally:
        store.write_json(layout.stage_over_marker(run_id), {"at": time.time()})  # stage B may finish now
    if faults.stop_point("stage_a"):
        stop.set()
    faults.driver_point("stage_a")
    finalize_errors(store, todo_a, run_id)
    publish_tables(store)  # stage-A rows and importance.parquet
    for thread in beside:
        try:
            thread.result()
        except Exception as e:
            failures.append(e)
    finalize_errors(store, todo_b, run_id)
    publish_tables(store)


def summarize(pl: Plan, *, ran: int, stopped: bool, failure: BaseException | None) -> dict:
    """Counts from the sweep directory: done, errored (for good), skipped (their fine-tune errored),
    not run (what a resume would run)."""
    from headsweep.orchestrator.results import trial_state
    store = pl.store
    state = {s.key: trial_state(store, s.key)[0] for s in list(pl.stage_a) + list(pl.stage_b)}
    failed_a = {s.key for s in pl.stage_a if state[s.key] == "errored"}
    skipped = sum(state[s.key] != "done" and s.finetune.key in failed_a for s in pl.stage_b)
    done = sum(v == "done" for v in state.values())
    errored = sum(v == "errored" for v in state.values())
    return {"trials": len(state), "done": done, "errored": errored, "skipped": skipped,
            "not_run": len(state) - done - errored - skipped, "ran": ran, "stopped": stopped,
            "failure": _one_line(failure) if failure is not None else None}


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def _stage_b_groups(specs: list) -> list[tuple[str, str, list]]:
    """(experiment name, resources key, specs): recovery trials fine-tune, so they get
    fine-tuning resources and their own experiment."""
    groups = {}
    for s in specs:
        groups.setdefault("finetune" if s.recovery_epochs else "prune", []).append(s)
    return [("stage_b" if need == "prune" else "stage_b_recovery", need, g) for need, g in groups.items()]


@contextmanager
def _stop_signals(stop: threading.Event, out):
    """First Ctrl+C (or SIGTERM): stop every stage gracefully (``stop`` ends the Tune experiments;
    running trials are cut short and run again on resume). Second: stop at once.

    Tune's own SIGINT handler would end only the Tuner in the main thread and leave no trace of
    the stop, so it is turned off (``TUNE_DISABLE_SIGINT_HANDLER``) for this driver's fits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(sig, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("headsweep: stopping: running trials are cut short (a second Ctrl+C stops at once)",
              file=out, flush=True)

    for sig in before:
        signal.signal(sig, on_signal)
    try:
        with _env(TUNE_DISABLE_SIGINT_HANDLER="1"):
            yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@contextmanager
def _env(**values):
    """Set environment variables for the block, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _driver_logging(store, run_id: str, verbose: bool):
    """Ray's and Tune's Python logs go to ``logs/<run_id>/driver.log`` (local sweeps; object-store
    sweeps upload it at the end), not to the terminal, unless ``verbose``."""
    import tempfile
    from pathlib import Path
    local = store.local / layout.run_logs(run_id) if store.local else Path(tempfile.mkdtemp()) / run_id
    local.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(local / layout.DRIVER_LOG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    names = ("ray", "ray.tune", "ray.train", "ray.data", "accelerate", "transformers")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in names}
    last_resort = logging.lastResort
    for n in names:
        lg = logging.getLogger(n)
        lg.addHandler(handler)
        if not verbose:
            lg.handlers = [handler]
            lg.propagate = False
    if not verbose:
        # ray.init drops the handlers of its loggers and logs with none: Python's last resort
        # (stderr) would print those lines, so the log file is the last resort meanwhile.
        logging.lastResort = handler
    try:
        yield
    finally:
        logging.lastResort = last_resort
        for n, (handlers, propagate) in saved.items():
            logging.getLogger(n).handlers, logging.getLogger(n).propagate = handlers, propagate
        handler.close()
        if not store.local:
            store.put_file(local / layout.DRIVER_LOG, f"{layout.run_logs(run_id)}/{layout.DRIVER_LOG}")


def _keep_ray_logs(store, run_id: str) -> None:
    """A copy of the local Ray session's logs in the sweep directory (local sweeps)."""
    info = _ray_processes()
    src = info.get("ray_session")
    if not src or store.local is None:
        return
    try:
        shutil.copytree(os.path.join(src, "logs"), store.local / layout.run_logs(run_id) / layout.RAY,
                        dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.sock", "*.pid"))
    except (OSError, shutil.Error):  # logs are a convenience: never fail a sweep over them
        pass


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
