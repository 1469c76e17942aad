"""Several sweeps in one analysis: the same models on two tasks, or more seeds added later.

Rule (docs/analysis.md): sweeps combine when
  - they share the primary metric;
  - on the same task (data.source), they ran the same protocol: the same data settings, the same
    fine-tuning (every finetune key but recovery_epochs, a condition of its own, and
    eval_batch_size, which changes no number), the same importance examples and normalisation,
    and each model label names the same model; so their seeds are draws of one procedure;
  - on any task, a model label names one model (its heads are compared across tasks);
  - no (condition, seed, draw) is in two sweeps with different trials (the same trial, by its
    key, twice is dropped once with a note).
Anything else is refused with one line naming the key and both values, before anything is
written. Sweeps on different tasks keep their own conditions (the ``task`` column) and are never
pooled; what they share is the heads, compared by analysis.importance.task_agreement.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from headsweep.trials import layout
from headsweep.trials.errors import UserError
from headsweep.trials.schema import CONDITION

from .load import Sweep, first_config

FINETUNE_IGNORED = ("recovery_epochs", "eval_batch_size")
IMPORTANCE_KEYS = ("examples", "normalize", "normalize_per_layer")   # the second: sweeps before issue 22
UNIT_KEYS = ("unit",)     # what K and the scores count (query heads or KV groups): must agree too


def protocol(sweep: Sweep) -> dict | None:
    """The settings that must agree for two sweeps' seeds to be pooled, as flat 'section.key'
    entries; None when the sweep records neither spec.yaml nor a row config."""
    spec = sweep.specs[0] if sweep.specs else None
    if spec:
        data, train = spec.get("data") or {}, spec.get("finetune") or {}
        imp = spec.get("importance") or {}
        models = {str(m.get("label") or m.get("name")): str(m.get("name")) for m in spec.get("models") or []
                  if isinstance(m, dict)}
    else:
        raw = sweep.results
        cfg = first_config(raw[raw["strategy"] == "none"]) if "config" in raw.columns else {}
        if not cfg:
            return None
        data, train, imp = cfg.get("data") or {}, cfg.get("train") or {}, cfg.get("importance") or {}
        models = {}
        for text in raw.get("config", pd.Series(dtype=str)).dropna():
            m = (json.loads(text).get("model") or {})
            if m.get("label"):
                models[str(m["label"])] = str(m.get("name"))
    out = {f"data.{k}": v for k, v in data.items()}
    out.update({f"finetune.{k}": v for k, v in train.items() if k not in FINETUNE_IGNORED})
    out.update({f"importance.{k}": imp[k] for k in IMPORTANCE_KEYS if k in imp})
    out.update({f"importance.{k}": imp.get(k, "head") for k in UNIT_KEYS})
    out.update({f"models[{label}].name": name for label, name in models.items()})
    return out


def check_compatible(sweeps: list[Sweep]) -> list[str]:
    """Raise UserError for sweeps that cannot be combined; return notes for what was not checkable."""
    notes = []
    seen = {}
    for s in sweeps:
        if s.path in seen:
            raise UserError("sweep_dir", str(s.path), "given twice")
        seen[s.path] = s
    first = sweeps[0]
    for s in sweeps[1:]:
        if s.metric != first.metric:
            raise UserError("metric", f"{first.name}: {first.metric}, {s.name}: {s.metric}",
                            "sweeps with different primary metrics cannot be analysed together")
    by_task: dict = {}
    for s in sweeps:
        tasks = set(s.results["task"]) if len(s.results) else {""}
        for t in tasks:
            by_task.setdefault(t, []).append(s)
    for task, group in by_task.items():
        ref = group[0]
        p_ref = protocol(ref)
        for s in group[1:]:
            p = protocol(s)
            if p_ref is None or p is None:
                notes.append(f"{ref.name} / {s.name}: no {layout.SPEC} or row config, so their protocols could not be "
                             "compared; they were pooled as one task")
                continue
            for key in sorted(set(p_ref) & set(p)):
                if p_ref[key] != p[key]:
                    raise UserError(key, f"{ref.name}: {p_ref[key]!r}, {s.name}: {p[key]!r}",
                                    f"sweeps on the same task ({task or 'unnamed'}) ran different protocols, so "
                                    "their seeds cannot be pooled")
    # Across tasks too, a model label must name one model: its heads are compared between tasks
    # (task_agreement) and its rows share figure panels.
    names: dict = {}
    for s in sweeps:
        for key, value in (protocol(s) or {}).items():
            if key.startswith("models["):
                first_name, where = names.setdefault(key, (value, s.name))
                if value != first_name:
                    raise UserError(key, f"{where}: {first_name!r}, {s.name}: {value!r}",
                                    "one model label names two different models; give them different labels")
    return notes


def combine(sweeps: list[Sweep]) -> Sweep:
    notes = check_compatible(sweeps)
    for s in sweeps:
        notes += [f"{s.name}: {n}" for n in s.notes]
    names = [s.name for s in sweeps]
    if len(set(names)) < len(names):  # two sweeps of one name (more seeds later): tell them apart by path
        for s in sweeps:
            s.name = str(s.path)
            s.results = s.results.assign(sweep=s.name)
    results = pd.concat([s.results for s in sweeps], ignore_index=True)
    key = CONDITION + ["seed", "draw"]
    dup = results.duplicated(key, keep=False)
    if dup.any():
        d = results[dup]
        for _, g in d.groupby(key, sort=False):
            if g["trial_key"].astype(str).nunique() > 1:   # within one sweep clean_results left no duplicate
                r = g.iloc[0]
                raise UserError("seeds", int(r["seed"]),
                                f"{r['model']} {r['strategy']} K={int(r['k'])}: this seed is in both "
                                f"{g['sweep'].iloc[0]} and {g['sweep'].iloc[1]} with different trials; combine sweeps "
                                "whose seeds differ")
        n = int(results.duplicated(key + ["trial_key"]).sum())
        results = results.drop_duplicates(key + ["trial_key"], keep="first")
        if n:
            notes.append(f"{n} trial(s) appear in more than one sweep (same trial key): counted once")
    imps = [s.importance for s in sweeps if s.importance is not None]
    importance = None
    if imps:
        importance = pd.concat(imps, ignore_index=True).drop_duplicates(["task", "model", "method", "seed", "layer",
                                                                         "head"])
    pred_dir = {}
    for s in sweeps:
        pred_dir.update(s._pred_dir)
    name = " + ".join(s.name for s in sweeps)
    return Sweep(paths=[s.path for s in sweeps], name=name, results=results.reset_index(drop=True),
                 importance=importance, metric=sweeps[0].metric, notes=notes,
                 specs=[x for s in sweeps for x in s.specs], _pred_dir=pred_dir)


def describe(paths: list[Path]) -> str:
    return ", ".join(str(p) for p in paths)
