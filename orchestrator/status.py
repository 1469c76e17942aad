"""``headsweep status``: per-stage counts (done / running / pending / errored) from the sweep
directory alone, and the errored trials' errors."""
from __future__ import annotations

import json

from headsweep.orchestrator.results import trial_state
from headsweep.orchestrator.storage import Store
from headsweep.orchestrator.sweepdir import driver_info, read_grid
from headsweep.trials import layout

STATES = ("done", "running", "pending", "errored", "interrupted", "skipped")


def sweep_status(sweep_dir: str) -> dict:
    store = Store(sweep_dir)
    g = read_grid(store)
    driver = driver_info(store)
    alive = bool(driver.get("alive"))
    done_a = set()
    report = {"sweep_dir": store.root, "driver_running": alive, "stages": {}, "errors": [],
              "driver": {k: driver.get(k) for k in ("pid", "host", "run", "started")} if driver else None,
              "driver_gone": bool(driver) and not alive,
              "leftovers": driver.get("leftovers", []) if driver else []}
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
    left = sum(c["pending"] + c["interrupted"] + c["errored"] for c in report["stages"].values())
    report["resume"] = f"headsweep resume {store.root}" if left and not alive else None
    return report


def format_status(r: dict) -> str:
    if r.get("driver_gone"):
        d = r["driver"]
        state = (f"driver gone: pid {d['pid']} on {d['host']} no longer runs (killed or crashed); "
                 "no trial runs")
    else:
        state = f"driver {'running' if r['driver_running'] else 'not running'}"
    lines = [f"sweep: {r['sweep_dir']} ({state})"]
    for stage, c in r["stages"].items():
        total = sum(c.values())
        parts = ", ".join(f"{v} {k}" for k, v in c.items() if v)
        lines.append(f"  {stage}: {total} trials: {parts or 'none'}")
    for e in r["errors"]:
        lines.append(f"  errored {e['trial']} ({e['key']}): {e['error']}")
    lines.append(f"  results: {r['results'] or 'not written yet'}")
    if r["notebook"]:
        lines.append(f"  notebook: {r['notebook']}")
    if r.get("leftovers"):
        pids = " ".join(str(p) for p, _ in r["leftovers"])
        names = ", ".join(sorted({n for _, n in r["leftovers"]}))
        lines.append(f"  the dead driver's Ray processes still run ({names}); they exit on their own within "
                     f"about two minutes, a resume works beside them, or end them now: kill {pids}")
    if r.get("resume"):
        lines.append(f"  continue with: {r['resume']}")
    return "\n".join(lines)


def status_json(r: dict) -> str:
    return json.dumps(r, indent=1, default=str)
