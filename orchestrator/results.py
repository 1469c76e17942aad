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

CONTRACT_COLUMNS = ["model", "strategy", "k", "k_fraction", "seed", "recovery_epochs", "accuracy",
                    "f1", "loss", "n_eval", "heads_total", "heads_kept", "heads_removed", "trial_key"]
SORT = ["model", "arch", "strategy", "recovery_epochs", "k", "seed", "trial_key"]


def trial_dir(key: str) -> str:
    return f"trials/{key}"


def read_rows(store: Store, keys=None) -> list[dict]:
    rows = []
    for key in keys if keys is not None else store.listdir("trials"):
        rel = f"{trial_dir(key)}/result.json"
        if store.exists(rel):
            rows.append(store.read_json(rel))
    return rows


def results_frame(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(columns=CONTRACT_COLUMNS)
    df = pd.DataFrame(rows)
    df = df.drop_duplicates("trial_key", keep="last")
    first = [c for c in CONTRACT_COLUMNS + ["arch", "variant", "arch_init", "per_layer", "k_requested",
                                            "stage", "stage_a_key"] if c in df.columns]
    df = df[first + [c for c in df.columns if c not in first]]
    return df.sort_values([c for c in SORT if c in df.columns], kind="stable").reset_index(drop=True)


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def write_results(store: Store, rows: list[dict] | None = None) -> pd.DataFrame:
    """Rebuild and atomically write results.parquet and results.csv."""
    df = results_frame(read_rows(store) if rows is None else rows)
    store.write_bytes("results.parquet", _parquet_bytes(df))
    store.write_bytes("results.csv", df.to_csv(index=False).encode())
    return df


def write_importance(store: Store, rows: list[dict] | None = None) -> pd.DataFrame:
    """importance.parquet: model, seed, layer, head, score, score_raw (multi-head models)."""
    rows = read_rows(store) if rows is None else rows
    parts = []
    for r in rows:
        if r.get("stage") != "A" or r.get("arch") != "multi-head":
            continue
        rel = f"{trial_dir(r['trial_key'])}/importance.parquet"
        if store.exists(rel):
            imp = pd.read_parquet(io.BytesIO(store.read_bytes(rel)))
            parts.append(imp.assign(model=r["model"], seed=r["seed"]))
    cols = ["model", "seed", "layer", "head", "score", "score_raw"]
    df = (pd.concat(parts)[cols].sort_values(cols[:4]).reset_index(drop=True) if parts
          else pd.DataFrame(columns=cols))
    store.write_bytes("importance.parquet", _parquet_bytes(df))
    return df


def trial_state(store: Store, key: str) -> tuple[str, str]:
    """(state, detail) of one trial: done / errored / running / pending."""
    d = trial_dir(key)
    if store.exists(f"{d}/result.json"):
        return "done", ""
    if store.exists(f"{d}/error.json"):
        err = store.read_json(f"{d}/error.json")
        if err.get("final", False) or not store.exists(f"{d}/status.json"):
            return "errored", err.get("error", "")
        status = store.read_json(f"{d}/status.json")
        if status.get("attempt", 0) <= err.get("attempt", 0):
            return "errored", err.get("error", "")
    if store.exists(f"{d}/status.json"):
        return "running", json.dumps(store.read_json(f"{d}/status.json").get("host", ""))
    return "pending", ""
