"""Frozen trial specs. A spec's canonical hash is its trial key, cache key and results-row key.

Two kinds of trial (DESIGN.md "Stages"):
- ``FinetuneSpec`` (stage A): fine-tune one (model variant, seed), evaluate it unpruned, compute
  head importance, save a checkpoint.
- ``PruneSpec`` (stage B): load a stage-A checkpoint, remove heads by a strategy, optionally
  recover, evaluate.

Specs hold only plain values (str/int/float/bool/None/tuples) so ``to_dict`` / ``from_dict``
round-trip through JSON and YAML unchanged.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    name: str                       # hub id, local directory, or preset:tiny-gpt2 / -distilbert / -bert
    label: str = ""                 # short name used in results, checkpoint dirs and plots
    tokenizer: str | None = None    # optional tokenizer path/id (presets: real vocab files)
    single_head: str | None = None  # None, or "pretrained"/"random": the one-head architecture variant
    trust_remote_code: bool = False

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", default_label(self.name))

    @property
    def variant(self) -> str:
        """Name of this model variant: the label, plus ``-1head`` for the one-head architecture."""
        return f"{self.label}-1head" if self.single_head else self.label

    @property
    def arch(self) -> str:
        return "single-head" if self.single_head else "multi-head"


@dataclass(frozen=True)
class DataSpec:
    source: str = "glue/sst2"       # hub dataset, local file/dir (tsv/csv/jsonl/parquet), or "synthetic"
    train: str = "train"
    eval: str = "validation"
    text_column: str = "sentence"
    label_column: str = "label"
    max_length: int = 128
    train_limit: int | None = None
    eval_limit: int | None = None
    num_labels: int = 2
    drop_invalid: bool = False      # drop rows with empty text / missing labels instead of refusing
    synthetic_size: int = 4000      # train rows of the synthetic set (eval is a quarter of it)


@dataclass(frozen=True)
class TrainSpec:
    epochs: float = 3
    lr: float = 2e-5
    batch_size: int = 32
    eval_batch_size: int = 128
    mixed_precision: str = "auto"   # auto | no | fp16 | bf16
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    group_by_length: bool = True


@dataclass(frozen=True)
class ImportanceSpec:
    examples: int = 2000            # held-out training examples used for importance
    normalize_per_layer: bool = True
    batch_size: int = 32
    method: str = "gradient"        # a key of trials.importance.IMPORTANCE_METHODS


@dataclass(frozen=True)
class FinetuneSpec:
    """Stage A: one fine-tune per (model variant, seed)."""
    model: ModelSpec
    data: DataSpec
    train: TrainSpec
    importance: ImportanceSpec
    seed: int
    stage: str = field(default="A", init=False)

    @property
    def key(self) -> str:
        return spec_key(self)

    @property
    def checkpoint_name(self) -> str:
        return f"{self.model.variant}__seed{self.seed}"


@dataclass(frozen=True)
class PruneSpec:
    """Stage B: one (model, strategy, K, seed, recovery_epochs) evaluated on a stage-A checkpoint."""
    finetune: FinetuneSpec
    strategy: str
    k: int | float                  # int = heads, float in (0, 1) = fraction (of all heads, or per layer)
    per_layer: bool = False
    recovery_epochs: float = 0
    stage: str = field(default="B", init=False)

    @property
    def key(self) -> str:
        return spec_key(self)

    @property
    def seed(self) -> int:
        return self.finetune.seed


def default_label(name: str) -> str:
    """``preset:tiny-gpt2`` -> ``tiny-gpt2``; ``openai-community/gpt2`` -> ``gpt2``; ``./ckpt/`` -> ``ckpt``."""
    tail = name.rstrip("/").split("/")[-1]
    return tail.split(":", 1)[-1]


def to_dict(spec: Any) -> dict:
    d = dataclasses.asdict(spec)
    return d


def canonical_json(spec: Any) -> str:
    return json.dumps(to_dict(spec), sort_keys=True, separators=(",", ":"))


def spec_key(spec: Any) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON: stable across processes and machines."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:16]


def _build(cls, d: dict):
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in d.items() if k in names})


def from_dict(d: dict) -> FinetuneSpec | PruneSpec:
    """Inverse of ``to_dict`` for both stages."""
    if d.get("stage") == "B" or "finetune" in d:
        return PruneSpec(
            finetune=from_dict(d["finetune"]),
            strategy=d["strategy"], k=d["k"], per_layer=d.get("per_layer", False),
            recovery_epochs=d.get("recovery_epochs", 0),
        )
    return FinetuneSpec(
        model=_build(ModelSpec, d["model"]), data=_build(DataSpec, d["data"]),
        train=_build(TrainSpec, d["train"]), importance=_build(ImportanceSpec, d["importance"]),
        seed=int(d["seed"]),
    )
