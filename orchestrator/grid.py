"""Sweep -> trial grid. Stage A: one fine-tune per (model variant, seed). Stage B: one trial per
(model, strategy, K, seed, recovery_epochs), without meaningless combinations:

- ``none`` is the stage-A evaluation itself (K = 0); with recovery epochs > 0 it becomes a stage-B
  trial that keeps fine-tuning the unpruned model for as long (the fair baseline for recovery);
- ``single-head`` has its own K (all heads but one per layer): one trial, whatever the K list;
- K values that resolve to the same head count for a model run once (the first one listed);
- one-head architecture variants (``single_head_arch``) only get stage A.
"""
from __future__ import annotations

from orchestrator.checks import Heads
from orchestrator.sweep import Sweep
from trials.spec import FinetuneSpec, ModelSpec, PruneSpec
from trials.strategies import resolve_k


def variants(sweep: Sweep) -> list[ModelSpec]:
    out = list(sweep.models)
    if sweep.single_head_arch:
        out += [ModelSpec(m.name, m.label, m.tokenizer, sweep.single_head_arch, m.trust_remote_code)
                for m in sweep.models]
    return out


def stage_a(sweep: Sweep) -> list[FinetuneSpec]:
    return [FinetuneSpec(model=m, data=sweep.data, train=sweep.train, importance=sweep.importance, seed=s)
            for m in variants(sweep) for s in sweep.seeds]


def distinct_ks(sweep: Sweep, heads: Heads) -> list[int | float]:
    """The K values of the sweep that remove distinct numbers of heads from this model."""
    seen, out = set(), []
    for k in sweep.k:
        if not k:
            continue
        n = resolve_k(k, heads.n_layers, heads.n_heads, sweep.per_layer)
        if n not in seen:
            seen.add(n)
            out.append(k)
    return out


def stage_b(sweep: Sweep, heads: dict[str, Heads]) -> list[PruneSpec]:
    specs = []
    for ft in stage_a(sweep):
        if ft.model.single_head:
            continue
        ks = distinct_ks(sweep, heads[ft.model.label])
        for r in sweep.recovery_epochs:
            for strategy in sweep.strategies:
                if strategy == "none":
                    if r:
                        specs.append(PruneSpec(ft, "none", 0, False, r))
                elif strategy == "single-head":
                    specs.append(PruneSpec(ft, "single-head", 0, False, r))
                else:
                    specs += [PruneSpec(ft, strategy, k, sweep.per_layer, r) for k in ks]
    return specs


def duplicate_k_notes(sweep: Sweep, heads: dict[str, Heads]) -> list[str]:
    notes = []
    for label, h in heads.items():
        kept = set(distinct_ks(sweep, h))
        for k in sweep.k:
            if k and k not in kept:
                n = resolve_k(k, h.n_layers, h.n_heads, sweep.per_layer)
                notes.append(f"k: {k!r} removes {n} heads of {label}, like an earlier K; run once")
    return notes


def trial_name(spec) -> str:
    """A short readable name (Ray's trial name, grid.json, status): stage, variant, strategy, K,
    seed, recovery, and the key's first digits."""
    if isinstance(spec, PruneSpec):
        ft = spec.finetune
        rec = f"-r{spec.recovery_epochs:g}" if spec.recovery_epochs else ""
        return f"B-{ft.model.variant}-{spec.strategy}-k{spec.k}-s{ft.seed}{rec}-{spec.key[:6]}"
    return f"A-{spec.model.variant}-s{spec.seed}-{spec.key[:6]}"
