"""The worker side: one trial inside a Ray worker, publishing its outputs to the sweep directory.

A trial whose ``result.json`` already exists returns its rows without recomputing (the trial key
is the cache key), so a re-run, a Ray retry or a resume never repeats finished work.
``result.json`` (``{"rows": [...]}``) is written last: its presence means every other output of
the trial is complete.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import traceback
from pathlib import Path

from headsweep.orchestrator import faults
from headsweep.orchestrator.quarantine import read_json
from headsweep.orchestrator.storage import Store, cache_root, root_digest
from headsweep.trials import layout
from headsweep.trials.spec import FinetuneSpec, PruneSpec

REPORTED = ("accuracy", "f1", "loss", "k", "heads_kept")   # what Tune shows per trial
CHECKSUM = "checkpoint_sha256"   # in a stage-A result.json, beside its rows: the weights' digest


def run_one(spec: FinetuneSpec | PruneSpec, store: Store, fault_rules: str = "",
            node_id: str | None = None, run_id: str | None = None) -> list[dict]:
    """Run (or fetch the cached result of) one trial and publish its outputs; returns its rows.
    No Ray here (``node_id``: the Ray node the caller runs on; ``run_id``: the driver run; both
    for the record in status.json)."""
    from headsweep.orchestrator.results import read_result
    done = read_result(store, spec.key)
    if done is not None:
        return done["rows"]
    status = layout.status_file(spec.key)
    attempt = (read_json(store, status) or {}).get("attempt", 0) + 1
    where = {"host": socket.gethostname(), "node_id": node_id}
    store.write_json(status, {"state": "running", "attempt": attempt, "pid": os.getpid(),
                              "started": time.time(), "run": run_id, **where})
    try:
        faults.maybe_inject(spec, store, fault_rules)
        extra = {}
        with tempfile.TemporaryDirectory(prefix="headsweep-") as tmp:
            out = Path(tmp) / "out"
            if isinstance(spec, PruneSpec):
                from headsweep.trials.run import run_prune
                ckpt = checkpoint_for(store, spec.finetune.key)
                rows = run_prune(spec, ckpt, out)
                if (out / layout.PRUNED_MODEL).is_dir():
                    store.put_dir(out / layout.PRUNED_MODEL, layout.pruned_model_dir(spec.key))
            else:
                from headsweep.trials.run import run_finetune, weights_digest

                def keep(path: Path) -> None:  # the fine-tuned weights, before anything else can fail
                    _put_complete(store, path, layout.finetuned_dir(spec.key))
                    faults.maybe_inject(spec, store, fault_rules, point="finetuned")

                rows = run_finetune(spec, out, finetuned=_earlier_finetune(store, spec, Path(tmp)), on_finetuned=keep)
                extra[CHECKSUM] = weights_digest(out / layout.CHECKPOINT)
                store.put_dir(out / layout.CHECKPOINT, layout.checkpoint_dir(spec.key))
                store.put_file(out / layout.TRIAL_IMPORTANCE, layout.trial_file(spec.key, layout.TRIAL_IMPORTANCE))
            for row in rows:
                store.put_file(out / layout.predictions_file(row["trial_key"]),
                               layout.predictions_file(row["trial_key"]))
        rows = [row | {"attempt": attempt, **where} for row in rows]
        # last: its presence means the trial is complete
        store.write_json(layout.result_file(spec.key), {"rows": rows, **extra})
        if isinstance(spec, FinetuneSpec) and store.exists(layout.finetuned_dir(spec.key)):
            store.remove(layout.finetuned_dir(spec.key))  # the checkpoint holds the same weights now
        return rows
    except BaseException as e:
        store.write_json(layout.error_file(spec.key), {"error": f"{type(e).__name__}: {e}", "attempt": attempt,
                                                       "traceback": traceback.format_exc()[-4000:]})
        raise


def _put_complete(store: Store, local: Path, rel: str) -> None:
    """Publish a directory whose fine-tuning statistics file marks it complete: locally one rename;
    on an object store every other file first, that one last."""
    if store.local is not None:
        store.put_dir(local, rel)
        return
    files = sorted(p for p in local.rglob("*") if p.is_file())
    for f in sorted(files, key=lambda f: f.name == layout.CKPT_TRAIN):
        store.write_bytes(f"{rel}/{f.relative_to(local).as_posix()}", f.read_bytes())


def _earlier_finetune(store: Store, spec: FinetuneSpec, tmp: Path) -> Path | None:
    """The fine-tuned weights an earlier attempt of this trial kept (``finetuned_dir``), if
    complete: a local directory to load them from; None: fine-tune."""
    rel = layout.finetuned_dir(spec.key)
    if read_json(store, f"{rel}/{layout.CKPT_TRAIN}", need=("train_steps",)) is None:
        return None
    return store.get_dir(rel, tmp / layout.FINETUNED)


# A worker loads one stage-A checkpoint for many stage-B trials: its digest is checked once per
# (path, digest, files' sizes and mtimes) in this process.
_VERIFIED: set = set()


def _stamp(path: Path) -> tuple:
    return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(Path(path).glob("*.safetensors")))


def _matches(path: Path, digest: str | None) -> bool:
    from headsweep.trials.run import weights_digest
    if not digest:
        return True  # a result written before checksums were recorded
    stamp = (str(path), digest, _stamp(path))
    if stamp in _VERIFIED:
        return True
    if weights_digest(path) != digest:
        return False
    _VERIFIED.add(stamp)
    return True


def checkpoint_for(store: Store, key: str) -> Path:
    """A local directory holding the stage-A checkpoint ``key``, checked against the digest its
    result recorded. Object stores: a cache keyed by (sweep directory, key), so two sweeps with
    the same stage-A spec never share a copy; a copy that does not match is fetched again."""
    from headsweep.orchestrator.results import read_result
    digest = (read_result(store, key, move_damaged=False) or {}).get(CHECKSUM)
    rel = layout.checkpoint_dir(key)
    if store.local is not None:
        path = store.get_dir(rel, Path())
        if not _matches(path, digest):
            raise RuntimeError(f"checkpoint {rel} does not match the digest its stage-A result recorded "
                               f"(damaged or replaced); delete the stage-A trial's {layout.RESULT} to recompute it")
        return path
    cache = cache_root() / layout.CHECKPOINTS / root_digest(store.root) / key
    path = store.get_dir(rel, cache)
    if not _matches(path, digest):
        shutil.rmtree(cache, ignore_errors=True)  # a damaged or stale copy: fetch it again, once
        path = store.get_dir(rel, cache)
        if not _matches(path, digest):
            raise RuntimeError(f"checkpoint {store.uri(rel)} does not match the digest its stage-A result "
                               f"recorded (damaged or replaced); delete the stage-A trial's {layout.RESULT} "
                               "to recompute it")
    return path


def trainable(config: dict, trials: dict) -> None:
    """The Ray Tune function trainable: one trial (``trials[config["key"]]``), reported once."""
    import ray
    import torch
    from ray import tune
    trial = trials[config["key"]]
    # Relative data/tokenizer paths mean the user's directory: the driver's (same machine) or the
    # job's working dir (cluster), never Ray's per-trial directory.
    cwd = trial.get("cwd")
    os.chdir(cwd if cwd and os.path.isdir(cwd) else os.environ.get("TUNE_ORIG_WORKING_DIR", os.getcwd()))
    torch.set_num_threads(max(1, int(trial["threads"])))
    quiet_libraries()
    node_id = ray.get_runtime_context().get_node_id()
    rows = run_one(trial["spec"], Store(trial["sweep"]), trial.get("faults", ""), node_id=node_id,
                   run_id=trial.get("run"))
    last = rows[-1]  # Tune shows one row per trial: the last (for iterative, the largest K)
    tune.report({k: last[k] for k in REPORTED} | {"trial_key": last["trial_key"], "rows": len(rows)})


def quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
