"""Iterative pruning (strategy ``iterative``, trials/iterative.py) against a hand loop: score,
remove the least important ``step`` of the heads, re-score on the masked model, repeat.

The hand loop uses only plain transformers, ``trials.masked`` and ``trials.head_importance``
(both tested against independent computations in test_gates.py / test_importance.py) and its own
ranking and per-layer normalisation; every row is re-checked on the checkpoint (``check_row``).
"""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from headsweep import trials
from tests.trials.conftest import check_row, make_checkpoint, stage_a_scores
from headsweep.trials import layout
from headsweep.trials.run import run_prune
from headsweep.trials.spec import DataSpec, PruneSpec

DATA = DataSpec(source="synthetic", synthetic_size=120, max_length=32, eval_limit=48)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt-iterative")
    return make_checkpoint(path, "bert", DATA), path


def importance_batches(ft, path):
    """The importance examples of the trial, tokenised by the checkpoint's tokenizer."""
    from transformers import AutoTokenizer

    from headsweep.trials.data import Encoded, eval_loader, load_task
    tok = AutoTokenizer.from_pretrained(path)
    task = load_task(ft.data, ft.importance.examples)
    enc = Encoded(task.importance, tok, ft.data.max_length, token_types=True)
    return list(eval_loader(enc, tok.pad_token_id, ft.importance.batch_size))


def hand_loop(path, batches, first: np.ndarray, step: float) -> list[list[tuple[int, int]]]:
    """The removed set after each step, recomputed by hand (no grid: ``step`` at a time)."""
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    n_layers, n_heads = first.shape
    total = n_layers * n_heads
    per_step = max(1, math.floor(step * total + 0.5))
    scores, removed, sets = first, [], []
    while len(removed) < total:
        left = sorted((scores[l, h], -l, -h) for l in range(n_layers) for h in range(n_heads)
                      if (l, h) not in removed)       # least important first; ties: higher (l, h) first
        removed = sorted(removed + [(-l, -h) for _, l, h in left[:per_step]])
        sets.append(removed)
        if len(removed) < total:
            with trials.masked(model, removed):
                raw = trials.head_importance(model, batches).double().numpy()
            for l, h in removed:
                raw[l, h] = 0.0                                          # no longer candidates
            norm = np.sqrt((raw ** 2).sum(1, keepdims=True))
            scores = np.divide(raw, norm, out=np.zeros_like(raw), where=norm > 0)
    return sets


@pytest.mark.parametrize("step", [0.25, 0.3])     # 0.3 of 16 heads = 5 per step, 1 in the last
def test_iterative_equals_a_hand_loop_at_every_step(ckpt, tmp_path, step):
    ft, path = ckpt
    spec = PruneSpec(ft, "iterative", 0, iterative_step=step)
    rows = run_prune(spec, path, tmp_path)
    want = hand_loop(path, importance_batches(ft, path), stage_a_scores(path), step)
    assert len(rows) == len(want) == math.ceil(16 / max(1, math.floor(step * 16 + 0.5)))
    got = [sorted(tuple(h) for h in json.loads(r["heads_removed"])) for r in rows]
    assert got == want
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    assert [r["k"] for r in rows] == [len(s) for s in want] and rows[-1]["heads_kept"] == 0
    for a, b in zip(got, got[1:]):
        assert set(a) < set(b)                                       # the removed sets nest
    # re-scoring matters on this model: some step is not the stage-A bottom-K of its size
    first = stage_a_scores(path)
    order = sorted((first[l, h], l, h) for l in range(4) for h in range(4))
    assert any(s != sorted((l, h) for _, l, h in order[:len(s)]) for s in got)
    assert len({r["trial_key"] for r in rows}) == len(rows) and spec.key not in {r["trial_key"] for r in rows}
    assert all(r["spec_key"] == spec.key and r["strategy"] == "iterative" for r in rows)
    for row in rows:
        preds = pd.read_parquet(tmp_path / layout.predictions_file(row["trial_key"]))
        check_row(row, preds, path, DATA)


def test_iterative_with_recovery_epochs(ckpt, tmp_path):
    """Smoke: recovery fine-tunes between the steps (train stats in each row); the sets still nest
    and the checkpoint is left as saved."""
    ft, path = ckpt
    weights = path / "model.safetensors"
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    rows = run_prune(PruneSpec(ft, "iterative", 0, recovery_epochs=0.5, iterative_step=0.5), path, tmp_path)
    assert [r["k"] for r in rows] == [8, 16]
    sets = [set(map(tuple, json.loads(r["heads_removed"]))) for r in rows]
    assert sets[0] < sets[1]
    assert all(r["train_steps"] >= 1 and r["recovery_epochs"] == 0.5 for r in rows)
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == before
    # the first step removes the least important half by the stage-A scores, as without recovery
    scores = torch.tensor(stage_a_scores(path))
    order = sorted(range(16), key=lambda i: (float(scores.view(-1)[i]), i))[:8]
    assert sets[0] == {divmod(i, 4) for i in order}


@pytest.fixture(scope="module")
def ckpt_6x12(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt-6x12")
    return make_checkpoint(path, "bert", DATA, shape=(6, 12)), path


def test_iterative_has_a_row_at_every_k_of_the_sweeps_grid(ckpt_6x12, tmp_path):
    """A 6 x 12 model (72 heads), K 10%..50% (7, 14, 22, 29, 36 heads) and step 0.1 (7 heads):
    a row at every grid K, no step larger than 7 heads, nested sets, every row reproduced by
    masking its heads_removed on the checkpoint; the first step is stage-A bottom-7."""
    from headsweep.orchestrator import grid
    from headsweep.orchestrator.checks import Heads
    from headsweep.orchestrator.readers import Problems
    from headsweep.orchestrator.sweep import parse
    ft, path = ckpt_6x12
    p = Problems()
    sweep = parse({"models": ["preset:tiny-bert"], "data": {"source": "synthetic"}, "strategies": ["iterative"],
                   "k": [0.1, 0.2, 0.3, 0.4, 0.5], "iterative": {"step": 0.1}}, p)
    assert not p.lines, p.lines
    counts = grid.k_grid(sweep, Heads("bert", 6, 12))
    assert counts == (7, 14, 22, 29, 36)                     # round(0.1 * 72), ... half up
    (planned,) = grid.stage_b(sweep, {"tiny-bert": Heads("bert", 6, 12)})
    assert planned.k_grid == counts and planned.iterative_step == 0.1
    spec = PruneSpec(ft, "iterative", 0, iterative_step=0.1, k_grid=counts)
    assert spec.key != PruneSpec(ft, "iterative", 0, iterative_step=0.1, k_grid=(7, 14)).key
    rows = run_prune(spec, path, tmp_path)
    ks = [r["k"] for r in rows]
    # 7 heads a step, stopping at each grid K (21 -> 22), then 7 at a time on to all 72
    assert ks == [7, 14, 21, 22, 29, 36, 43, 50, 57, 64, 71, 72]
    assert set(counts) <= set(ks) and max(b - a for a, b in zip([0] + ks, ks)) <= 7
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    sets = [set(map(tuple, json.loads(r["heads_removed"]))) for r in rows]
    for a, b in zip(sets, sets[1:]):
        assert a < b
    first = stage_a_scores(path)
    bottom7 = trials.choose_heads("bottom", first, 7)
    assert sets[0] == set(bottom7)
    for row in rows:
        preds = pd.read_parquet(tmp_path / layout.predictions_file(row["trial_key"]))
        check_row(row, preds, path, DATA)
