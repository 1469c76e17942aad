"""``headsweep status``: per-stage counts (done / running / pending / errored) from the sweep
directory alone, and the errored trials' errors."""
from __future__ import annotations

import json

from orchestrator.results import trial_state
from orchestrator.storage import Store
from orchestrator.sweepdir import driver_alive, read_grid
from trials import layout

STATES = ("done", "running", "pending", "errored", "interrupted", "skipped")


def sweep_status(sweep_dir: str) -> dict:
    store = Store(sweep_dir)
    g = read_grid(store)
    alive = driver_alive(store)
    done_a = set()
    report = {"sweep_dir": store.root, "driver_running": alive, "stages": {}, "errors": []}
    for stage in ("stage_a", "stage_b"):
        counts = dict.fromkeys(STATES, 0)
        for t in g[stage]:
            state, detail = trial_state(store, t["key"])
            if state == "running" and not alive:
                state = "interrupted"
            if state == "pending" and stage == "stage_b" and not alive and t["stage_a_key"] not in done_a \
                    and store.exists(layout.error_file(t["stage_a_key"])):
                state = "skipped"
            if state == "done" and stage == "stage_a":
                done_a.add(t["key"])
            counts[state] += 1
            if state == "errored":
                report["errors"].append({"trial": t["name"], "key": t["key"], "error": detail})
        report["stages"][stage] = counts
    report["results"] = store.uri(layout.RESULTS) if store.exists(layout.RESULTS) else None
    report["notebook"] = store.uri(layout.NOTEBOOK) if store.exists(layout.NOTEBOOK) else None
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


def status_json(r: dict) -> str:
    return json.dumps(r, indent=1, default=str)
