"""One trial without Ray: ``python -m headsweep.trials.run trial.json``.

trial.json: ``{"spec": <FinetuneSpec or PruneSpec as a dict>, "out_dir": "...",
"checkpoint_dir": "..." (stage B: the stage-A checkpoint)}``.

Both stages write to out_dir (names: trials/layout.py) ``result.json`` = ``{"rows": [...]}`` (a
trial yields one results row, or several: iterative pruning gives one per K) and
``predictions/<row trial_key>.parquet`` per row; stage A also ``importance.parquet`` and
``checkpoint/`` (HF format, safetensors, tokenizer, importance). Files appear atomically.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from headsweep.trials import atomic, layout
from headsweep.trials.data import Encoded, eval_loader, limit_eval, load_task, read_split
from headsweep.trials.efficiency import efficiency
from headsweep.trials.errors import UserError
from headsweep.trials.importance import IMPORTANCE_METHODS
from headsweep.trials.models import load_model
from headsweep.trials.rows import extra_evals_json, importance_frame, load_scores, make_row, write_outputs  # noqa: F401
from headsweep.trials.spec import DataSpec, FinetuneSpec, PruneSpec, from_dict, to_dict
from headsweep.trials.tokenizers import uses_token_types
from headsweep.trials.train import accelerator_scope, evaluate, finetune
from headsweep.trials.units import units


def run_finetune(spec: FinetuneSpec, out_dir: Path, progress: bool = False, *, finetuned: Path | None = None,
                 on_finetuned=None) -> list[dict]:
    """Stage A: fine-tune, evaluate unpruned (and on the extra evaluation splits), compute every
    importance method of the spec, save the checkpoint.

    ``on_finetuned(path)``: called with the fine-tuned weights (``out_dir/finetuned``, HF format,
    with the fine-tuning statistics) as soon as fine-tuning ends, before anything that could still
    fail; the caller keeps them. ``finetuned``: such weights from an earlier attempt of this same
    trial: they are loaded instead of fine-tuning again (evaluation, importance and the row are the
    same as if the fine-tune had just run)."""
    from accelerate.utils import set_seed
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = load_task(spec.data, spec.importance.examples)
    set_seed(spec.seed)  # before the model: the seed fixes the classifier initialisation too
    m = spec.model
    texts = list(task.train["text"]) + (list(task.train["text_pair"]) if "text_pair" in task.train else [])
    if finetuned is not None:
        model, tok = load_model(str(finetuned), task.num_labels)
        train_stats = json.loads((Path(finetuned) / layout.CKPT_TRAIN).read_text())
    else:
        model, tok = load_model(m.name, task.num_labels, tokenizer=m.tokenizer, texts=texts,
                                single_head=m.single_head, trust_remote_code=m.trust_remote_code,
                                scratch=m.scratch, gguf_file=m.gguf_file, revision=m.revision)
    max_len, types = spec.data.max_length, uses_token_types(model)

    def enc(df):
        return Encoded(df, tok, max_len, token_types=types)

    with accelerator_scope(spec.train.mixed_precision) as acc:
        if finetuned is None:
            train_stats = finetune(model, enc(task.train), tok.pad_token_id, spec.train, acc, spec.seed,
                                   progress=progress)
            if on_finetuned is not None:
                on_finetuned(save_finetuned(acc.unwrap_model(model, keep_fp32_wrapper=False), tok, train_stats,
                                            out_dir / layout.FINETUNED))
        metrics, preds = evaluate(model, enc(task.eval), tok.pad_token_id, acc, spec.train.eval_batch_size)
        others = {split: evaluate(model, enc(df), tok.pad_token_id, acc, spec.train.eval_batch_size)[0]
                  for split, df in (task.extra or {}).items()}
        model = acc.unwrap_model(model, keep_fp32_wrapper=False)
        t0 = time.perf_counter()
        imp_batches = eval_loader(enc(task.importance), tok.pad_token_id, spec.importance.batch_size)
        frames = []
        with units(model, spec.importance.unit) as unit_heads:     # scores per unit (head or KV group)
            for method in spec.importance.method:
                raw = IMPORTANCE_METHODS[method](model, imp_batches) if len(task.importance) else torch.zeros(
                    unit_heads.n_layers, unit_heads.n_heads)
                frames.append(importance_frame(raw, method, spec.importance.normalize))
        imp_seconds = time.perf_counter() - t0
        mixed = acc.mixed_precision
    imp = pd.concat(frames, ignore_index=True)
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
    row = make_row(spec, unit_heads, [], metrics, {   # the row names the sweep's unit
        **train_stats, **efficiency(model, []), "extra_evals": extra_evals_json(others),
        "importance_seconds": imp_seconds, "importance_examples": len(task.importance),
        "importance_method": spec.importance.method[0], "mixed_precision": mixed})
    return write_outputs(out_dir, [(row, preds)])


def save_finetuned(model, tok, train_stats: dict, dest: Path) -> Path:
    """The fine-tuned weights and tokenizer (HF format, safetensors) with the fine-tuning
    statistics, written to a temporary name and renamed: the directory is complete or absent."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    atomic.write_json(tmp / layout.CKPT_TRAIN, train_stats)
    if dest.exists():
        import shutil
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def weights_digest(checkpoint: Path) -> str:
    """SHA-256 over the checkpoint's safetensors files (names and contents, in name order): what
    the stage-A result records and a worker checks its cached copy against."""
    import hashlib
    h = hashlib.sha256()
    for f in sorted(Path(checkpoint).glob("*.safetensors")):
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def run_prune(spec: PruneSpec, checkpoint_dir: Path, out_dir: Path, progress: bool = False) -> list[dict]:
    """Stage B: load the stage-A checkpoint, remove heads (one set, or one per layer / per
    iterative step), optionally recover, evaluate each (trials/stage_b.py)."""
    from accelerate.utils import set_seed

    from headsweep.trials import stage_b
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ft = spec.finetune
    set_seed(ft.seed)
    model, tok = cached_checkpoint(str(checkpoint_dir), ft.data.num_labels)
    scores = stage_b.ranking(spec, checkpoint_dir)
    eval_sets = {"": cached_eval_split(str(checkpoint_dir), ft.data)}
    eval_sets |= {split: cached_eval_split(str(checkpoint_dir), ft.data, split) for split in ft.data.extra_eval}
    # Inside the unit view the strategies, masks and K count the stage-A scores' units.
    with accelerator_scope(ft.train.mixed_precision) as acc, units(model, ft.importance.unit):
        trial = stage_b.Trial(spec, model, tok, acc, out_dir, eval_sets, progress)
        rows = stage_b.run(trial, scores)
    return write_outputs(out_dir, rows)


