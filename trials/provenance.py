"""What produced a result: library versions and the project's git hash (cached per process)."""
from __future__ import annotations

import functools
import json
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("headsweep", "torch", "transformers", "accelerate", "datasets", "ray", "tokenizers")


@functools.lru_cache(maxsize=1)
def info() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"versions": json.dumps(versions, sort_keys=True), "git_hash": git_hash()}


def git_hash() -> str:
    """HEAD of the checkout this code runs from ('+dirty' if modified); 'unknown' outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        proc = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "-q", "HEAD"],
                              capture_output=True, text=True, timeout=5)
        head = proc.stdout.strip()
        if proc.returncode or not head:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
