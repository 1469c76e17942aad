"""One trial without Ray: ``python -m trials.run trial.json``.

trial.json: ``{"spec": <FinetuneSpec or PruneSpec as a dict>, "out_dir": "...",
"checkpoint_dir": "..." (stage B: the stage-A checkpoint)}``.

Both stages write to out_dir (names: trials/layout.py) ``result.json`` = ``{"rows": [...]}`` (a
trial yields one results row, or several: iterative pruning gives one per K) and
``predictions/<row trial_key>.parquet`` per row; stage A also ``importance.parquet`` and
``checkpoint/`` (HF format, safetensors, tokenizer, importance). Files appear atomically.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from trials import atomic, layout, provenance
from trials.adapters import head_layout
from trials.data import Encoded, eval_loader, load_task, read_split
from trials.errors import UserError
from trials.gates import masked
from trials.importance import IMPORTANCE_METHODS, normalize_per_layer
from trials.models import load_model
from trials.schema import TRIAL_IMPORTANCE_COLUMNS, result_row
from trials.spec import DataSpec, FinetuneSpec, PruneSpec, from_dict, to_dict
from trials.strategies import choose_heads
from trials.train import accelerator_scope, evaluate, finetune


def _row(spec, heads, removed, metrics, extra) -> dict:
    """The results row of a trial (trials/schema.py); ``heads`` is the model's HeadLayout."""
    ft = spec.finetune if isinstance(spec, PruneSpec) else spec
    total = heads.total
    return result_row(
        model=ft.model.label, arch=ft.model.arch, variant=ft.model.variant,
        arch_init=ft.model.single_head or "",
        strategy=getattr(spec, "strategy", "none"),
        k=len(removed), k_fraction=len(removed) / total,
        k_requested=json.dumps(getattr(spec, "k", 0)),
        per_layer=bool(getattr(spec, "per_layer", False)),
        seed=ft.seed, recovery_epochs=float(getattr(spec, "recovery_epochs", 0)),
        **{k: metrics[k] for k in ("accuracy", "f1", "loss", "n_eval")},
        heads_total=total, heads_kept=total - len(removed),
        heads_removed=json.dumps([list(h) for h in removed]),
        trial_key=spec.key, spec_key=spec.key, stage_a_key=ft.key, stage=spec.stage,
        eval_seconds=metrics.get("eval_seconds", 0.0),
        config=json.dumps(to_dict(spec), sort_keys=True),
        **provenance.info(), **extra,
    )


def importance_frame(raw: torch.Tensor, method: str) -> pd.DataFrame:
    """One trial's importance table (TRIAL_IMPORTANCE_COLUMNS) for one method."""
    norm = normalize_per_layer(raw)
    n_layers, n_heads = raw.shape
    return pd.DataFrame({
        "method": method,
        "layer": [l for l in range(n_layers) for _ in range(n_heads)],
        "head": [h for _ in range(n_layers) for h in range(n_heads)],
        "score": norm.reshape(-1).numpy(), "score_raw": raw.reshape(-1).numpy(),
    })[TRIAL_IMPORTANCE_COLUMNS]


def write_outputs(out_dir: Path, rows_and_predictions: list[tuple[dict, pd.DataFrame]]) -> list[dict]:
    """Each row's predictions, then ``result.json`` last (its presence means the trial is done)."""
    for row, preds in rows_and_predictions:
        atomic.write_parquet(Path(out_dir) / layout.predictions_file(row["trial_key"]), preds)
    rows = [row for row, _ in rows_and_predictions]
    atomic.write_json(Path(out_dir) / layout.RESULT, {"rows": rows})
    return rows


def run_finetune(spec: FinetuneSpec, out_dir: Path, progress: bool = False) -> list[dict]:
    """Stage A: fine-tune, evaluate unpruned, compute importance, save the checkpoint."""
    from accelerate.utils import set_seed
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = load_task(spec.data, spec.importance.examples)
    set_seed(spec.seed)  # before the model: the seed fixes the classifier initialisation too
    m = spec.model
    model, tok = load_model(m.name, task.num_labels, tokenizer=m.tokenizer, texts=task.train["text"],
                            single_head=m.single_head, trust_remote_code=m.trust_remote_code)
    heads = head_layout(model)
    max_len = spec.data.max_length
    with accelerator_scope(spec.train.mixed_precision) as acc:
        train_stats = finetune(model, Encoded(task.train, tok, max_len), tok.pad_token_id, spec.train,
                               acc, spec.seed, progress=progress)
        metrics, preds = evaluate(model, Encoded(task.eval, tok, max_len), tok.pad_token_id, acc,
                                  spec.train.eval_batch_size)
        model = acc.unwrap_model(model, keep_fp32_wrapper=False)
        t0 = time.perf_counter()
        imp_batches = eval_loader(Encoded(task.importance, tok, max_len), tok.pad_token_id,
                                  spec.importance.batch_size)
        score = IMPORTANCE_METHODS[spec.importance.method]
        raw = score(model, imp_batches) if len(task.importance) else torch.zeros(
            heads.n_layers, heads.n_heads)
        imp_seconds = time.perf_counter() - t0
        mixed = acc.mixed_precision
    imp = importance_frame(raw, spec.importance.method)
    ckpt = out_dir / layout.CHECKPOINT
    tmp = out_dir / f".{layout.CHECKPOINT}.tmp"
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    atomic.write_parquet(tmp / layout.CKPT_IMPORTANCE, imp)
    atomic.write_json(tmp / layout.CKPT_SPEC, to_dict(spec))
    if ckpt.exists():
        import shutil
        shutil.rmtree(ckpt)
    os.replace(tmp, ckpt)
    atomic.write_parquet(out_dir / layout.TRIAL_IMPORTANCE, imp)
    row = _row(spec, heads, [], metrics, {**train_stats, "importance_seconds": imp_seconds,
                                          "importance_examples": len(task.importance),
                                          "importance_method": spec.importance.method,
                                          "mixed_precision": mixed})
    return write_outputs(out_dir, [(row, preds)])


