"""Frozen trial specs. A spec's canonical hash is its trial key, cache key and results-row key.

Two kinds of trial (docs/design.md "Stages"):
- ``FinetuneSpec`` (stage A): fine-tune one (model variant, seed), evaluate it unpruned, compute
  head importance, save a checkpoint.
- ``PruneSpec`` (stage B): load a stage-A checkpoint, remove heads by a strategy, optionally
  recover, evaluate.

Specs hold only plain values (str/int/float/bool/None/tuples): they pickle (Ray passes them as
objects) and ``to_dict`` / ``from_dict`` round-trip them through JSON (``python -m headsweep.trials.run``,
the checkpoint's copy of its spec).

Each sweep-file section is a dataclass here whose fields carry their default and their rule
(``num``/``flag``/``text`` metadata); the validation reads both from the fields, so a default or
an allowed value is stated once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from headsweep.trials.errors import UserError
from headsweep.trials.schema import ORACLE


# Allowed values, used by the specs, the trials and the sweep-file validation alike.
PRECISIONS = ("auto", "no", "fp16", "bf16")
# One-head architecture: heads merged from the same weights, attention re-drawn, or both the
# multi-head and the one-head model trained from scratch (docs/experiments.md).
SINGLE_HEAD_INITS = ("pretrained", "random", "scratch")
REGRESSION_METRICS = ("pearson", "spearman")   # num_labels 1, MSE loss
# importance.normalize: "auto" = each method's canonical form (trials.importance: gradient
# layer_l2, ablation and entropy none); "none" / "layer_l2" override it for every method.
NORMALIZE = ("auto", "none", "layer_l2")
# layer_single_head.keep: "ranked" keeps the importance-ranked head of the layer; "best" tries each
# head as the layer's only survivor on the evaluation set and keeps the best (an oracle).
KEEP_RULES = ("ranked", "best")
# What importance, strategies and K count (trials/units.py): query heads, or KV groups (a key/value
# head with every query head that reads it; the same as a head where there is no GQA).
UNITS = ("head", "kv_group")
MAX_BATCH = 4096   # a larger batch is a typo (an extra zero) that would only fail on the GPU, after the queue


def num(default, **rule):
    """A numeric sweep-file key: its default and its rule (integer, lo, hi, lo_open, allow_none)."""
    return field(default=default, metadata={"kind": "num", **rule})


def flag(default: bool):
    return field(default=default, metadata={"kind": "bool"})


def text(default, *, choices: tuple | None = None, allow_none: bool = False):
    return field(default=default, metadata={"kind": "str", "choices": choices, "allow_none": allow_none})


def names(default: tuple[str, ...], *, choices: tuple | None = None):
    """A key that takes one name or a list of names (``method: gradient`` or ``[gradient,
    ablation]``); held as a tuple. Which names exist is checked against ``choices``, or (None)
    against a registry."""
    return field(default=default, metadata={"kind": "names", "choices": choices})


def keyed_when_set(default=None, **rule):
    """A key added after sweeps were run: part of the trial key only when set (not its default),
    so adding it leaves every earlier trial key (and finished result) as it was."""
    return field(default=default, metadata={"kind": "str", "allow_none": True, "key_when_set": True, **rule})


def internal(default):
    """A field the sweep file does not set directly (the grid or the parser fills it in)."""
    return field(default=default, metadata={"internal": True})


@dataclass(frozen=True)
class ModelSpec:
    name: str                       # hub id, local directory, or preset:tiny-gpt2 / -distilbert / -bert / -llama
    label: str = ""                 # short name used in results, checkpoint dirs and plots
    tokenizer: str | None = None    # optional tokenizer path/id (presets: real vocab files)
    single_head: str | None = internal(None)  # None, or a SINGLE_HEAD_INITS value: the one-head variant
    trust_remote_code: bool = False
    scratch: bool = internal(False)  # multi-head, every weight drawn from the config (init: scratch)
    gguf_file: str | None = None    # a GGUF file in ``name`` (a directory or hub repo): loaded dequantised
    revision: str | None = keyed_when_set()  # hub commit / branch / tag to load (None: the latest)

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", default_label(self.name))

    @property
    def variant(self) -> str:
        """Name of this model variant: the label, plus ``-1head`` for the one-head architecture or
        ``-scratch`` for the multi-head model trained from scratch."""
        if self.single_head:
            return f"{self.label}-1head"
        return f"{self.label}-scratch" if self.scratch else self.label

    @property
    def init(self) -> str:
        """How the variant's weights start: the one-head init, ``scratch``, or "" (as loaded)."""
        return self.single_head or ("scratch" if self.scratch else "")

    @property
    def arch(self) -> str:
        return "single-head" if self.single_head else "multi-head"


