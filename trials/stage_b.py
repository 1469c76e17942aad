"""Stage B, one trial: rank heads, choose the removal set(s), evaluate each under its mask.

Most strategies give one removal set (one results row). ``layer-single-head`` gives one per layer
(``keep: best``: each layer's survivor chosen on the evaluation set, trials/head_eval.py),
``iterative`` one per step (trials/iterative.py) and ``each-head`` one per head (evaluated many
masks per pass, trials/head_eval.py); their rows get their own ``trial_key``
(``trials.spec.row_key``) and share ``spec_key``. ``random`` draws its set from (seed, draw).

Every row carries the parameter counts of its set after physical pruning (trials/efficiency.py);
``measure_speed`` adds the latency ratio and ``save_pruned`` saves the pruned model. With
``recovery_epochs`` the model is fine-tuned under the mask first (a copy: the cached checkpoint
stays as saved; iterative trains one copy on through its steps).
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import pandas as pd

from headsweep.trials import layout
from headsweep.trials.adapters import head_layout
from headsweep.trials.data import Encoded, eval_loader, load_task
from headsweep.trials.efficiency import SPEED_BATCHES, efficiency, pruned_copy, speedup
from headsweep.trials.gates import masked
from headsweep.trials.rows import extra_evals_json, load_scores, make_row
from headsweep.trials.schema import ORACLE
from headsweep.trials.spec import PruneSpec, row_key
from headsweep.trials.strategies import choose_heads, layer_sets
from headsweep.trials.tokenizers import uses_token_types
from headsweep.trials.train import evaluate, finetune

Head = tuple[int, int]


class Trial:
    """What the removal sets of one stage-B trial share: the checkpoint's model, its tokenizer,
    the evaluation data, the accelerator."""

    def __init__(self, spec: PruneSpec, model, tok, acc, out_dir: Path, eval_sets: dict, progress: bool):
        self.spec, self.ft = spec, spec.finetune
        self.model, self.tok, self.acc = model, tok, acc
        self.out_dir, self.progress = Path(out_dir), progress
        self.eval_sets = eval_sets           # {"": the evaluation split, split name: Encoded}
        self.heads = head_layout(model)
        self.types = uses_token_types(model)

    @functools.cached_property
    def task(self):
        return load_task(self.ft.data, self.ft.importance.examples)

    def encode(self, df: pd.DataFrame) -> Encoded:
        return Encoded(df, self.tok, self.ft.data.max_length, token_types=self.types)

    def importance_batches(self):
        return eval_loader(self.encode(self.task.importance), self.tok.pad_token_id, self.ft.importance.batch_size)

    def recover(self, model, removed: list[Head]) -> dict:
        """Fine-tune ``model`` in place for ``recovery_epochs`` under the mask; train stats."""
        with masked(model, removed):
            stats = finetune(model, self.encode(self.task.train), self.tok.pad_token_id, self.ft.train,
                             self.acc, self.ft.seed, epochs=self.spec.recovery_epochs, progress=self.progress)
        self.acc.unwrap_model(model, keep_fp32_wrapper=False)   # no autocast patch left behind
        return stats

    @functools.cached_property
    def speed_batches(self) -> list[dict]:
        """Up to SPEED_BATCHES evaluation batches, spread over the (length-sorted) split."""
        batches = list(eval_loader(self.eval_sets[""], self.tok.pad_token_id, self.ft.train.eval_batch_size))
        stride = max(1, len(batches) // SPEED_BATCHES)
        return batches[::stride][:SPEED_BATCHES]

    def row(self, model, removed: list[Head], extra: dict, discriminator: str | None = None):
        """Evaluate ``model`` with ``removed`` masked; (results row, predictions)."""
        with masked(model, removed):
            metrics, preds = evaluate(model, self.eval_sets[""], self.tok.pad_token_id, self.acc,
                                      self.ft.train.eval_batch_size)
            others = {split: evaluate(model, enc, self.tok.pad_token_id, self.acc,
                                      self.ft.train.eval_batch_size)[0]
                      for split, enc in self.eval_sets.items() if split}
        cols = {**extra, **efficiency(self.model, removed), "extra_evals": extra_evals_json(others),
                "importance_method": self.spec.importance_method, "mixed_precision": self.acc.mixed_precision}
        if self.spec.measure_speed or self.spec.save_pruned:
            pruned = pruned_copy(model, removed)
            if self.spec.measure_speed:
                cols["speedup"] = speedup(model, pruned, self.speed_batches, self.acc)
            if self.spec.save_pruned:
                from headsweep.trials.pruned_model import save_pruned
                rel = layout.pruned_model_dir(self.spec.key)
                where = self.out_dir / layout.PRUNED_MODEL
                if discriminator is not None:      # several rows: one model each, in a subfolder
                    sub = row_key(self.spec, discriminator)
                    where, rel = where / sub, f"{rel}/{sub}"
                save_pruned(pruned.cpu(), self.tok, where)
                cols["pruned_model"] = rel
            del pruned
        return make_row(self.spec, self.heads, removed, metrics, cols, discriminator), preds


def run(trial: Trial, scores) -> list[tuple[dict, pd.DataFrame]]:
    """Every (row, predictions) of the trial; ``scores``: the stage-A ranking (higher = more
    important) of the trial's importance method."""
    spec = trial.spec
    if spec.strategy == "iterative":
        return _iterative(trial, scores)
    if spec.strategy == "each-head":
        return _each_head(trial)
    if spec.strategy == "layer-single-head":
        removal = layer_sets(scores) if spec.keep == "ranked" else _oracle_sets(trial)
        sets = [(f"layer{layer}", removed, {"layer": layer}) for layer, removed in enumerate(removal)]
    else:
        removed = choose_heads(spec.strategy, scores, spec.k, per_layer=spec.per_layer,
                               seed=spec.finetune.seed, draw=spec.draw)
        sets = [(None, removed, {"draw": spec.draw} if spec.draw is not None else {})]
    out = []
    for discriminator, removed, extra in sets:
        model = trial.model
        if spec.recovery_epochs:
            model = copy.deepcopy(trial.model)
            extra = {**extra, **trial.recover(model, removed)}
        out.append(trial.row(model, removed, extra, discriminator))
    return out