def load_scores(checkpoint_dir: Path, normalized: bool, method: str | None = None) -> torch.Tensor:
    """[n_layers, n_heads] scores of ``method`` (default: the only or first one) saved beside
    the checkpoint."""
    imp = pd.read_parquet(Path(checkpoint_dir) / layout.CKPT_IMPORTANCE)
    if "method" in imp.columns:
        imp = imp[imp["method"] == (method or imp["method"].iloc[0])]
    col = "score" if normalized else "score_raw"
    grid = imp.pivot(index="layer", columns="head", values=col).sort_index().sort_index(axis=1)
    return torch.tensor(grid.to_numpy(dtype="float64", copy=True))  # [n_layers, n_heads]


def run_prune(spec: PruneSpec, checkpoint_dir: Path, out_dir: Path, progress: bool = False) -> list[dict]:
    """Stage B: load the stage-A checkpoint, remove heads, optionally recover, evaluate."""
    from accelerate.utils import set_seed
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ft = spec.finetune
    set_seed(ft.seed)
    model, tok = cached_checkpoint(str(checkpoint_dir), ft.data.num_labels)
    if spec.recovery_epochs:
        model = copy.deepcopy(model)  # recovery trains it; the cached copy must stay as saved
    heads = head_layout(model)
    scores = load_scores(checkpoint_dir, ft.importance.normalize_per_layer)
    removed = choose_heads(spec.strategy, scores, spec.k, per_layer=spec.per_layer, seed=ft.seed)
    extra = {}
    with accelerator_scope(ft.train.mixed_precision) as acc, masked(model, removed):
        if spec.recovery_epochs:
            task = load_task(ft.data, ft.importance.examples)
            extra = finetune(model, Encoded(task.train, tok, ft.data.max_length), tok.pad_token_id,
                             ft.train, acc, ft.seed, epochs=spec.recovery_epochs, progress=progress)
            encoded = Encoded(task.eval, tok, ft.data.max_length)
        else:
            encoded = cached_eval_split(str(checkpoint_dir), ft.data)
        metrics, preds = evaluate(model, encoded, tok.pad_token_id, acc, ft.train.eval_batch_size)
        extra["mixed_precision"] = acc.mixed_precision
    row = _row(spec, heads, removed, metrics, {**extra, "importance_method": ft.importance.method})
    return write_outputs(out_dir, [(row, preds)])


# Stage-B trials of one checkpoint run back to back in a reused Ray worker: load the checkpoint and
# tokenise the evaluation split once per worker. Trials cannot alter the cached model: masks are
# hooks removed on exit, and recovery trains a copy. The key includes the checkpoint's mtime.

@functools.lru_cache(maxsize=2)
def _cached_checkpoint(path: str, mtime: float, num_labels: int):
    return load_model(path, num_labels)


def cached_checkpoint(path: str, num_labels: int):
    return _cached_checkpoint(path, _mtime(path), num_labels)


@functools.lru_cache(maxsize=2)
def _cached_eval(path: str, mtime: float, data: DataSpec) -> Encoded:
    _, tok = _cached_checkpoint(path, mtime, data.num_labels)
    ev = read_split(data, "eval")
    return Encoded(ev.iloc[: data.eval_limit] if data.eval_limit else ev, tok, data.max_length)


def cached_eval_split(path: str, data: DataSpec) -> Encoded:
    return _cached_eval(path, _mtime(path), data)


def _mtime(path: str) -> float:
    from transformers.utils import CONFIG_NAME
    return os.stat(Path(path) / CONFIG_NAME).st_mtime_ns


def run_trial(trial: dict, progress: bool = False) -> list[dict]:
    spec = from_dict(trial["spec"])
    if isinstance(spec, PruneSpec):
        return run_prune(spec, Path(trial["checkpoint_dir"]), Path(trial["out_dir"]), progress)
    return run_finetune(spec, Path(trial["out_dir"]), progress)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m trials.run", description=__doc__.splitlines()[0])
    p.add_argument("trial_json", help="trial file: {spec, out_dir[, checkpoint_dir]}")
    args = p.parse_args(argv)
    try:
        trial = json.loads(Path(args.trial_json).read_text())
        rows = run_trial(trial, progress=sys.stderr.isatty())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (OSError, json.JSONDecodeError, KeyError) as e:
        print(f"error: trial file {args.trial_json}: {e}", file=sys.stderr)
        return 2
    for row in rows:
        print(json.dumps({k: row[k] for k in ("trial_key", "strategy", "k", "accuracy", "f1")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
