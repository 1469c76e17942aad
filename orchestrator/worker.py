"""The worker side: one trial inside a Ray worker, publishing its outputs to the sweep directory.

A trial whose ``result.json`` already exists returns its rows without recomputing (the trial key
is the cache key), so a re-run, a Ray retry or a resume never repeats finished work.
``result.json`` (``{"rows": [...]}``) is written last: its presence means every other output of
the trial is complete.
"""
from __future__ import annotations

import os
import socket
import tempfile
import time
import traceback
from pathlib import Path

from headsweep.orchestrator import faults
from headsweep.orchestrator.storage import Store
from headsweep.trials import layout
from headsweep.trials.spec import FinetuneSpec, PruneSpec

REPORTED = ("accuracy", "f1", "loss", "k", "heads_kept")   # what Tune shows per trial
CACHE = Path(os.environ.get("HEADSWEEP_CACHE", Path.home() / ".cache" / "headsweep"))


def run_one(spec: FinetuneSpec | PruneSpec, store: Store, fault_rules: str = "",
            node_id: str | None = None, run_id: str | None = None) -> list[dict]:
    """Run (or fetch the cached result of) one trial and publish its outputs; returns its rows.
    No Ray here (``node_id``: the Ray node the caller runs on; ``run_id``: the driver run; both
    for the record in status.json)."""
    if store.exists(layout.result_file(spec.key)):
        return store.read_json(layout.result_file(spec.key))["rows"]
    status = layout.status_file(spec.key)
    attempt = store.read_json(status).get("attempt", 0) + 1 if store.exists(status) else 1
    where = {"host": socket.gethostname(), "node_id": node_id}
    store.write_json(status, {"state": "running", "attempt": attempt, "pid": os.getpid(),
                              "started": time.time(), "run": run_id, **where})
    try:
        faults.maybe_inject(spec, store, fault_rules)
        with tempfile.TemporaryDirectory(prefix="headsweep-") as tmp:
            out = Path(tmp) / "out"
            if isinstance(spec, PruneSpec):
                from headsweep.trials.run import run_prune
                ft = spec.finetune
                ckpt = store.get_dir(layout.checkpoint_dir(ft.checkpoint_name), CACHE / layout.CHECKPOINTS / ft.key)
                rows = run_prune(spec, ckpt, out)
                if (out / layout.PRUNED_MODEL).is_dir():
                    store.put_dir(out / layout.PRUNED_MODEL, layout.pruned_model_dir(spec.key))
            else:
                from headsweep.trials.run import run_finetune
                rows = run_finetune(spec, out)
                store.put_dir(out / layout.CHECKPOINT, layout.checkpoint_dir(spec.checkpoint_name))
                store.put_file(out / layout.TRIAL_IMPORTANCE, layout.trial_file(spec.key, layout.TRIAL_IMPORTANCE))
            for row in rows:
                store.put_file(out / layout.predictions_file(row["trial_key"]),
                               layout.predictions_file(row["trial_key"]))
        rows = [row | {"attempt": attempt, **where} for row in rows]
        # last: its presence means the trial is complete
        store.write_json(layout.result_file(spec.key), {"rows": rows})
        return rows
    except BaseException as e:
        store.write_json(layout.error_file(spec.key), {"error": f"{type(e).__name__}: {e}", "attempt": attempt,
                                                       "traceback": traceback.format_exc()[-4000:]})
        raise


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
