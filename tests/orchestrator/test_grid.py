"""The trial grid (orchestrator/grid.py) against counts made by hand: random-K draws, importance
methods as a grid factor, the strategies that are one trial whatever the K list, and the
``init: scratch`` variants (stage A only)."""
from __future__ import annotations

import copy
from collections import Counter

import pytest

from headsweep.orchestrator import grid
from headsweep.orchestrator.checks import Heads
from headsweep.orchestrator.readers import Problems
from headsweep.orchestrator.sweep import parse

BASE = {
    "name": "g",
    "models": [{"name": "preset:tiny-bert", "label": "tiny"}],
    "data": {"source": "synthetic"},
    "strategies": ["none", "random"],
    "k": [2, 0.25],                  # 0.25 of 16 heads = 4: two distinct K
    "seeds": [0, 1],
}
HEADS = {"tiny": Heads("bert", 4, 4)}


def sweep_of(**changes):
    raw = copy.deepcopy(BASE)
    raw.update(changes)
    p = Problems()
    sweep = parse(raw, p)
    assert not p.lines, p.lines
    return sweep


def test_random_draws_give_n_trials_per_checkpoint_and_k():
    sweep = sweep_of(random_draws=3)
    specs = grid.stage_b(sweep, HEADS)
    assert len(specs) == 2 * 2 * 3                                   # seeds x K x draws
    per = Counter((s.seed, s.k) for s in specs)
    assert per == {(seed, k): 3 for seed in (0, 1) for k in (2, 0.25)}
    for seed in (0, 1):
        for k in (2, 0.25):
            assert sorted(s.draw for s in specs if (s.seed, s.k) == (seed, k)) == [0, 1, 2]
    assert len({s.key for s in specs}) == len(specs)
    assert len({grid.trial_name(s) for s in specs}) == len(specs)
    assert all(s.strategy == "random" for s in specs)


def test_random_draws_default_to_five():
    sweep = sweep_of()
    assert sweep.random_draws == 5
    specs = grid.stage_b(sweep, HEADS)
    assert len(specs) == 2 * 2 * 5
    assert sorted({s.draw for s in specs}) == [0, 1, 2, 3, 4]


def test_k_values_removing_the_same_heads_run_once_per_draw():
    specs = grid.stage_b(sweep_of(k=[4, 0.25], random_draws=2), HEADS)   # both remove 4 heads
    assert len(specs) == 2 * 1 * 2


def test_methods_are_a_grid_factor_on_the_same_fine_tunes():
    sweep = sweep_of(strategies=["none", "top", "bottom", "random", "single-head", "layer-single-head",
                                 "iterative"],
                     importance={"method": ["gradient", "ablation"]}, random_draws=2, iterative={"step": 0.25})
    a, b = grid.stage_a(sweep), grid.stage_b(sweep, HEADS)
    assert len(a) == 2                                                   # one fine-tune per seed
    # per seed: (top, bottom) x 2 K x 2 methods + random 2 K x 2 draws + (single-head,
    # layer-single-head, iterative) x 2 methods; none at recovery 0 is stage A itself
    per_seed = 2 * 2 * 2 + 2 * 2 + 3 * 2
    assert len(b) == 2 * per_seed
    assert {s.finetune.key for s in b} == {ft.key for ft in a}
    methods = Counter((s.strategy, s.importance_method) for s in b if s.seed == 0)
    assert methods == {("top", "gradient"): 2, ("top", "ablation"): 2, ("bottom", "gradient"): 2,
                       ("bottom", "ablation"): 2, ("random", "gradient"): 4,
                       ("single-head", "gradient"): 1, ("single-head", "ablation"): 1,
                       ("layer-single-head", "gradient"): 1, ("layer-single-head", "ablation"): 1,
                       ("iterative", "gradient"): 1, ("iterative", "ablation"): 1}
    assert all(s.iterative_step == 0.25 for s in b if s.strategy == "iterative")
    assert all(s.iterative_step is None for s in b if s.strategy != "iterative")
    assert all(s.draw is None for s in b if s.strategy != "random")
    assert len({s.key for s in b}) == len(b)


def test_recovery_list_multiplies_and_none_becomes_a_trial():
    sweep = sweep_of(strategies=["none", "top"], finetune={"recovery_epochs": [0, 1]}, k=[2])
    specs = grid.stage_b(sweep, HEADS)
    # per seed: top@2 at r=0 and r=1, plus none at r=1
    assert len(specs) == 2 * 3
    assert Counter((s.strategy, s.recovery_epochs) for s in specs) == {("top", 0.0): 2, ("top", 1.0): 2,
                                                                     ("none", 1.0): 2}


