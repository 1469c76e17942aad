"""An existing sweep directory: claiming it for a sweep, its saved spec, the driver's presence,
and a local copy of an object-store sweep for the analysis."""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import yaml

from headsweep.orchestrator.grid import trial_name
from headsweep.orchestrator.plan import Plan, Refused
from headsweep.orchestrator.readers import Problems
from headsweep.orchestrator.storage import Store, parent_and_name
from headsweep.orchestrator.sweep import Sweep, parse
from headsweep.trials import layout


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
        # A spec written before a key existed (analysis.margin, ...) holds that key's default:
        # compare the resolved sweeps, not the files' key sets.
        saved = parse(old, Problems()) if isinstance(old, dict) else None
        old = saved.to_yaml_dict() if saved is not None else old
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

def new_run_id(store: Store) -> str:
    """A sortable id for one driver run (names its Tune experiments and logs)."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"


def refuse_if_driven(store: Store) -> None:
    """Two drivers on one directory would run the same trials twice: refuse while another lives on
    this host. One recorded on another host cannot be checked (it may be a lost head node): warn."""
    d = driver_info(store)
    if d.get("elsewhere"):
        print(f"headsweep: note: {layout.DRIVER} names a driver on {d.get('host')} (pid {d.get('pid')}); "
              "if it still runs, stop it: two drivers would run the same trials", file=sys.stderr)
    elif d.get("alive") and d.get("pid") != os.getpid():
        raise Refused([f"SWEEP_DIR: a driver (pid {d.get('pid')} on {d.get('host')}) is running this "
                       f"sweep; wait for it, or stop it first (got {store.root!r})"])


def mark_driver(store: Store, run_id: str, ray_info: dict | None = None) -> None:
    """``driver.json``: who runs this sweep now, and (local Ray) its Ray session, so that
    ``headsweep status`` can point out what a killed driver left running."""
    store.write_json(layout.DRIVER, {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                     "run": run_id, **(ray_info or {})})


def unmark_driver(store: Store) -> None:
    if store.exists(layout.DRIVER):
        store.remove(layout.DRIVER)


def driver_info(store: Store) -> dict:
    """driver.json plus ``alive`` (its pid runs; on another host we cannot tell, so True) and,
    for a dead local driver, ``leftovers``: processes of its Ray session still running."""
    if not store.exists(layout.DRIVER):
        return {}
    try:
        d = store.read_json(layout.DRIVER)
    except (ValueError, OSError):
        return {}
    if d.get("host") != socket.gethostname():
        return d | {"alive": True, "elsewhere": True}
    try:
        os.kill(int(d["pid"]), 0)
        alive = True
    except (OSError, ValueError, KeyError):
        alive = False
    d["alive"] = alive
    if not alive and d.get("ray_session"):
        d["leftovers"] = session_processes(d["ray_session"])
    return d


def driver_alive(store: Store) -> bool:
    return bool(driver_info(store).get("alive"))


def session_processes(session_dir: str) -> list[tuple[int, str]]:
    """(pid, name) of the processes on this host that belong to a Ray session: its path is on
    their command line (gcs, raylet) or among their open files (Ray's agents and workers rename
    themselves ``ray::...`` but keep their session's log files open)."""
    name = os.path.basename(session_dir.rstrip("/"))
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        if not name or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            ours = name in cmd or any(name in os.readlink(fd) for fd in (entry / "fd").iterdir())
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if ours and cmd:  # an empty command line: a zombie, already ended
            found.append((int(entry.name), cmd.split()[0].rsplit("/", 1)[-1]))
    return found


def clean_debris(store: Store) -> None:
    """Temporary files a killed driver or trial left half-written (local sweeps; object-store
    writes are single PUTs and leave none). Called only when no other driver runs the sweep."""
    if store.local is None or not store.local.is_dir():
        return
    for pattern in (".*.tmp", f"{layout.TRIALS}/*/.*.tmp", f"{layout.CHECKPOINTS}/.*.tmp"):
        for p in store.local.glob(pattern):
            if p.is_dir():
                import shutil
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


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
