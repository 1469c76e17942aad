"""Shared helpers for the benchmarks: machine info, data paths, the JSON line.

Every benchmark prints ONE JSON object as its last stdout line. Performance claims are ratios of
two things measured in the same run (interleaved where possible), never absolute timings: the
machines these run on are shared and noisy.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]   # headsweep itself is imported as installed (pip install -e .)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

SHARED_DATA = ROOT.parent / "shared" / "data"   # ../shared/data relative to the repo root


def sst2_dir() -> Path | None:
    """The real SST-2 TSVs (train.tsv / validation.tsv) when present, else None."""
    d = SHARED_DATA / "sst2"
    return d if (d / "train.tsv").exists() and (d / "validation.tsv").exists() else None


def tokenizer_dir(name: str) -> Path | None:
    d = SHARED_DATA / "tokenizers" / name
    return d if d.is_dir() and any(d.iterdir()) else None


def quiet() -> None:
    """No progress bars or chatty warnings: the last stdout line must be the JSON object."""
    warnings.filterwarnings("ignore")
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # transformers missing: the caller will fail on its own import
        pass
    import logging
    for name in ("ray", "ray.tune", "ray.train", "accelerate", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import torch
    info = {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    for pkg in ("transformers", "accelerate", "ray"):
        try:
            from importlib import metadata
            info[pkg] = metadata.version(pkg)
        except Exception:
            info[pkg] = None
    return info


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def median(xs):
    return statistics.median(xs) if xs else None


def emit(result: dict) -> None:
    """Print the one JSON line (last on stdout)."""
    sys.stdout.flush()
    sys.stderr.flush()
    print(json.dumps(result, default=_jsonable), flush=True)


def _jsonable(x):
    try:
        import numpy as np
        if isinstance(x, np.generic):
            return x.item()
    except ImportError:
        pass
    if isinstance(x, Path):
        return str(x)
    return str(x)


def finish(result: dict, quick: bool, t_start: float) -> None:
    """Add the run's mode, duration, machine and date, then print the JSON line."""
    result.update({"quick": quick, "seconds": round(time.perf_counter() - t_start, 1),
                   "machine": machine(), "date": now_utc()})
    emit(result)


class Clock:
    """``with Clock() as c: ...; c.s`` -> seconds (perf_counter)."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
        return False


def log(*args) -> None:
    """Progress to stderr (stdout's last line is reserved for the JSON object)."""
    print("[bench]", *args, file=sys.stderr, flush=True)
