"""An existing sweep directory: claiming it for a sweep (under the driver's lease), its saved
spec and provenance, who drives it, and a local copy of an object-store sweep for the analysis."""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import yaml

from headsweep.orchestrator import provenance
from headsweep.orchestrator.grid import trial_name
from headsweep.orchestrator.plan import Plan, Refused
from headsweep.orchestrator.readers import NoAliasDumper, Problems, strict_yaml
from headsweep.orchestrator.storage import Store, cache_root, open_store, parent_and_name, redact, root_digest
from headsweep.orchestrator.sweep import PROVENANCE, Sweep, parse
from headsweep.trials import layout
from headsweep.trials.errors import UserError


def _not_a_sweep(sweep_dir: str, missing: str) -> Refused:
    return Refused([f"SWEEP_DIR: no {missing} in {redact(sweep_dir)}; is it a headsweep sweep directory? "
                    f"(got {redact(sweep_dir)!r})"])


def _damaged(what: str, e: Exception, sweep_dir: str) -> Refused:
    return Refused([f"SWEEP_DIR/{what}: unreadable ({type(e).__name__}); the sweep directory is "
                    f"damaged (got {redact(sweep_dir)!r})"])


def _read_spec(store: Store) -> dict:
    """spec.yaml as a mapping (anchors and aliases refused); raises what made it unreadable."""
    raw = strict_yaml(store.read_bytes(layout.SPEC))
    if not isinstance(raw, dict):
        raise ValueError(f"not a mapping but {type(raw).__name__}")
    return raw


def _parse_saved(raw: dict, sweep_dir: str) -> tuple[Sweep, dict | None]:
    """(the saved sweep, every default filled in; its recorded provenance)."""
    recorded = raw.get(PROVENANCE)
    p = Problems()
    sweep = parse({k: v for k, v in raw.items() if k != PROVENANCE}, p)
    if sweep is None:
        raise Refused([f"SWEEP_DIR/{layout.SPEC}: {p.lines[0]} (this headsweep cannot read the spec "
                       f"saved in {redact(sweep_dir)})"])
    return sweep, recorded if isinstance(recorded, dict) else None


def _comparable(sweep: Sweep) -> dict:
    """What must be equal for two sweeps to share a directory: the resolved spec (defaults filled
    in, so a key added by an upgrade with its default compares equal) without name and storage."""
    return {k: v for k, v in sweep.to_yaml_dict().items() if k not in ("name", "storage")}


def claim_directory(pl: Plan, *, allow_drift: bool = False, run_id: str | None = None, out=None) -> None:
    """Under the lease: refuse to mix two different sweeps, or changed inputs, in one directory;
    write spec.yaml (with the provenance) and grid.json. A damaged spec.yaml is moved to
    quarantine/ (one warning) and written anew."""
    store, sweep = pl.store, pl.sweep
    now = provenance.current(sweep)
    recorded = None
    if store.exists(layout.SPEC):
        try:
            raw = _read_spec(store)
        except (yaml.YAMLError, UnicodeDecodeError, ValueError) as e:
            from headsweep.orchestrator.quarantine import move
            move(store, layout.SPEC, f"unreadable ({type(e).__name__})", out=out)
            raw = None
        if raw is not None:
            old, recorded = _parse_saved(raw, store.root)
            a, b = _comparable(old), _comparable(sweep)
            if a != b:
                keys = ", ".join(k for k in b if a.get(k) != b.get(k))
                advice = "" if getattr(pl, "resumed", False) else \
                    f" or 'headsweep resume {redact(store.root)}' to continue the sweep it holds"
                raise Refused([f"storage: {redact(store.root)} already holds a different sweep named "
                               f"'{sweep.name}' (it differs in: {keys}); change 'name'{advice} "
                               f"(got {redact(store.root)!r})"])
            found = provenance.changes(recorded, now)
            if found and not allow_drift:
                raise Refused([provenance.drift_line(found, redact(store.root))])
            if found:
                provenance.record_drift(store, found, run_id)
                print(f"headsweep: note: going on with changed inputs (--allow-drift); recorded in {layout.DRIFT}",
                      file=out or sys.stderr)
    spec = sweep.to_yaml_dict() | {PROVENANCE: provenance.merged(recorded, now)}
    store.write_bytes(layout.SPEC, yaml.dump(spec, Dumper=NoAliasDumper, sort_keys=False).encode())
    store.write_json(layout.GRID, {
        "stage_a": [{"key": s.key, "name": trial_name(s)} for s in pl.stage_a],
        "stage_b": [{"key": s.key, "name": trial_name(s), "stage_a_key": s.finetune.key} for s in pl.stage_b],
    })


