"""Sweep -> trial grid. Stage A: one fine-tune per (model variant, seed). Stage B: one trial per
(model, strategy, K, seed, recovery_epochs), without meaningless combinations:

- ``none`` is the stage-A evaluation itself (K = 0); with recovery epochs > 0 it becomes a stage-B
  trial that keeps fine-tuning the unpruned model for as long (the fair baseline for recovery);
- ``single-head`` has its own K (all heads but one per layer): one trial, whatever the K list;
  so have ``layer-single-head`` (one trial per ``layer_single_head.keep`` rule, a row per layer)
  and ``each-head`` (one trial, a row per head; no recovery, no speed or saved model);
- ``iterative`` is one trial with a row per step of at most ``iterative.step``, with a step at
  every K of the grid (the spec's ``k_grid``: the distinct K as head counts of the model, so its
  key changes with the grid) and on to all heads; it ignores ``per_layer``;
- ``random`` runs ``random_draws`` trials per K (``draw`` 0..N-1), in parallel;
- the strategies that rank heads (top, bottom, single-head, layer-single-head with keep: ranked,
  iterative) run once per importance method (``importance.method: [gradient, ablation]``) on the
  same fine-tunes; ``none``, ``random`` and ``each-head`` rank nothing and run once, labelled with
  the first method; ``layer-single-head`` with keep: best ranks by the evaluation set and runs
  once, labelled ``oracle``;
- K values that resolve to the same head count for a model run once (the first one listed);
- one-head architecture variants and the from-scratch multi-head variant (``single_head_arch``)
  only get stage A.
"""
from __future__ import annotations

from headsweep.orchestrator.checks import Heads
from headsweep.orchestrator.sweep import Sweep
from headsweep.trials.schema import ORACLE
from headsweep.trials.spec import FinetuneSpec, ModelSpec, PruneSpec
from headsweep.trials.strategies import resolve_k


RANKED = ("top", "bottom", "single-head", "layer-single-head", "iterative")   # use importance scores
ONE_TRIAL = ("single-head", "layer-single-head", "iterative", "each-head")    # ignore the K list


def variants(sweep: Sweep) -> list[ModelSpec]:
    """The models, then their one-head variants, then (init: scratch) the multi-head models
    trained from scratch."""
    out = list(sweep.models)
    if sweep.single_head_arch:
        out += [ModelSpec(m.name, m.label, m.tokenizer, sweep.single_head_arch, m.trust_remote_code,
                          revision=m.revision) for m in sweep.models]
    if sweep.single_head_arch == "scratch":
        out += [ModelSpec(m.name, m.label, m.tokenizer, None, m.trust_remote_code, scratch=True,
                          revision=m.revision) for m in sweep.models]
    return out


def stage_a(sweep: Sweep) -> list[FinetuneSpec]:
    return [FinetuneSpec(model=m, data=sweep.data, train=sweep.train, importance=sweep.importance, seed=s,
                         metric=sweep.metric)
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


def k_grid(sweep: Sweep, heads: Heads) -> tuple[int, ...]:
    """The sweep's K grid as heads removed from the whole model (``per_layer``: per-layer counts
    times the layers, as a per-layer row's ``k``), ascending: where iterative rows fall."""
    per = heads.n_layers if sweep.per_layer else 1
    return tuple(sorted(resolve_k(k, heads.n_layers, heads.n_heads, sweep.per_layer) * per
                        for k in distinct_ks(sweep, heads)))


def stage_b(sweep: Sweep, heads: dict[str, Heads]) -> list[PruneSpec]:
    specs = []
    first = sweep.importance.method[0]
    for ft in stage_a(sweep):
        if ft.model.single_head or ft.model.scratch:
            continue
        ks = distinct_ks(sweep, heads[ft.model.label])
        grid_counts = k_grid(sweep, heads[ft.model.label])

        def spec(strategy, k=0, per_layer=False, r=0.0, method=first, **kw):
            return PruneSpec(ft, strategy, k, per_layer, r, importance_method=method,
                             measure_speed=sweep.measure_speed, save_pruned=sweep.save_pruned, **kw)

        for r in sweep.recovery_epochs:
            for strategy in sweep.strategies:
                if strategy == "none":
                    if r:
                        specs.append(spec("none", r=r))
                elif strategy == "random":
                    specs += [spec("random", k, sweep.per_layer, r, draw=d)
                              for k in ks for d in range(sweep.random_draws)]
                elif strategy == "each-head":
                    if not r:       # a measurement of each head on the fine-tuned model
                        specs.append(PruneSpec(ft, strategy, 1, importance_method=first))
                elif strategy == "layer-single-head":
                    keep = sweep.layer_single_head.keep
                    if "ranked" in keep:
                        specs += [spec(strategy, r=r, method=method) for method in sweep.importance.method]
                    if "best" in keep:       # ranked by the evaluation set: once, whatever the methods
                        specs.append(spec(strategy, r=r, method=ORACLE, keep="best"))
                else:
                    for method in sweep.importance.method:
                        if strategy == "iterative":
                            specs.append(spec(strategy, r=r, method=method, iterative_step=sweep.iterative.step,
                                              k_grid=grid_counts))
                        elif strategy in ONE_TRIAL:
                            specs.append(spec(strategy, r=r, method=method))
                        else:
                            specs += [spec(strategy, k, sweep.per_layer, r, method) for k in ks]
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
        method = f"-{spec.importance_method}" if spec.importance_method != ft.importance.method[0] else ""
        k = f"-step{spec.iterative_step:g}" if spec.strategy == "iterative" else f"-k{spec.k}"
        draw = f"-d{spec.draw}" if spec.draw is not None else ""
        return f"B-{ft.model.variant}-{spec.strategy}{method}{k}{draw}-s{ft.seed}{rec}-{spec.key[:6]}"
    return f"A-{spec.model.variant}-s{spec.seed}-{spec.key[:6]}"
