"""Damaged files: moved to ``SWEEP_DIR/quarantine/`` with one warning line, never a traceback.

A result.json, status.json or error.json that cannot be read (a disk that filled up, a copy cut
short, a hand edit) would otherwise break every later run, or count a trial as done that is not.
``read_json`` reads one; if it is damaged, the driver moves it aside (``quarantine/<path>.<time>``)
and the caller treats it as absent: the trial counts as not run and is computed again. Readers
that do not hold the lease (``headsweep status``) pass ``move=False`` and only skip it.
"""
from __future__ import annotations

import json
import sys
import time

from headsweep.orchestrator.storage import Store
from headsweep.trials import layout


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + f"-{time.time_ns() % 1_000_000_000:09d}"


def keep(store: Store, rel: str, data: bytes, out=None, reason: str = "unreadable") -> str:
    """Write ``data`` (a damaged file's bytes) into quarantine/; one warning line; its path."""
    dest = layout.quarantined(rel, _stamp())
    store.write_bytes(dest, data)
    print(f"headsweep: warning: {rel} was {reason}; moved to {dest}", file=out or sys.stderr, flush=True)
    return dest


def move(store: Store, rel: str, reason: str = "unreadable", out=None) -> str | None:
    """Move a damaged file into quarantine/ (one warning line); None if it vanished meanwhile."""
    try:
        data = store.read_bytes(rel)
    except OSError:
        data = b""
    if not store.exists(rel):
        return None
    dest = keep(store, rel, data, out, reason)
    store.remove(rel)
    return dest


def read_json(store: Store, rel: str, *, need: tuple = (), move_damaged: bool = True, out=None):
    """The JSON object at ``rel``; None if absent or damaged (not JSON, not an object, or lacking a
    ``need``ed key). A damaged file is moved to quarantine/ when ``move_damaged``."""
    try:
        data = store.read_bytes(rel)
    except FileNotFoundError:
        return None
    except OSError:
        if not store.exists(rel):
            return None
        raise
    try:
        obj = json.loads(data)
        if not isinstance(obj, dict) or any(k not in obj for k in need):
            raise ValueError("not the expected object")
        return obj
    except (ValueError, UnicodeDecodeError) as e:
        if move_damaged:
            keep(store, rel, data, out, f"unreadable ({type(e).__name__})")
            store.remove(rel)
        return None