def load_saved_sweep(sweep_dir: str) -> Sweep:
    """The resolved sweep a directory was started with (its spec.yaml)."""
    try:
        store = open_store(sweep_dir)
    except UserError as e:
        raise Refused([str(e)])
    if not store.exists(layout.SPEC):
        raise _not_a_sweep(sweep_dir, layout.SPEC)
    try:
        raw = _read_spec(store)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, OSError) as e:
        raise Refused([f"SWEEP_DIR/{layout.SPEC}: unreadable ({type(e).__name__}); run the sweep file again "
                       f"with 'headsweep run SWEEP.yaml --storage {redact(parent_and_name(store.root)[0])}' "
                       f"(the damaged file is then moved to {layout.QUARANTINE}/) (got {redact(sweep_dir)!r})"])
    return _parse_saved(raw, sweep_dir)[0]


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


def driver_info(store: Store) -> dict:
    """Who drives this sweep, from its lease (``orchestrator.lease``): pid, host, run, started,
    ``alive`` (the lease is held: its process runs, or its heartbeat is fresh) and ``why``; for a
    dead driver of this host, ``leftovers``: processes of its Ray session still running. Empty:
    no driver."""
    from headsweep.orchestrator.lease import read_lease
    lease = read_lease(store)
    if lease is None:
        return {}
    if "damaged" in lease:
        return {"alive": False, "damaged": lease["damaged"], "why": f"{layout.LEASE} is unreadable"}
    d = {"pid": lease.get("pid"), "host": lease.get("host"), "run": lease.get("run_id"),
         "started": lease.get("started"), "heartbeat": lease.get("heartbeat"), "alive": lease["held"],
         "why": lease["why"], "ray_session": lease.get("ray_session")}
    if not d["alive"] and d["ray_session"] and d["host"] == socket.gethostname():
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


def clean_debris(store: Store, before: float) -> None:
    """Temporary files a killed driver or trial left half-written (local sweeps; object-store
    writes are single PUTs and leave none). Only the lease holder calls this, and only files older
    than its lease (``before``) go: nothing another process may still be writing."""
    if store.local is None or not store.local.is_dir():
        return
    import shutil
    for pattern in (".*.tmp", f"{layout.TRIALS}/*/.*.tmp", f"{layout.CHECKPOINTS}/.*.tmp"):
        for p in store.local.glob(pattern):
            try:
                if p.lstat().st_mtime >= before:
                    continue
            except OSError:
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- analysis input

def remote_copy_dir(sweep_dir: str) -> Path:
    """Where ``headsweep analyze s3://...`` copies a remote sweep: a cache folder keyed by the URI
    (``<cache>/remote/<digest>/<name>``), never ./sweeps/<name>, where local sweeps live."""
    return cache_root() / "remote" / root_digest(Store(sweep_dir).root) / parent_and_name(sweep_dir)[1]


def local_copy(sweep_dir: str, to: str | None = None) -> str:
    """The sweep directory itself, or (object stores) a local copy of everything but checkpoints."""
    try:
        store = open_store(sweep_dir)
    except UserError as e:
        raise Refused([str(e)])
    if not store.exists(layout.RESULTS) and not store.exists(layout.SPEC):
        raise _not_a_sweep(sweep_dir, f"{layout.RESULTS} or {layout.SPEC}")
    if store.local is not None:
        return str(store.local)
    dest = Path(to) if to else remote_copy_dir(store.root)
    store.download(list(layout.ANALYSIS_INPUTS), dest)
    print(f"headsweep: copied {redact(store.root)} (without checkpoints) to {dest}", file=sys.stderr)
    return str(dest)
