"""Sweep file -> a validated ``Plan``: the resolved sweep, its trial grid and its directory.

Validation finishes before anything is created: a sweep with problems raises ``Refused`` with
one line per problem (the CLI prints them and exits 2), starts no Ray and leaves no directory.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from importlib import resources as importlib_resources
from pathlib import Path

from headsweep.orchestrator import checks, grid, tracking
from headsweep.orchestrator.readers import Problems, load_yaml
from headsweep.orchestrator.storage import Store, is_uri, join, open_store, parent_and_name
from headsweep.orchestrator.sweep import Sweep, parse
from headsweep.trials.errors import UserError

DEMO_CONFIG = "demo.yaml"   # package data of orchestrator (configs/demo.yaml links to it)


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
    resumed: bool = False     # planned from a sweep directory's spec.yaml (headsweep resume)


def demo_path() -> Path:
    return Path(str(importlib_resources.files("headsweep.orchestrator") / DEMO_CONFIG))


def sweep_dir_of(sweep: Sweep, storage: str | None) -> str:
    base = storage or sweep.storage
    return join(base, sweep.name) if is_uri(base) else str(Path(os.path.expanduser(base)) / sweep.name)


def read_sweep(raw_or_path) -> Sweep:
    """A sweep file (path) or its parsed YAML (dict) -> ``Sweep``; structure and types only."""
    p = Problems()
    raw = load_yaml(raw_or_path, p) if isinstance(raw_or_path, (str, Path)) else raw_or_path
    sweep = parse(raw, p) if not p else None
    if sweep is None:
        raise Refused(p.lines)
    return sweep


def plan_sweep(sweep: Sweep, *, storage: str | None = None, local: dict | None = None) -> Plan:
    """Check everything that needs the outside world and build the grid; raises ``Refused``.

    ``local``: {"cpus": N, "gpus": N, "cluster": bool} checks per-trial resources against the
    machine (refused locally, a warning on a cluster).
    """
    p = Problems()
    heads = checks.check_models(sweep, p)
    checks.check_importance(sweep, p)
    checks.check_data(sweep, p)
    store_key = "--storage" if storage else "storage"
    checks.check_storage(storage or sweep.storage, p, key=store_key)
    tracking.check(sweep.tracking, p)
    if local is not None:
        checks.check_resources(sweep, p, cpus=local["cpus"], gpus=local["gpus"], cluster=local["cluster"])
    if p:
        raise Refused(p.lines)
    notes = p.warnings + grid.duplicate_k_notes(sweep, heads)
    try:
        store = open_store(sweep_dir_of(sweep, storage), key=store_key)
    except UserError as e:
        raise Refused([str(e)])
    return Plan(sweep, heads, grid.stage_a(sweep), grid.stage_b(sweep, heads), store, notes)


def plan_file(raw_or_path, *, storage: str | None = None, local: dict | None = None) -> Plan:
    return plan_sweep(read_sweep(raw_or_path), storage=storage, local=local)


def resume_plan(sweep_dir: str, local: dict | None) -> Plan:
    """The plan of an existing sweep directory, from its saved (already resolved) spec."""
    from headsweep.orchestrator.sweepdir import load_saved_sweep
    sweep = load_saved_sweep(sweep_dir)   # refuses an unreachable store or a credential in the URI
    storage, name = parent_and_name(Store(sweep_dir).root)
    sweep = dataclasses.replace(sweep, name=name)  # the directory may be renamed
    return dataclasses.replace(plan_sweep(sweep, storage=storage, local=local), resumed=True)
