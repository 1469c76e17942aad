"""Per-head evaluations on the evaluation split (trials/head_eval.py): strategy ``each-head``
(every head masked alone, Michel Table 1) and ``layer-single-head`` with ``keep: best`` (each
layer's best only survivor, Michel Table 2's oracle).

References: the one-mask-at-a-time path every other strategy takes (``stage_b.Trial.row``:
``trials.masked`` + ``train.evaluate``, on every evaluation split), and ``check_row`` (plain
transformers on the checkpoint). The checkpoints are perturbed random-init presets on a
sentence-pair task with a second evaluation split (token types for BERT, an EOS separator for GPT-2).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.trials.conftest import check_row, make_checkpoint
from headsweep.trials import layout
from headsweep.trials.run import cached_checkpoint, cached_eval_split, run_prune
from headsweep.trials.spec import DataSpec, PruneSpec

PAIRS = DataSpec(source="synthetic-pairs", text_column="sentence1", text_pair_column="sentence2",
                 synthetic_size=80, max_length=40, eval_limit=48, extra_eval=("mismatched",))
HEADS = [(l, h) for l in range(4) for h in range(4)]


@pytest.fixture(scope="module", params=["bert", "gpt2", "distilbert"])
def ckpt(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"ckpt-{request.param}")
    return make_checkpoint(path, request.param, PAIRS), path


def one_at_a_time(spec, path, sets):
    """{i: (row, predictions)} of each removal set evaluated alone, as top/bottom/random rows are."""
    from headsweep.trials import stage_b
    from headsweep.trials.train import accelerator_scope
    ft = spec.finetune
    model, tok = cached_checkpoint(str(path), ft.data.num_labels)
    evals = {"": cached_eval_split(str(path), ft.data)}
    evals |= {s: cached_eval_split(str(path), ft.data, s) for s in ft.data.extra_eval}
    with accelerator_scope("no") as acc:
        trial = stage_b.Trial(spec, model, tok, acc, path / "unused", evals, False)
        return [trial.row(model, removed, {}) for removed in sets]


def same_evaluation(row, preds, ref_row, ref_preds):
    assert json.loads(row["heads_removed"]) == json.loads(ref_row["heads_removed"])
    assert row["loss"] == pytest.approx(ref_row["loss"], abs=1e-5)
    for m in ("accuracy", "f1", "mcc", "n_eval"):
        assert row[m] == ref_row[m], m
    assert preds["example_id"].tolist() == ref_preds["example_id"].tolist()
    assert preds["pred"].tolist() == ref_preds["pred"].tolist()
    np.testing.assert_allclose(preds["prob"], ref_preds["prob"], atol=1e-5, rtol=0)
    extra, ref_extra = json.loads(row["extra_evals"]), json.loads(ref_row["extra_evals"])
    assert list(extra) == list(ref_extra) == ["mismatched"]
    assert extra["mismatched"]["accuracy"] == ref_extra["mismatched"]["accuracy"]
    assert extra["mismatched"]["loss"] == pytest.approx(ref_extra["mismatched"]["loss"], abs=1e-5)
    for col in ("params_pruned", "attn_params_kept", "params_total"):
        assert row[col] == ref_row[col]


def test_each_head_equals_masking_one_head_at_a_time(ckpt, tmp_path):
    ft, path = ckpt
    spec = PruneSpec(ft, "each-head", 1)
    rows = run_prune(spec, path, tmp_path)
    assert [(r["layer"], r["head"]) for r in rows] == HEADS
    assert all(r["strategy"] == "each-head" and r["k"] == 1 and r["k_requested"] == "1" for r in rows)
    assert all(r["importance_method"] == "gradient" and r["spec_key"] == spec.key for r in rows)
    assert len({r["trial_key"] for r in rows}) == 16 and spec.key not in {r["trial_key"] for r in rows}
    ref = one_at_a_time(spec, path, [[h] for h in HEADS])
    for row, (ref_row, ref_preds) in zip(rows, ref):
        preds = pd.read_parquet(tmp_path / layout.predictions_file(row["trial_key"]))
        same_evaluation(row, preds, ref_row, ref_preds)
    check_row(rows[5], pd.read_parquet(tmp_path / layout.predictions_file(rows[5]["trial_key"])), path, PAIRS)
    # the heads matter on this model: removing them changes the loss by different amounts
    assert len({round(r["loss"], 6) for r in rows}) > 8


def test_one_mask_per_pass_gives_the_same_numbers(ckpt):
    """``tokens_per_pass`` only decides how many masks share a forward pass."""
    from headsweep.trials.head_eval import each_head
    from headsweep.trials.train import accelerator_scope
    ft, path = ckpt
    model, tok = cached_checkpoint(str(path), 2)
    data = cached_eval_split(str(path), ft.data)
    with accelerator_scope("no") as acc:
        many = each_head(model, data, tok.pad_token_id, acc, 16)
        one = each_head(model, data, tok.pad_token_id, acc, 16, tokens_per_pass=1)
    assert list(many) == list(one) == HEADS
    for h in HEADS:
        assert many[h][0]["loss"] == pytest.approx(one[h][0]["loss"], abs=1e-6)
        pd.testing.assert_frame_equal(many[h][1].drop(columns="prob"), one[h][1].drop(columns="prob"))


def test_keep_best_keeps_each_layers_best_only_survivor(ckpt, tmp_path):
    """Brute force: every head of every layer as its only survivor, evaluated alone; the layer
    keeps the highest accuracy, then the lowest loss, then the lower head."""
    ft, path = ckpt
    spec = PruneSpec(ft, "layer-single-head", 0, importance_method="oracle", keep="best")
    rows = run_prune(spec, path, tmp_path)
    tries = one_at_a_time(spec, path, [[(l, o) for o in range(4) if o != h] for l, h in HEADS])
    score = {lh: (-r["accuracy"], r["loss"], lh[1]) for lh, (r, _) in zip(HEADS, tries)}
    assert [r["layer"] for r in rows] == [0, 1, 2, 3]
    for row in rows:
        layer = row["layer"]
        best = min(range(4), key=lambda h: score[layer, h])
        assert json.loads(row["heads_removed"]) == [[layer, h] for h in range(4) if h != best]
        assert row["importance_method"] == "oracle" and row["strategy"] == "layer-single-head"
        assert row["k"] == 3 and json.loads(row["config"])["keep"] == "best"
        check_row(row, pd.read_parquet(tmp_path / layout.predictions_file(row["trial_key"])), path, PAIRS)
    # the oracle looked at the evaluation set: its kept heads score at least as well as the ranked ones
    ranked = run_prune(PruneSpec(ft, "layer-single-head", 0), path, tmp_path / "ranked")
    assert all(b["accuracy"] >= r["accuracy"] for b, r in zip(rows, ranked))
    assert spec.key != PruneSpec(ft, "layer-single-head", 0).key