@dataclass(frozen=True)
class DataSpec:
    source: str = text("glue/sst2")  # hub dataset, local file/dir (tsv/csv/jsonl/parquet), or "synthetic"
    train: str = text("train")
    eval: str = text("validation")
    text_column: str = text("sentence")
    text_pair_column: str | None = text(None, allow_none=True)  # second text of a sentence-pair task
    label_column: str = text("label")
    max_length: int = num(128, integer=True, lo=2, hi=8192)
    train_limit: int | None = num(None, integer=True, lo=1, allow_none=True)
    eval_limit: int | None = num(None, integer=True, lo=1, allow_none=True)
    num_labels: int = num(2, integer=True, lo=1)     # 1: regression (metric pearson/spearman)
    extra_eval: tuple[str, ...] = names(())            # further evaluation splits (MNLI mismatched)
    drop_invalid: bool = flag(False)    # drop rows with empty text / missing labels instead of refusing
    synthetic_size: int = num(4000, integer=True, lo=50)  # train rows of the synthetic set (eval: a quarter)
    revision: str | None = keyed_when_set()  # hub dataset commit / branch / tag (None: the latest)


@dataclass(frozen=True)
class TrainSpec:
    epochs: float = num(3, lo=0, lo_open=True)
    lr: float = num(2e-5, lo=0, lo_open=True, hi=1.0)
    batch_size: int = num(32, integer=True, lo=1, hi=MAX_BATCH)
    eval_batch_size: int = num(128, integer=True, lo=1, hi=MAX_BATCH)
    mixed_precision: str = text("auto", choices=PRECISIONS)
    warmup_ratio: float = num(0.1, lo=0, hi=1)
    weight_decay: float = num(0.01, lo=0)
    max_grad_norm: float = num(1.0, lo=0)
    group_by_length: bool = flag(True)


@dataclass(frozen=True)
class ImportanceSpec:
    examples: int = num(2000, integer=True, lo=1)  # held-out training examples used for importance
    normalize: str = text("auto", choices=NORMALIZE)   # the ranking score's normalisation (NORMALIZE)
    batch_size: int = num(32, integer=True, lo=1, hi=MAX_BATCH)
    # names in trials.importance.IMPORTANCE_METHODS; several = a grid factor on one fine-tune
    method: tuple[str, ...] = names(("gradient",))
    # what is scored, ranked, counted by K and removed: query heads or whole KV groups
    unit: str = text("head", choices=UNITS)


@dataclass(frozen=True)
class IterativeSpec:
    """``iterative: {step: 0.1}``: the fraction of all heads removed per step (strategy iterative)."""
    step: float = num(0.1, lo=0, lo_open=True, hi=1, hi_open=True)


@dataclass(frozen=True)
class LayerSingleHeadSpec:
    """``layer_single_head: {keep: ranked | best | [ranked, best]}`` (strategy layer-single-head):
    which head each layer keeps; several = one trial each on the same fine-tunes."""
    keep: tuple[str, ...] = names(("ranked",), choices=KEEP_RULES)


class _Keyed:
    """The trial key: 16 hex digits of the SHA-256 of the spec's canonical JSON."""

    @property
    def key(self) -> str:
        return spec_key(self)


@dataclass(frozen=True)
class FinetuneSpec(_Keyed):
    """Stage A: one fine-tune per (model variant, seed)."""
    model: ModelSpec
    data: DataSpec
    train: TrainSpec
    importance: ImportanceSpec
    seed: int
    metric: str = "accuracy"        # the sweep's primary metric (trials.metrics.METRICS)
    stage: str = field(default="A", init=False)