# Stage-B trials of one checkpoint run back to back in a reused Ray worker: load the checkpoint and
# tokenise the evaluation split once per worker. Trials cannot alter the cached model: masks are
# hooks removed on exit, and recovery trains a copy. The key includes the checkpoint's mtime.

@functools.lru_cache(maxsize=2)
def _cached_checkpoint(path: str, mtime: float, num_labels: int):
    return load_model(path, num_labels)


def cached_checkpoint(path: str, num_labels: int):
    return _cached_checkpoint(path, _mtime(path), num_labels)


@functools.lru_cache(maxsize=4)
def _cached_eval(path: str, mtime: float, data: DataSpec, split: str | None) -> Encoded:
    model, tok = _cached_checkpoint(path, mtime, data.num_labels)
    ev = read_split(data, "eval") if split is None else read_split(data, "extra_eval", split)
    return Encoded(limit_eval(ev, data), tok, data.max_length, token_types=uses_token_types(model))


def cached_eval_split(path: str, data: DataSpec, split: str | None = None) -> Encoded:
    """The evaluation split (or the extra evaluation ``split``), tokenised once per worker."""
    return _cached_eval(path, _mtime(path), data, split)


def _mtime(path: str) -> float:
    from transformers.utils import CONFIG_NAME
    return os.stat(Path(path) / CONFIG_NAME).st_mtime_ns


def run_trial(trial: dict, progress: bool = False) -> list[dict]:
    spec = from_dict(trial["spec"])
    if isinstance(spec, PruneSpec):
        return run_prune(spec, Path(trial["checkpoint_dir"]), Path(trial["out_dir"]), progress)
    return run_finetune(spec, Path(trial["out_dir"]), progress)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m headsweep.trials.run", description=__doc__.splitlines()[0])
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
