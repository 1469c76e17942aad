"""What the CLI commands do: validate, run, resume, status, analyze.

Validation finishes before anything is created: a sweep with problems exits 2 with one line
per problem, starts no Ray and leaves no directory behind.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from importlib import resources as importlib_resources
from pathlib import Path

from orchestrator import checks, grid
from orchestrator.results import trial_state
from orchestrator.storage import Store, is_uri, join, parent_and_name
from orchestrator.readers import Problems, load_yaml
from orchestrator.sweep import Sweep, parse

EXIT_USAGE = 2
DEMO = "demo.yaml"


class Refused(Exception):
    """Problems found before launch; ``lines`` are printed, exit code 2."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("\n".join(lines))


@dataclass
class Plan:
    sweep: Sweep
    heads: dict
    stage_a: list
    stage_b: list
    store: Store
    warnings: list[str]


def demo_path() -> Path:
    return Path(str(importlib_resources.files("configs") / DEMO))


def sweep_dir_of(sweep: Sweep, storage: str | None) -> str:
    base = storage or sweep.storage
    return join(base, sweep.name) if is_uri(base) else str(Path(os.path.expanduser(base)) / sweep.name)


def plan(raw_or_path, *, storage: str | None = None, local: dict | None = None) -> Plan:
    """Validate everything and build the grid; raises ``Refused`` with every problem found.

    ``local``: {"cpus": N, "gpus": N, "cluster": bool} checks per-trial resources against the
    machine (refused locally, a warning on a cluster).
    """
    p = Problems()
    raw = load_yaml(raw_or_path, p) if isinstance(raw_or_path, (str, Path)) else raw_or_path
    sweep = parse(raw, p) if not p else None
    if sweep is None:
        raise Refused(p.lines)
    heads = checks.check_models(sweep, p)
    checks.check_importance(sweep, p)
    checks.check_data(sweep, p)
    checks.check_storage(storage or sweep.storage, p, key="--storage" if storage else "storage")
    if local is not None:
        checks.check_resources(sweep, p, cpus=local["cpus"], gpus=local["gpus"], cluster=local["cluster"])
    if p:
        raise Refused(p.lines)
    stage_b = grid.stage_b(sweep, heads)
    notes = p.warnings + grid.duplicate_k_notes(sweep, heads)
    return Plan(sweep, heads, grid.stage_a(sweep), stage_b, Store(sweep_dir_of(sweep, storage)), notes)


def _claim_directory(pl: Plan) -> None:
    """Refuse to mix two different sweeps in one directory; write spec.yaml and grid.json."""
    store, sweep = pl.store, pl.sweep
    if store.exists("spec.yaml"):
        import yaml
        old = yaml.safe_load(store.read_bytes("spec.yaml"))
        new = sweep.to_yaml_dict()
        if {k: v for k, v in old.items() if k != "storage"} != {k: v for k, v in new.items() if k != "storage"}:
            raise Refused([f"storage: {store.root} already holds a different sweep named "
                           f"'{sweep.name}'; change 'name' or use 'headsweep resume {store.root}' "
                           f"(got {store.root!r})"])
    store.write_bytes("spec.yaml", sweep.to_yaml().encode())
    store.write_json("grid.json", {
        "stage_a": [{"key": s.key, "name": _name(s)} for s in pl.stage_a],
        "stage_b": [{"key": s.key, "name": _name(s), "stage_a_key": s.finetune.key} for s in pl.stage_b],
    })


def _name(spec) -> str:
    from orchestrator.execute import trial_name
    return trial_name(spec)


# ---------------------------------------------------------------------------- run / resume

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