@dataclass(frozen=True)
class PruneSpec(_Keyed):
    """Stage B: one (model, strategy, K, seed, recovery_epochs[, method, draw]) evaluated on a
    stage-A checkpoint. ``layer-single-head`` and ``iterative`` trials yield several rows."""
    finetune: FinetuneSpec
    strategy: str
    k: int | float                  # int = heads, float in (0, 1) = fraction (of all heads, or per layer)
    per_layer: bool = False
    recovery_epochs: float = 0
    importance_method: str = "gradient"   # which of the stage-A methods ranks the heads
    draw: int | None = None               # random: the draw index (its own seed from (seed, draw))
    iterative_step: float | None = None   # iterative: fraction of all heads removed per step
    k_grid: tuple[int, ...] = ()          # iterative: the sweep's K grid as head counts (rows at each)
    keep: str = "ranked"                  # layer-single-head: KEEP_RULES ("best": importance_method oracle)
    measure_speed: bool = False           # latency of the physically pruned model vs the unpruned
    save_pruned: bool = False             # save the physically pruned model (HF format)
    stage: str = field(default="B", init=False)

    def __post_init__(self):
        if self.keep not in KEEP_RULES:
            raise UserError("keep", self.keep, f"must be one of {', '.join(KEEP_RULES)}")
        if (self.keep == "best") != (self.importance_method == ORACLE) and self.strategy == "layer-single-head":
            raise UserError("importance_method", self.importance_method,
                            f"layer-single-head is {ORACLE} exactly when keep is best (it ranks by the evaluation set)")
        if self.strategy == "each-head" and self.recovery_epochs:
            raise UserError("recovery_epochs", self.recovery_epochs, "each-head measures the fine-tuned model, so it must be 0")

    @property
    def seed(self) -> int:
        return self.finetune.seed


def default_label(name: str) -> str:
    """``preset:tiny-gpt2`` -> ``tiny-gpt2``; ``openai-community/gpt2`` -> ``gpt2``; ``./ckpt/`` -> ``ckpt``."""
    tail = name.rstrip("/").split("/")[-1]
    return tail.split(":", 1)[-1]


def to_dict(spec: Any) -> dict:
    return dataclasses.asdict(spec)


def canonical_json(spec: Any) -> str:
    return json.dumps(_drop_unset(spec, to_dict(spec)), sort_keys=True, separators=(",", ":"))


def _drop_unset(spec: Any, d: dict) -> dict:
    """``d`` (``to_dict(spec)``) without the ``keyed_when_set`` fields left at their default."""
    for f in dataclasses.fields(spec):
        v = getattr(spec, f.name)
        if f.metadata.get("key_when_set") and v == f.default:
            d.pop(f.name, None)
        elif dataclasses.is_dataclass(v):
            _drop_unset(v, d[f.name])
    return d


def spec_key(spec: Any) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON: stable across processes and machines."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:16]


def row_key(spec: Any, discriminator: str) -> str:
    """The key of one row of a trial that yields several (iterative: one per K): unique per
    (trial, discriminator), stable, the same form as a trial key."""
    return hashlib.sha256(f"{spec_key(spec)}/{discriminator}".encode()).hexdigest()[:16]


def _build(cls, d: dict):
    """``cls`` from a dict: unknown keys are ignored, lists (JSON has no tuples) and a single name
    given to a ``names`` field become tuples, so the spec, its hash and its key round-trip."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    out = {}
    for k, v in d.items():
        if k not in fields:
            continue
        if fields[k].metadata.get("kind") == "names" and isinstance(v, str):
            v = (v,)
        out[k] = tuple(v) if isinstance(v, list) else v
    return cls(**out)


def from_dict(d: dict) -> FinetuneSpec | PruneSpec:
    """Inverse of ``to_dict`` for both stages."""
    if d.get("stage") == "B" or "finetune" in d:
        rest = {k: v for k, v in d.items() if k not in ("finetune", "stage")}
        return _build(PruneSpec, {**rest, "finetune": from_dict(d["finetune"])})
    return FinetuneSpec(
        model=_build(ModelSpec, d["model"]), data=_build(DataSpec, d["data"]),
        train=_build(TrainSpec, d["train"]), importance=_build(ImportanceSpec, d["importance"]),
        seed=int(d["seed"]), metric=d.get("metric", "accuracy"),
    )