@pytest.mark.parametrize("init", ["pretrained", "random", "scratch"])
def test_single_head_arch_variants_get_stage_a_only(init):
    sweep = sweep_of(single_head_arch={"init": init}, strategies=["none", "top"], k=[2])
    a, b = grid.stage_a(sweep), grid.stage_b(sweep, HEADS)
    want = {"tiny", "tiny-1head"} | ({"tiny-scratch"} if init == "scratch" else set())
    assert Counter(ft.model.variant for ft in a) == {v: 2 for v in want}
    one = [ft for ft in a if ft.model.variant == "tiny-1head"]
    assert all(ft.model.single_head == init and ft.model.arch == "single-head" for ft in one)
    if init == "scratch":
        multi = [ft for ft in a if ft.model.variant == "tiny-scratch"]
        assert all(ft.model.scratch and ft.model.single_head is None and ft.model.init == "scratch"
                   and ft.model.arch == "multi-head" for ft in multi)
    assert {s.finetune.model.variant for s in b} == {"tiny"}            # stage B on the base only
    assert len(b) == 2
    assert len({ft.key for ft in a}) == len(a)


def test_each_head_is_one_trial_per_checkpoint_without_recovery():
    sweep = sweep_of(strategies=["each-head", "top"], k=[2], finetune={"recovery_epochs": [0, 1]},
                     importance={"method": ["gradient", "ablation"]}, measure_speed=True, save_pruned=True)
    each = [s for s in grid.stage_b(sweep, HEADS) if s.strategy == "each-head"]
    assert len(each) == 2                                              # one per seed, recovery 0 only
    assert {s.seed for s in each} == {0, 1}
    # ranks nothing: once, labelled with the first method; k 1 (each row removes one head)
    assert all(s.recovery_epochs == 0 and s.importance_method == "gradient" and s.k == 1 for s in each)
    assert not any(s.measure_speed or s.save_pruned for s in each)
    assert len({grid.trial_name(s) for s in grid.stage_b(sweep, HEADS)}) == len(grid.stage_b(sweep, HEADS))


@pytest.mark.parametrize("keep, want", [
    (None, [("gradient", "ranked"), ("ablation", "ranked")]),
    ("best", [("oracle", "best")]),
    (["ranked", "best"], [("gradient", "ranked"), ("ablation", "ranked"), ("oracle", "best")]),
])
def test_layer_single_head_keep_rules(keep, want):
    extra = {} if keep is None else {"layer_single_head": {"keep": keep}}
    sweep = sweep_of(strategies=["layer-single-head"], importance={"method": ["gradient", "ablation"]}, **extra)
    specs = [s for s in grid.stage_b(sweep, HEADS) if s.seed == 0]
    assert [(s.importance_method, s.keep) for s in specs] == want
    names = [grid.trial_name(s) for s in specs]
    assert len(set(names)) == len(names)
    assert all("-oracle-" in n for n, s in zip(names, specs) if s.keep == "best")


def test_iterative_carries_the_k_grid_as_head_counts():
    heads = {"tiny": Heads("bert", 6, 12)}                              # 72 heads
    sweep = sweep_of(strategies=["iterative", "bottom"], k=[0.1, 0.2, 0.3, 0.4, 0.5, 7])
    (it,) = [s for s in grid.stage_b(sweep, heads) if s.strategy == "iterative" and s.seed == 0]
    assert it.k_grid == (7, 14, 22, 29, 36)                            # 7 heads and 10% are one K
    bottom = [s for s in grid.stage_b(sweep, heads) if s.strategy == "bottom" and s.seed == 0]
    assert len(bottom) == len(it.k_grid)                               # the same distinct K
    # another grid, another trial key
    other = [s for s in grid.stage_b(sweep_of(strategies=["iterative"], k=[0.1, 0.5]), heads) if s.seed == 0][0]
    assert other.k_grid == (7, 36) and other.key != it.key
    # per_layer: per-layer counts times the layers, as a per-layer row's k
    per = [s for s in grid.stage_b(sweep_of(strategies=["iterative"], k=[1, 0.25], per_layer=True), heads)][0]
    assert per.k_grid == (6, 18)
