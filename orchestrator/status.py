"""``headsweep status``: per-stage counts (done / running / pending / errored) from the sweep
directory alone, and the errored trials' errors."""
from __future__ import annotations

import json

from headsweep.orchestrator.plan import Refused
from headsweep.orchestrator.results import trial_state
from headsweep.orchestrator.storage import open_store, redact
from headsweep.orchestrator.sweepdir import driver_info, read_grid
from headsweep.trials.errors import UserError
from headsweep.trials import layout

STATES = ("done", "running", "pending", "errored", "interrupted", "skipped")


def sweep_status(sweep_dir: str) -> dict:
    """Reads only: a damaged file is reported (and skipped), never moved."""
    try:
        store = open_store(sweep_dir)
    except UserError as e:
        raise Refused([str(e)])
    g = read_grid(store)
    driver = driver_info(store)
    alive = bool(driver.get("alive"))
    done_a = set()
    report = {"sweep_dir": redact(store.root), "driver_running": alive, "stages": {}, "errors": [],
              "driver": {k: driver.get(k) for k in ("pid", "host", "run", "started", "heartbeat", "why", "damaged")}
              if driver else None,
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
    report["results"] = redact(store.uri(layout.RESULTS)) if store.exists(layout.RESULTS) else None
    report["notebook"] = redact(store.uri(layout.NOTEBOOK)) if store.exists(layout.NOTEBOOK) else None
    left = sum(c["pending"] + c["interrupted"] + c["errored"] for c in report["stages"].values())
    report["resume"] = f"headsweep resume {redact(store.root)}" if left and not alive else None
    return report


def format_status(r: dict) -> str:
    d = r.get("driver") or {}
    if r.get("driver_gone"):
        state = (f"driver gone: {d.get('why') or 'its lease is stale'} (killed, crashed or lost); no trial runs; "
                 "the next run takes its lease over")
    elif r["driver_running"]:
        state = f"driver running: run {d.get('run')}, {d.get('why')}"
    else:
        state = "driver not running"
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