def execute(pl: Plan, *, address: str | None, cpus: float, gpus: float, restore: bool = False,
            out=sys.stdout) -> dict:
    """Run both stages; returns counts. Assumes ``plan`` passed.

    ``HEADSWEEP_STOP_AFTER=stage_a`` (a testing hook) ends the run after stage A, as if the
    driver had been stopped there.
    """
    import ray
    from orchestrator.execute import finalize_errors, publish_tables, stage_tuner
    from orchestrator.pipeline import OVER
    store, sweep = pl.store, pl.sweep
    _claim_directory(pl)
    store.write_json("driver.json", {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
    own_ray = not ray.is_initialized()  # a notebook or test may have started Ray already
    if own_ray:
        start_ray(address, cpus, gpus)
    stop_after_a = os.environ.get("HEADSWEEP_STOP_AFTER") == "stage_a"
    stage_b, err_b = [], []
    try:
        if store.exists(OVER):
            store.remove(OVER)            # a resumed sweep: stage A is about to run (again)
        print(f"headsweep: stage A — {len(pl.stage_a)} fine-tunes (one per model variant and seed)", file=out)
        tuner_a = stage_tuner("stage_a", pl.stage_a, store, sweep.resources["finetune"].as_ray(),
                              sweep.max_failures, restore)
        tuners_b = [] if stop_after_a else [
            stage_tuner(name, specs, store, sweep.resources[need].as_ray(), sweep.max_failures, restore,
                        after=pl.stage_a)
            for name, need, specs in _stage_b_groups(pl.stage_b)]
        beside = [_in_thread(t.fit) for t in tuners_b if t is not None]
        if beside:
            print(f"headsweep: stage B — {len(pl.stage_b)} trials, each starting as soon as its "
                  "checkpoint exists and a slot is free", file=out)
        try:
            if tuner_a is not None:
                tuner_a.fit()
        finally:
            store.write_json(OVER, {"at": time.time()})  # lets stage B finish without missing checkpoints
        err_a = finalize_errors(store, pl.stage_a)
        publish_tables(store)  # stage-A rows and importance.parquet
        if stop_after_a:
            return {"errored": len(err_a), "skipped": len(pl.stage_b), "trials": len(pl.stage_a),
                    "stopped": True}
        for thread in beside:
            thread.result()
        ready = {s.key for s in pl.stage_a if store.exists(f"trials/{s.key}/result.json")}
        stage_b = [s for s in pl.stage_b if s.finetune.key in ready]
        err_b = finalize_errors(store, stage_b)
        publish_tables(store)
    finally:
        if own_ray:
            ray.shutdown()
        if store.exists("driver.json"):
            store.remove("driver.json")
    failed_a = set(err_a)  # stage-B trials on a fine-tune that errored for good are skipped;
    skipped = sum(s.finetune.key in failed_a for s in pl.stage_b)  # others merely did not run yet
    every = list(pl.stage_a) + list(pl.stage_b)
    done = sum(store.exists(f"trials/{s.key}/result.json") for s in every)
    return {"errored": len(err_a) + len(err_b), "skipped": skipped, "trials": len(every), "done": done}


def _stage_b_groups(specs: list) -> list[tuple[str, str, list]]:
    """(experiment name, resources key, specs): recovery trials fine-tune, so they get
    fine-tuning resources and their own experiment."""
    groups = {}
    for s in specs:
        groups.setdefault("finetune" if s.recovery_epochs else "prune", []).append(s)
    return [("stage_b" if need == "prune" else "stage_b_recovery", need, g) for need, g in groups.items()]


class _in_thread:
    """Run ``fn(*args)`` in a daemon thread; ``result()`` joins it and re-raises its exception."""

    def __init__(self, fn, *args):
        import threading
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


def load_spec(sweep_dir: str) -> Sweep:
    store = Store(sweep_dir)
    if not store.exists("spec.yaml"):
        raise Refused([f"SWEEP_DIR: no spec.yaml in {sweep_dir}; is it a headsweep sweep directory? "
                       f"(got {sweep_dir!r})"])
    p = Problems()
    import yaml
    try:
        raw = yaml.safe_load(store.read_bytes("spec.yaml"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        raise Refused([f"SWEEP_DIR/spec.yaml: unreadable ({type(e).__name__}); the sweep directory is "
                       f"damaged (got {sweep_dir!r})"])
    sweep = parse(raw, p)
    if sweep is None:
        raise Refused([f"SWEEP_DIR/spec.yaml: {line}" for line in p.lines])
    return sweep


def resume_plan(sweep_dir: str, local: dict | None) -> Plan:
    sweep = load_spec(sweep_dir)
    storage, name = parent_and_name(Store(sweep_dir).root)
    return plan(sweep.to_yaml_dict() | {"name": name}, storage=storage, local=local)


def local_copy(sweep_dir: str, to: str | None = None) -> str:
    """The sweep directory itself, or (object stores) a local copy of everything but checkpoints."""
    store = Store(sweep_dir)
    if not store.exists("results.parquet") and not store.exists("spec.yaml"):
        raise Refused([f"SWEEP_DIR: no results.parquet or spec.yaml in {sweep_dir}; is it a headsweep "
                       f"sweep directory? (got {sweep_dir!r})"])
    if store.local is not None:
        return str(store.local)
    dest = Path(to) if to else Path("sweeps") / parent_and_name(store.root)[1]
    store.download(["spec.yaml", "grid.json", "results.parquet", "results.csv", "importance.parquet",
                    "predictions"], dest)
    print(f"headsweep: copied {store.root} (without checkpoints) to {dest}", file=sys.stderr)
    return str(dest)


# ---------------------------------------------------------------------------- status

def driver_alive(store: Store) -> bool:
    if not store.exists("driver.json"):
        return False
    d = store.read_json("driver.json")
    if d.get("host") != socket.gethostname():
        return True  # cannot tell for another machine: assume it runs
    try:
        os.kill(int(d["pid"]), 0)
        return True
    except (OSError, ValueError, KeyError):
        return False


def status(sweep_dir: str) -> dict:
    """Per-stage counts (done / running / pending / errored) and the errored trials' errors."""
    store = Store(sweep_dir)
    if not store.exists("grid.json"):
        raise Refused([f"SWEEP_DIR: no grid.json in {sweep_dir}; is it a headsweep sweep directory? "
                       f"(got {sweep_dir!r})"])
    try:
        g = store.read_json("grid.json")
        g["stage_a"], g["stage_b"]
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise Refused([f"SWEEP_DIR/grid.json: unreadable ({type(e).__name__}); the sweep directory is "
                       f"damaged (got {sweep_dir!r})"])
    alive = driver_alive(store)
    done_a = set()
    report = {"sweep_dir": store.root, "driver_running": alive, "stages": {}, "errors": []}
    for stage in ("stage_a", "stage_b"):
        counts = {"done": 0, "running": 0, "pending": 0, "errored": 0, "interrupted": 0, "skipped": 0}
        for t in g[stage]:
            state, detail = trial_state(store, t["key"])
            if state == "running" and not alive:
                state = "interrupted"
            if state == "pending" and stage == "stage_b" and not alive and t["stage_a_key"] not in done_a \
                    and store.exists(f"trials/{t['stage_a_key']}/error.json"):
                state = "skipped"
            if state == "done" and stage == "stage_a":
                done_a.add(t["key"])
            counts[state] += 1
            if state == "errored":
                report["errors"].append({"trial": t["name"], "key": t["key"], "error": detail})
        report["stages"][stage] = counts
    report["results"] = store.uri("results.parquet") if store.exists("results.parquet") else None
    nb = "analysis/analysis.ipynb"
    report["notebook"] = store.uri(nb) if store.exists(nb) else None
    return report


def format_status(r: dict) -> str:
    lines = [f"sweep: {r['sweep_dir']} (driver {'running' if r['driver_running'] else 'not running'})"]
    for stage, c in r["stages"].items():
        total = sum(c.values())
        parts = ", ".join(f"{v} {k}" for k, v in c.items() if v)
        lines.append(f"  {stage}: {total} trials: {parts or 'none'}")
    for e in r["errors"]:
        lines.append(f"  errored {e['trial']} ({e['key']}): {e['error']}")
    lines.append(f"  results: {r['results'] or 'not written yet'}")
    if r["notebook"]:
        lines.append(f"  notebook: {r['notebook']}")
    return "\n".join(lines)


def json_dumps(obj) -> str:
    return json.dumps(obj, indent=1, default=str)
