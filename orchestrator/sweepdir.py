"""An existing sweep directory: claiming it for a sweep, its saved spec, the driver's presence,
and a local copy of an object-store sweep for the analysis."""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import yaml

from orchestrator.grid import trial_name
from orchestrator.plan import Plan, Refused
from orchestrator.readers import Problems
from orchestrator.storage import Store, parent_and_name
from orchestrator.sweep import Sweep, parse
from trials import layout


def _not_a_sweep(sweep_dir: str, missing: str) -> Refused:
    return Refused([f"SWEEP_DIR: no {missing} in {sweep_dir}; is it a headsweep sweep directory? "
                    f"(got {sweep_dir!r})"])


def _damaged(what: str, e: Exception, sweep_dir: str) -> Refused:
    return Refused([f"SWEEP_DIR/{what}: unreadable ({type(e).__name__}); the sweep directory is "
                    f"damaged (got {sweep_dir!r})"])


def claim_directory(pl: Plan) -> None:
    """Refuse to mix two different sweeps in one directory; write spec.yaml and grid.json."""
    store, sweep = pl.store, pl.sweep
    if store.exists(layout.SPEC):
        old = yaml.safe_load(store.read_bytes(layout.SPEC))
        new = sweep.to_yaml_dict()
        if {k: v for k, v in old.items() if k != "storage"} != {k: v for k, v in new.items() if k != "storage"}:
            raise Refused([f"storage: {store.root} already holds a different sweep named "
                           f"'{sweep.name}'; change 'name' or use 'headsweep resume {store.root}' "
                           f"(got {store.root!r})"])
    store.write_bytes(layout.SPEC, sweep.to_yaml().encode())
    store.write_json(layout.GRID, {
        "stage_a": [{"key": s.key, "name": trial_name(s)} for s in pl.stage_a],
        "stage_b": [{"key": s.key, "name": trial_name(s), "stage_a_key": s.finetune.key} for s in pl.stage_b],
    })


def load_saved_sweep(sweep_dir: str) -> Sweep:
    """The resolved sweep a directory was started with (its spec.yaml)."""
    store = Store(sweep_dir)
    if not store.exists(layout.SPEC):
        raise _not_a_sweep(sweep_dir, layout.SPEC)
    try:
        raw = yaml.safe_load(store.read_bytes(layout.SPEC))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        raise _damaged(layout.SPEC, e, sweep_dir)
    p = Problems()
    sweep = parse(raw, p)
    if sweep is None:
        raise Refused([f"SWEEP_DIR/{layout.SPEC}: {line}" for line in p.lines])
    return sweep


def read_grid(store: Store) -> dict:
    if not store.exists(layout.GRID):
        raise _not_a_sweep(store.root, layout.GRID)
    try:
        g = store.read_json(layout.GRID)
        g["stage_a"], g["stage_b"]
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise _damaged(layout.GRID, e, store.root)
    return g


# ---------------------------------------------------------------------------- the driver

def mark_driver(store: Store) -> None:
    store.write_json(layout.DRIVER, {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})


def unmark_driver(store: Store) -> None:
    if store.exists(layout.DRIVER):
        store.remove(layout.DRIVER)


def driver_alive(store: Store) -> bool:
    if not store.exists(layout.DRIVER):
        return False
    d = store.read_json(layout.DRIVER)
    if d.get("host") != socket.gethostname():
        return True  # cannot tell for another machine: assume it runs
    try:
        os.kill(int(d["pid"]), 0)
        return True
    except (OSError, ValueError, KeyError):
        return False


# ---------------------------------------------------------------------------- analysis input

def local_copy(sweep_dir: str, to: str | None = None) -> str:
    """The sweep directory itself, or (object stores) a local copy of everything but checkpoints."""
    store = Store(sweep_dir)
    if not store.exists(layout.RESULTS) and not store.exists(layout.SPEC):
        raise _not_a_sweep(sweep_dir, f"{layout.RESULTS} or {layout.SPEC}")
    if store.local is not None:
        return str(store.local)
    dest = Path(to) if to else Path("sweeps") / parent_and_name(store.root)[1]
    store.download(list(layout.ANALYSIS_INPUTS), dest)
    print(f"headsweep: copied {store.root} (without checkpoints) to {dest}", file=sys.stderr)
    return str(dest)
