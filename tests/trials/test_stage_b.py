"""Stage-B strategies that yield several rows or draws (trials/stage_b.py): layer-single-head,
random-K draws, and the efficiency columns of every row.

The checkpoint is a perturbed random-init preset (``make_checkpoint``: every head matters); each
row is re-checked by masking its ``heads_removed`` on the checkpoint with plain transformers
(``check_row``), and each removal set is derived by hand from the stage-A importance table.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.trials.conftest import attention_params, check_row, make_checkpoint, recheck, stage_a_scores
from headsweep.trials import layout
from headsweep.trials.run import run_prune
from headsweep.trials.spec import DataSpec, PruneSpec

DATA = DataSpec(source="synthetic", synthetic_size=80, max_length=32, eval_limit=48)


@pytest.fixture(scope="module", params=["bert", "gpt2"])
def ckpt(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"ckpt-{request.param}")
    return make_checkpoint(path, request.param, DATA, methods=("gradient", "entropy")), path


def preds_of(out, row) -> pd.DataFrame:
    return pd.read_parquet(out / layout.predictions_file(row["trial_key"]))


def removed_of(row) -> list[tuple[int, int]]:
    return sorted(tuple(h) for h in json.loads(row["heads_removed"]))


@pytest.mark.parametrize("method", ["gradient", "entropy"])
def test_layer_single_head_one_row_per_layer(ckpt, tmp_path, method):
    ft, path = ckpt
    spec = PruneSpec(ft, "layer-single-head", 0, importance_method=method)
    rows = run_prune(spec, path, tmp_path)
    scores = stage_a_scores(path, method)                   # higher = more important, every method
    n_layers, n_heads = scores.shape
    assert [r["layer"] for r in rows] == list(range(n_layers))
    assert len({r["trial_key"] for r in rows}) == n_layers and spec.key not in {r["trial_key"] for r in rows}
    for row in rows:
        layer = row["layer"]
        keep = int(np.argmax(scores[layer]))                # this layer's most important head
        assert removed_of(row) == [(layer, h) for h in range(n_heads) if h != keep]   # other layers intact
        assert row["k"] == n_heads - 1 and row["heads_kept"] == n_layers * n_heads - (n_heads - 1)
        assert row["strategy"] == "layer-single-head" and row["spec_key"] == spec.key
        assert row["importance_method"] == method
        check_row(row, preds_of(tmp_path, row), path, DATA)
    assert json.loads((tmp_path / layout.RESULT).read_text())["rows"] == rows


def test_random_draws_are_distinct_rows_reproducible_per_seed_and_draw(ckpt, tmp_path):
    ft, path = ckpt
    n_draws, k = 4, 5
    rows = []
    for d in range(n_draws):
        out = tmp_path / f"d{d}"
        (row,) = run_prune(PruneSpec(ft, "random", k, draw=d), path, out)
        assert row["draw"] == d and row["k"] == k and row["strategy"] == "random"
        check_row(row, preds_of(out, row), path, DATA)
        rows.append(row)
    sets = [removed_of(r) for r in rows]
    assert len({tuple(s) for s in sets}) == n_draws                 # a different mask per draw
    assert len({r["trial_key"] for r in rows}) == n_draws
    # the same (seed, draw) gives the same set; a smaller K of that draw is a subset of it
    (again,) = run_prune(PruneSpec(ft, "random", k, draw=2), path, tmp_path / "again")
    assert removed_of(again) == sets[2] and again["trial_key"] == rows[2]["trial_key"]
    (small,) = run_prune(PruneSpec(ft, "random", 2, draw=2), path, tmp_path / "small")
    assert set(removed_of(small)) < set(sets[2])
    # another seed, same draw index: another set (the draw is not confounded with the seed alone)
    from dataclasses import replace
    (other,) = run_prune(PruneSpec(replace(ft, seed=ft.seed + 1), "random", k, draw=2), path, tmp_path / "s1")
    assert removed_of(other) != sets[2]


def test_every_row_counts_parameters_and_measures_speed(ckpt, tmp_path):
    """attn_params_kept / params_pruned equal a physically pruned model's own count; measure_speed
    gives a positive ratio; save_pruned writes a checkpoint that reloads with the new head counts."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from headsweep import trials
    ft, path = ckpt
    spec = PruneSpec(ft, "bottom", 6, measure_speed=True, save_pruned=True)
    (row,) = run_prune(spec, path, tmp_path)
    removed = removed_of(row)
    base = AutoModelForSequenceClassification.from_pretrained(path).eval()
    pruned = trials.prune_heads(AutoModelForSequenceClassification.from_pretrained(path).eval(), removed)
    assert row["params_total"] == sum(p.numel() for p in base.parameters())
    assert row["params_pruned"] == sum(p.numel() for p in pruned.parameters())
    assert row["attn_params_kept"] == attention_params(pruned)
    assert row["speedup"] > 0
    assert row["pruned_model"] == layout.pruned_model_dir(spec.key)
    saved = tmp_path / layout.PRUNED_MODEL
    reloaded = AutoModelForSequenceClassification.from_pretrained(saved, trust_remote_code=True).eval()
    per_layer = [sum(1 for l, _ in removed if l == i) for i in range(base.config.num_hidden_layers)]
    assert reloaded.config.headsweep_heads_per_layer == [base.config.num_attention_heads - n for n in per_layer]
    assert sum(p.numel() for p in reloaded.parameters()) == row["params_pruned"]
    ref = recheck(path, DATA, removed)
    with torch.no_grad():
        probs = reloaded(**ref["enc"]).logits.float().softmax(-1)
    torch.testing.assert_close(probs, ref["probs"], atol=1e-5, rtol=0)

