"""Per-trial outputs -> the sweep's tables (results.parquet/.csv, importance.parquet).

The tables are always rebuilt from ``trials/<trial_key>/result.json`` (+ importance), so a
rebuild gives the same table as the incremental writes, and a crash can never leave a row that
has no trial behind it.
"""
from __future__ import annotations

import io
import json

import pandas as pd

from headsweep.orchestrator import faults
from headsweep.orchestrator.quarantine import read_json
from headsweep.orchestrator.storage import Store
from headsweep.trials import layout
from headsweep.trials.schema import CONTRACT_COLUMNS, IMPORTANCE_COLUMNS, RESULT_NAMES, RESULTS_SORT


def grid_keys(store: Store) -> list[str] | None:
    """Every trial key of the sweep's grid (grid.json); None if there is no readable grid."""
    g = read_json(store, layout.GRID, need=("stage_a", "stage_b"), move_damaged=False)
    if g is None:
        return None
    return [t["key"] for stage in ("stage_a", "stage_b") for t in g[stage]]


def read_result(store: Store, key: str, move_damaged: bool = True) -> dict | None:
    """A trial's result.json (``{"rows": [...]}``), or None: not there, or damaged (then moved to
    quarantine/ with a warning, and the trial counts as not run)."""
    r = read_json(store, layout.result_file(key), need=("rows",), move_damaged=move_damaged)
    if r is not None and not isinstance(r["rows"], list):
        if move_damaged:
            from headsweep.orchestrator.quarantine import move
            move(store, layout.result_file(key), "unreadable (rows is not a list)")
        return None
    return r


def read_rows(store: Store, keys=None) -> list[dict]:
    """Every results row of the finished trials of the grid (``keys``: those trials only). Folders
    under trials/ that the grid does not name (an edited sweep, another version's keys) are not
    published."""
    if keys is None:
        keys = grid_keys(store)
    rows = []
    for key in keys if keys is not None else store.listdir(layout.TRIALS):
        r = read_result(store, key)
        if r is not None:
            rows += r["rows"]
    return rows


def results_frame(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(columns=CONTRACT_COLUMNS)
    df = pd.DataFrame(rows)
    df = df.drop_duplicates("trial_key", keep="last")
    first = [c for c in RESULT_NAMES if c in df.columns]
    df = df[first + [c for c in df.columns if c not in first]]
    return df.sort_values([c for c in RESULTS_SORT if c in df.columns], kind="stable").reset_index(drop=True)


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def write_results(store: Store, rows: list[dict] | None = None) -> pd.DataFrame:
    """Rebuild and atomically write results.parquet and results.csv."""
    df = results_frame(read_rows(store) if rows is None else rows)
    store.write_bytes(layout.RESULTS, _parquet_bytes(df))
    store.write_bytes(layout.RESULTS_CSV, df.to_csv(index=False).encode())
    return df


def write_importance(store: Store, rows: list[dict] | None = None) -> pd.DataFrame:
    """importance.parquet (IMPORTANCE_COLUMNS), from the multi-head stage-A trials."""
    rows = read_rows(store) if rows is None else rows
    parts = []
    for r in rows:
        if r.get("stage") != "A" or r.get("arch") != "multi-head":
            continue
        rel = layout.trial_file(r["spec_key"], layout.TRIAL_IMPORTANCE)
        if store.exists(rel):
            imp = pd.read_parquet(io.BytesIO(store.read_bytes(rel)))
            parts.append(imp.assign(model=r["model"], seed=r["seed"]))
    cols = IMPORTANCE_COLUMNS
    order = ["model", "seed", "method", "layer", "head"]
    df = (pd.concat(parts)[cols].sort_values(order).reset_index(drop=True) if parts
          else pd.DataFrame(columns=cols))
    store.write_bytes(layout.IMPORTANCE, _parquet_bytes(df))
    return df


def publish_tables(store: Store) -> None:
    rows = read_rows(store)
    write_results(store, rows)
    faults.driver_point("publish")
    write_importance(store, rows)


def trial_state(store: Store, key: str) -> tuple[str, str]:
    """(state, detail) of one trial from its files alone: done / errored / running / pending.

    errored: its latest attempt raised and the driver gave up on it (``final``); a newer attempt
    (a retry, or a resume) makes it running again. running: an attempt started (status.json) and
    has not ended; whether it still runs depends on the driver (``headsweep status``)."""
    if read_result(store, key, move_damaged=False) is not None:
        return "done", ""
    status = read_json(store, layout.status_file(key), move_damaged=False)
    err = read_json(store, layout.error_file(key), move_damaged=False)
    if err is not None:
        if status is None or status.get("attempt", 0) <= err.get("attempt", 0):
            if err.get("final", False) or status is None:
                return "errored", err.get("error", "")
            return "running", err.get("error", "")  # between attempts: Ray may retry it
    if status is not None:
        return "running", json.dumps(status.get("host", ""))
    return "pending", ""


def finalize_errors(store: Store, specs: list, run_id: str | None = None) -> list[str]:
    """Mark trials of this run (``run_id``) whose last attempt errored and that have no result as
    finally errored (Ray will not retry them any more); return their keys."""
    errored = []
    for s in specs:
        if store.exists(layout.result_file(s.key)):
            continue
        err = read_json(store, layout.error_file(s.key))
        if err is None:
            continue
        status = read_json(store, layout.status_file(s.key)) or {}
        if run_id is not None and status.get("run") != run_id:
            continue  # not attempted in this run (e.g. the run was stopped first)
        if status.get("attempt", 0) <= err.get("attempt", 0):
            store.write_json(layout.error_file(s.key), err | {"final": True})
            errored.append(s.key)
    return errored