def _iterative(trial: Trial, scores) -> list[tuple[dict, pd.DataFrame]]:
    from headsweep.trials.iterative import steps
    spec = trial.spec
    model = copy.deepcopy(trial.model) if spec.recovery_epochs else trial.model
    stats = {}

    def recover(removed):
        stats.update(trial.recover(model, removed))

    out = []
    for s, removed in steps(model, scores, spec.iterative_step, spec.importance_method,
                            trial.importance_batches, spec.finetune.importance.normalize,
                            recover if spec.recovery_epochs else None, spec.k_grid):
        row, preds = trial.row(model, removed, {"step": s, **stats}, f"step{s}")
        row["k_requested"] = str(len(removed))
        out.append((row, preds))
    return out


def _oracle_sets(trial: Trial) -> list[list[Head]]:
    """``keep: best``: per layer, every head but the one that scores best (the trial's primary
    metric, then loss) as the layer's only survivor on the evaluation split."""
    from headsweep.trials.head_eval import best_survivors, only_survivor
    scored = only_survivor(trial.model, trial.eval_sets[""], trial.tok.pad_token_id, trial.acc,
                           trial.ft.train.eval_batch_size)
    keep = best_survivors(scored, trial.ft.metric)
    n_heads = trial.heads.n_heads
    return [[(layer, h) for h in range(n_heads) if h != keep[layer]] for layer in range(trial.heads.n_layers)]


def _each_head(trial: Trial) -> list[tuple[dict, pd.DataFrame]]:
    """A row per head, that head alone masked, every evaluation split batched many masks per pass.
    No recovery (the grid gives each-head none) and no speed or saved model per head: one head's
    removal is a measurement of the head, not a model to deploy."""
    from headsweep.trials.head_eval import each_head
    spec = trial.spec
    evals = {split: each_head(trial.model, enc, trial.tok.pad_token_id, trial.acc, trial.ft.train.eval_batch_size)
             for split, enc in trial.eval_sets.items()}
    out = []
    for (layer, head), (metrics, preds) in sorted(evals[""].items()):
        removed = [(layer, head)]
        others = {split: ev[layer, head][0] for split, ev in evals.items() if split}
        cols = {"layer": layer, "head": head, **efficiency(trial.model, removed),
                "extra_evals": extra_evals_json(others), "importance_method": spec.importance_method,
                "mixed_precision": trial.acc.mixed_precision}
        out.append((make_row(spec, trial.heads, removed, metrics, cols, f"head{layer}.{head}"), preds))
    return out


def ranking(spec: PruneSpec, checkpoint_dir: Path):
    """The stage-A ranking scores of the trial's method in its normalisation (None: the trial
    ranks by the evaluation set, ``importance_method`` oracle)."""
    if spec.importance_method == ORACLE:
        return None
    return load_scores(checkpoint_dir, spec.importance_method, spec.finetune.importance.normalize)
