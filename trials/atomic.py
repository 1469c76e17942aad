"""Atomic file writes: a reader, or a crashed run, never sees half a file.

The one helper every local write goes through (trial outputs, the sweep directory on a local
path or NFS, the analysis): write to a temporary name in the same directory, then rename.
A failed write removes its temporary file and leaves the old file in place.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then rename the temporary file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def json_bytes(obj) -> bytes:
    """The JSON form of every small file headsweep writes (sorted keys: stable diffs)."""
    return json.dumps(obj, indent=1, sort_keys=True, default=str).encode()


def write_json(path, obj) -> Path:
    return write_bytes(path, json_bytes(obj))


def write_parquet(path, df) -> Path:
    return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, before any thread writes files
    os.umask(mask)
    return mask


_UMASK = _read_umask()
