"""Sweep file (YAML) -> a validated, fully resolved ``Sweep``.

Every problem becomes one line naming the key and the value; nothing is launched or written
while any remain. Keys are part of the contract (DESIGN.md "The sweep file").
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trials.spec import DataSpec, ImportanceSpec, ModelSpec, TrainSpec, default_label

STRATEGY_NAMES = ("none", "top", "bottom", "random", "single-head")
MODEL_KEYS = ("name", "label", "tokenizer", "trust_remote_code")
RESOURCE_STAGES = ("finetune", "prune")
TOP_KEYS = ("name", "models", "data", "importance", "finetune", "strategies", "k", "per_layer",
            "seeds", "single_head_arch", "resources", "storage", "max_failures", "trust_remote_code")
STORAGE_SCHEMES = ("s3", "gs", "gcs", "file", "hdfs")
UNSUPPORTED_SCHEME = "unsupported scheme; use a local path, s3://, gs:// or file://"
# Common names for keys that spelling similarity alone would not find.
ALIASES = {
    "learning_rate": "lr", "learningrate": "lr", "lr_rate": "lr", "num_epochs": "epochs",
    "num_train_epochs": "epochs", "n_epochs": "epochs", "epoch": "epochs", "bs": "batch_size",
    "batch": "batch_size", "train_batch_size": "batch_size", "fp16": "mixed_precision",
    "bf16": "mixed_precision", "precision": "mixed_precision", "model": "models",
    "strategy": "strategies", "seed": "seeds", "K": "k", "ks": "k", "head_counts": "k",
    "text": "text_column", "label": "label_column", "text_col": "text_column",
    "label_col": "label_column", "dataset": "source", "path": "source", "validation": "eval",
    "test": "eval", "gpus": "gpu", "cpus": "cpu", "num_gpus": "gpu", "num_cpus": "cpu",
    "output_dir": "storage", "out_dir": "storage", "recovery": "recovery_epochs",
}


@dataclass(frozen=True)
class Resources:
    cpu: float
    gpu: float

    def as_ray(self) -> dict:
        return {"cpu": self.cpu, "gpu": self.gpu}


@dataclass(frozen=True)
class Sweep:
    name: str
    models: tuple[ModelSpec, ...]
    data: DataSpec
    importance: ImportanceSpec
    train: TrainSpec
    recovery_epochs: tuple[float, ...]
    strategies: tuple[str, ...]
    k: tuple[int | float, ...]
    per_layer: bool
    seeds: tuple[int, ...]
    single_head_arch: str | None          # None, "pretrained" or "random"
    resources: dict[str, Resources] = field(hash=False)
    storage: str = "./sweeps"
    max_failures: int = 2

    def to_yaml_dict(self) -> dict:
        """The resolved sweep in the sweep-file layout (what ``spec.yaml`` holds)."""
        ft = dataclasses.asdict(self.train)
        ft["recovery_epochs"] = _scalar_or_list(self.recovery_epochs)
        return {
            "name": self.name,
            "models": [{k: v for k, v in dataclasses.asdict(m).items() if k != "single_head"}
                       for m in self.models],
            "data": dataclasses.asdict(self.data),
            "importance": dataclasses.asdict(self.importance),
            "finetune": ft,
            "strategies": list(self.strategies),
            "k": list(self.k),
            "per_layer": self.per_layer,
            "seeds": list(self.seeds),
            "single_head_arch": {"init": self.single_head_arch} if self.single_head_arch else False,
            "resources": {s: dataclasses.asdict(r) for s, r in self.resources.items()},
            "storage": self.storage,
            "max_failures": self.max_failures,
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_yaml_dict(), sort_keys=False)


def _scalar_or_list(values):
    return values[0] if len(values) == 1 else list(values)


class Problems:
    """Collects one-line problems; ``key: problem (got value)``."""

    def __init__(self):
        self.lines: list[str] = []
        self.warnings: list[str] = []

    def add(self, key: str, value: Any, problem: str) -> None:
        line = _one_line(f"{key}: {problem} (got {value!r})")
        if line not in self.lines:  # the same problem found twice is still one problem
            self.lines.append(line)

    def warn(self, key: str, value: Any, problem: str) -> None:
        line = _one_line(f"{key}: {problem} (got {value!r})")
        if line not in self.warnings:
            self.warnings.append(line)

    def __bool__(self):
        return bool(self.lines)


def _one_line(text: str) -> str:
    """Problems come from many libraries; whatever they say is shown on one line."""
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


# ---------------------------------------------------------------------------- typed readers

def _unknown_keys(d: dict, allowed, where: str, p: Problems) -> set[str]:
    """One line per unknown key, with the closest known key; returns the keys suggested (a
    misspelt key is one problem: the caller does not also report the intended key as missing)."""
    allowed = [a for a in allowed if not str(a).startswith("_")]
    suggested = set()
    for k in d:
        if k not in allowed:
            alias = ALIASES.get(str(k)) or ALIASES.get(str(k).lower())
            close = [alias] if alias in allowed else difflib.get_close_matches(
                str(k).lower(), list(allowed), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(allowed)}"
            if close:
                suggested.add(close[0])
            p.add(f"{where}{k}", d[k], f"unknown key{hint}")
    return suggested


def _section(raw: dict, key: str, p: Problems) -> dict:
    v = raw.get(key, {})
    if v is None:
        return {}
    if not isinstance(v, dict):
        p.add(key, v, "must be a mapping")
        return {}
    return v


def _number(key, v, p, *, integer=False, lo=None, hi=None, lo_open=False, allow_none=False):
    """A number in range, or None after recording a problem. YAML reads ``2e-5`` as a string,
    so numeric strings are accepted for real-valued keys."""
    if v is None and allow_none:
        return None
    if isinstance(v, str) and not integer:
        try:
            v = float(v)
        except ValueError:
            pass
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok_type or (isinstance(v, float) and not math.isfinite(v)):
        p.add(key, v, "must be an integer" if integer else "must be a number")
        return None
    if lo is not None and (v <= lo if lo_open else v < lo):
        p.add(key, v, f"must be {'>' if lo_open else '>='} {lo}")
        return None
    if hi is not None and v > hi:
        p.add(key, v, f"must be <= {hi}")
        return None
    return v


def _bool(key, v, p):
    if not isinstance(v, bool):
        p.add(key, v, "must be true or false")
        return None
    return v


def _str(key, v, p, choices=None):
    if not isinstance(v, str) or not v.strip():
        p.add(key, v, "must be a non-empty string")
        return None
    if choices and v not in choices:
        p.add(key, v, f"must be one of {', '.join(choices)}")
        return None
    return v


# ---------------------------------------------------------------------------- sections

def _models(raw, p: Problems, trust_default: bool, suggested: set) -> tuple[ModelSpec, ...]:
    if "models" not in raw:
        if "models" not in suggested:  # a misspelt 'models' was reported already
            p.add("models", None, "missing; list the models to study, e.g. models: [{name: gpt2}]")
        return ()
    models = raw["models"]
    if isinstance(models, str) and models.strip():
        models = [models]  # one model given by name, as k: 0.5 or seeds: 0 give one value
    if not isinstance(models, list) or not models:
        p.add("models", models, "must be a non-empty list of models, e.g. [{name: gpt2}]")
        return ()
    out, seen = [], {}
    for i, m in enumerate(models):
        key = f"models[{i}]"
        if isinstance(m, str):
            m = {"name": m}
        if not isinstance(m, dict):
            p.add(key, m, "must be a model name or a mapping with a 'name'")
            continue
        hinted = _unknown_keys(m, MODEL_KEYS, f"{key}.", p)
        if "name" not in m and "name" in hinted:
            continue
        if "name" not in m:
            p.add(f"{key}.name", None, "missing; every model needs a name (hub id, directory or preset:)")
            continue
        name = _str(f"{key}.name", m.get("name"), p)
        label = m.get("label") or (default_label(name) if name else None)
        if label is not None:
            label = _str(f"{key}.label", label, p)
        tok = m.get("tokenizer")
        if tok is not None:
            tok = _str(f"{key}.tokenizer", tok, p)
        trust = _bool(f"{key}.trust_remote_code", m.get("trust_remote_code", trust_default), p)
        if name and label:
            if label in seen:
                p.add(f"{key}.label", label, f"duplicate model label (models[{seen[label]}] has it too); "
                                             "set 'label:' to tell the models apart")
            else:
                seen[label] = i
            out.append(ModelSpec(name=name, label=label, tokenizer=tok, trust_remote_code=bool(trust)))
    return tuple(out)


def _fields(cls, section: dict, where: str, p: Problems, rules: dict) -> dict:
    """Read a dataclass section with per-field rules: (kind, kwargs)."""
    names = [f.name for f in dataclasses.fields(cls)]
    _unknown_keys(section, names + list(rules.get("_extra", ())), f"{where}.", p)
    out = {}
    for name in names:
        if name not in section:
            continue
        v, key = section[name], f"{where}.{name}"
        kind, kw = rules.get(name, ("str", {}))
        if kind == "num":
            v = _number(key, v, p, **kw)
        elif kind == "bool":
            v = _bool(key, v, p)
        else:
            v = _str(key, v, p, **kw) if not (v is None and kw.get("allow_none")) else None
        if v is not None or rules.get(name, ("", {}))[1].get("allow_none"):
            out[name] = v
    return out


DATA_RULES = {
    "max_length": ("num", dict(integer=True, lo=2, hi=8192)),
    "train_limit": ("num", dict(integer=True, lo=1, allow_none=True)),
    "eval_limit": ("num", dict(integer=True, lo=1, allow_none=True)),
    "num_labels": ("num", dict(integer=True, lo=2)),
    "drop_invalid": ("bool", {}),
    "synthetic_size": ("num", dict(integer=True, lo=50)),
}
TRAIN_RULES = {
    "epochs": ("num", dict(lo=0, lo_open=True)),
    "lr": ("num", dict(lo=0, lo_open=True, hi=1.0)),
    "batch_size": ("num", dict(integer=True, lo=1)),
    "eval_batch_size": ("num", dict(integer=True, lo=1)),
    "mixed_precision": ("str", dict(choices=("auto", "no", "fp16", "bf16"))),
    "warmup_ratio": ("num", dict(lo=0, hi=1)),
    "weight_decay": ("num", dict(lo=0)),
    "max_grad_norm": ("num", dict(lo=0)),
    "group_by_length": ("bool", {}),
    "_extra": ("recovery_epochs",),
}
IMPORTANCE_RULES = {
    "examples": ("num", dict(integer=True, lo=1)),
    "normalize_per_layer": ("bool", {}),
    "batch_size": ("num", dict(integer=True, lo=1)),
}


def _recovery(section: dict, p: Problems) -> tuple[float, ...]:
    v = section.get("recovery_epochs", 0)
    values = v if isinstance(v, list) else [v]
    out = []
    for i, x in enumerate(values):
        key = "finetune.recovery_epochs" + (f"[{i}]" if isinstance(v, list) else "")
        x = _number(key, x, p, lo=0)
        if x is not None:
            out.append(float(x))
    if len(set(out)) != len(out):
        p.add("finetune.recovery_epochs", v, "values must be unique")
    return tuple(dict.fromkeys(out)) or (0.0,)


def _strategies(raw, p) -> tuple[str, ...]:
    v = raw.get("strategies", list(STRATEGY_NAMES))
    if isinstance(v, str) and v.strip():
        v = [v]  # one strategy given by name
    if not isinstance(v, list) or not v:
        p.add("strategies", v, "must be a non-empty list")
        return ()
    out = []
    for i, s in enumerate(v):
        if s not in STRATEGY_NAMES:
            close = difflib.get_close_matches(str(s), STRATEGY_NAMES, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            p.add(f"strategies[{i}]", s, f"unknown strategy; available: {', '.join(STRATEGY_NAMES)}{hint}")
        elif s in out:
            p.add(f"strategies[{i}]", s, "listed twice")
        else:
            out.append(s)
    return tuple(out)


def _ks(raw, p, strategies) -> tuple[int | float, ...]:
    v = raw.get("k", [0.1, 0.25, 0.5, 0.75])
    values = v if isinstance(v, list) else [v]
    out, before = [], len(p.lines)
    if not values:
        p.add("k", v, "must list at least one K (an integer head count or a fraction in (0, 1))")
        return ()
    for i, k in enumerate(values):
        key = f"k[{i}]" if isinstance(v, list) else "k"
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            p.add(key, k, "must be an integer head count or a fraction in (0, 1)")
        elif isinstance(k, float) and not k.is_integer() and not 0 < k < 1:
            p.add(key, k, "a fractional K must lie in (0, 1)")
        elif isinstance(k, float) and k.is_integer():
            p.add(key, k, "write head counts as integers (e.g. 3) and fractions in (0, 1)")
        elif isinstance(k, int) and k < 0:
            p.add(key, k, "must be >= 0")
        elif k in out:
            p.add(key, k, "listed twice")
        else:
            out.append(k)
    if len(p.lines) == before and any(s in strategies for s in ("top", "bottom", "random")) \
            and not [k for k in out if k]:
        p.add("k", v, "top/bottom/random need at least one K > 0")
    return tuple(out)


def _seeds(raw, p) -> tuple[int, ...]:
    v = raw.get("seeds", [0])
    values = v if isinstance(v, list) else [v]
    out = []
    if not values:
        p.add("seeds", v, "must list at least one seed")
        return ()
    for i, s in enumerate(values):
        key = f"seeds[{i}]" if isinstance(v, list) else "seeds"
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            p.add(key, s, "must be a non-negative integer")
        elif s in out:
            p.add(key, s, "duplicate seed")
        else:
            out.append(s)
    return tuple(out)


def _single_head_arch(raw, p) -> str | None:
    v = raw.get("single_head_arch", False)
    if v is False or v is None:
        return None
    if v is True:
        return "pretrained"
    if isinstance(v, dict):
        _unknown_keys(v, ("init",), "single_head_arch.", p)
        return _str("single_head_arch.init", v.get("init", "pretrained"), p, choices=("pretrained", "random"))
    p.add("single_head_arch", v, "must be false, true, {init: pretrained} or {init: random}")
    return None


def _resources(raw, p) -> dict[str, Resources]:
    sec = _section(raw, "resources", p)
    _unknown_keys(sec, RESOURCE_STAGES, "resources.", p)
    defaults = {"finetune": Resources(1, 0), "prune": Resources(1, 0)}
    out = {}
    for stage in RESOURCE_STAGES:
        r = sec.get(stage, {}) or {}
        if not isinstance(r, dict):
            p.add(f"resources.{stage}", r, "must be a mapping {cpu: N, gpu: N}")
            r = {}
        _unknown_keys(r, ("cpu", "gpu"), f"resources.{stage}.", p)
        cpu = _number(f"resources.{stage}.cpu", r.get("cpu", defaults[stage].cpu), p, lo=0, lo_open=True)
        gpu = _number(f"resources.{stage}.gpu", r.get("gpu", defaults[stage].gpu), p, lo=0)
        if gpu is not None and gpu > 1 and not float(gpu).is_integer():
            p.add(f"resources.{stage}.gpu", gpu, "a fractional GPU share must be <= 1 (Ray cannot split "
                                                 "a trial across GPUs)")
            gpu = None
        out[stage] = Resources(cpu if cpu is not None else 1, gpu if gpu is not None else 0)
    return out


def parse(raw: Any, p: Problems) -> Sweep | None:
    """Structure and types only (no file system, no network). ``None`` if any problem."""
    if not isinstance(raw, dict):
        p.add("(sweep file)", raw if raw is None else type(raw).__name__,
              "must be a YAML mapping of sweep keys (name:, models:, data:, ...)")
        return None
    suggested = _unknown_keys(raw, TOP_KEYS, "", p)
    name = _str("name", raw.get("name", "sweep"), p)
    if name and not all(c.isalnum() or c in "-_." for c in name):
        p.add("name", name, "use letters, digits, '-', '_' and '.' only (it names a directory)")
    trust = _bool("trust_remote_code", raw.get("trust_remote_code", False), p)
    models = _models(raw, p, bool(trust), suggested)
    data = DataSpec(**_fields(DataSpec, _section(raw, "data", p), "data", p, DATA_RULES))
    importance = ImportanceSpec(**_fields(ImportanceSpec, _section(raw, "importance", p), "importance", p,
                                          IMPORTANCE_RULES))
    ft_sec = _section(raw, "finetune", p)
    train = TrainSpec(**_fields(TrainSpec, ft_sec, "finetune", p, TRAIN_RULES))
    recovery = _recovery(ft_sec, p)
    strategies = _strategies(raw, p)
    ks = _ks(raw, p, strategies)
    per_layer = _bool("per_layer", raw.get("per_layer", False), p)
    seeds = _seeds(raw, p)
    sha = _single_head_arch(raw, p)
    resources = _resources(raw, p)
    storage = _str("storage", raw.get("storage", "./sweeps"), p)
    if storage and "://" in storage and storage.split("://", 1)[0] not in STORAGE_SCHEMES:
        p.add("storage", storage, UNSUPPORTED_SCHEME)  # static: reported with the other file problems
    max_failures = _number("max_failures", raw.get("max_failures", 2), p, integer=True, lo=0)
    if p:
        return None
    return Sweep(name=name, models=models, data=data, importance=importance, train=train,
                 recovery_epochs=recovery, strategies=strategies, k=ks, per_layer=bool(per_layer),
                 seeds=seeds, single_head_arch=sha, resources=resources, storage=storage,
                 max_failures=max_failures)


def load_yaml(path: str | os.PathLike, p: Problems) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        p.add("(sweep file)", str(path), f"cannot read ({e.strerror or e})")
        return None
    except UnicodeDecodeError as e:
        p.add("(sweep file)", str(path), f"not a text (UTF-8) file: byte {e.start} cannot be decoded")
        return None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        p.add("(sweep file)", str(path), f"not valid YAML{where}: {getattr(e, 'problem', None) or e}")
        return None
    if raw is None:
        p.add("(sweep file)", str(path), "is empty; expected a mapping of sweep keys (name:, models:, ...)")
    elif not isinstance(raw, dict):
        p.add("(sweep file)", str(path), f"must be a YAML mapping of sweep keys (name:, models:, ...), "
                                         f"not a {type(raw).__name__}")
    return raw
