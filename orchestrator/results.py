"""Per-trial outputs -> the sweep's tables (results.parquet/.csv, importance.parquet).

The tables are always rebuilt from ``trials/<trial_key>/result.json`` (+ importance), so a
rebuild gives the same table as the incremental writes, and a crash can never leave a row that
has no trial behind it.
"""
from __future__ import annotations

import io
import json

import pandas as pd

from orchestrator.storage import Store
from trials import layout
from trials.schema import CONTRACT_COLUMNS, IMPORTANCE_COLUMNS, RESULT_NAMES, RESULTS_SORT


def read_rows(store: Store, keys=None) -> list[dict]:
    """Every results row of the finished trials (``keys``: those trials only)."""
    rows = []
    for key in keys if keys is not None else store.listdir(layout.TRIALS):
        rel = layout.result_file(key)
        if store.exists(rel):
            rows += store.read_json(rel)["rows"]
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
    df = (pd.concat(parts)[cols].sort_values(cols[:4]).reset_index(drop=True) if parts
          else pd.DataFrame(columns=cols))
    store.write_bytes(layout.IMPORTANCE, _parquet_bytes(df))
    return df


def publish_tables(store: Store) -> None:
    rows = read_rows(store)
    write_results(store, rows)
    write_importance(store, rows)


def trial_state(store: Store, key: str) -> tuple[str, str]:
    """(state, detail) of one trial: done / errored / running / pending."""
    if store.exists(layout.result_file(key)):
        return "done", ""
    if store.exists(layout.error_file(key)):
        err = store.read_json(layout.error_file(key))
        if err.get("final", False) or not store.exists(layout.status_file(key)):
            return "errored", err.get("error", "")
        status = store.read_json(layout.status_file(key))
        if status.get("attempt", 0) <= err.get("attempt", 0):
            return "errored", err.get("error", "")
    if store.exists(layout.status_file(key)):
        return "running", json.dumps(store.read_json(layout.status_file(key)).get("host", ""))
    return "pending", ""


def finalize_errors(store: Store, specs: list) -> list[str]:
    """Mark trials that ended without a result as finally errored; return their keys."""
    errored = []
    for s in specs:
        if not store.exists(layout.result_file(s.key)) and store.exists(layout.error_file(s.key)):
            err = store.read_json(layout.error_file(s.key))
            store.write_json(layout.error_file(s.key), err | {"final": True})
            errored.append(s.key)
    return errored
