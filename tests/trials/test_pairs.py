"""Sentence-pair tasks (``data.text_pair_column``; the generated ``synthetic-pairs`` task of
trials/synthetic_pairs.py): the tokenised batch against the tokenizer's own pair template (BERT
family: token_type_ids that reach the model) or ``A <eos> B`` built by hand (GPT-2), a fine-tune
that learns the task, and stage-B rows re-checked on the checkpoint. With ../shared/data present
an SST-2 smoke runs too."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from headsweep import trials
from tests.trials.conftest import check_row, make_checkpoint
from headsweep.trials import layout
from headsweep.trials.data import Encoded, eval_loader, load_task, read_split
from headsweep.trials.run import run_finetune, run_prune
from headsweep.trials.spec import DataSpec, FinetuneSpec, ImportanceSpec, ModelSpec, PruneSpec, TrainSpec
from headsweep.trials.synthetic_pairs import polarity, synthetic_pairs
from headsweep.trials.tokenizers import uses_token_types

PAIRS = DataSpec(source="synthetic-pairs", text_column="sentence1", text_pair_column="sentence2",
                 synthetic_size=80, max_length=40, eval_limit=48, extra_eval=("mismatched",))
SST2 = Path(__file__).resolve().parents[3] / "shared" / "data" / "sst2"


def test_generated_pairs_follow_their_rule():
    df = synthetic_pairs(400, seed=3)
    assert list(df.columns) == ["sentence1", "sentence2", "label"]
    both = [int(polarity(a) and polarity(b)) for a, b in zip(df["sentence1"], df["sentence2"])]
    assert df["label"].tolist() == both
    assert 0.4 < df["label"].mean() < 0.6                               # balanced
    assert synthetic_pairs(50, seed=3).equals(df.iloc[:50].reset_index(drop=True))


def pair_batch(arch: str):
    """(model, tokenizer, the task's first eval rows, their collated batch)."""
    task = load_task(PAIRS, 16)
    model, tok = trials.load_model(f"preset:tiny-{arch}-random", 2,
                                   texts=list(task.train["text"]) + list(task.train["text_pair"]))
    rows = task.eval.iloc[:6]
    enc = Encoded(rows, tok, PAIRS.max_length, token_types=uses_token_types(model))
    (batch,) = list(eval_loader(enc, tok.pad_token_id, 6))
    return model, tok, rows, batch


def forward_kwargs(model, batch) -> dict:
    """The keyword arguments the model's forward receives when the trials evaluate ``batch``."""
    from headsweep.trials.data import model_inputs
    seen = {}
    handle = model.register_forward_pre_hook(lambda m, args, kwargs: seen.update(kwargs), with_kwargs=True)
    try:
        with torch.no_grad():
            model(**model_inputs(batch))
    finally:
        handle.remove()
    return seen


def test_bert_pairs_get_segment_ids_that_reach_the_model():
    model, tok, rows, batch = pair_batch("bert")
    assert "token_type_ids" in batch
    by_row = dict(zip(batch["example_id"].tolist(), range(len(rows))))
    for _, r in rows.iterrows():
        i = by_row[int(r["example_id"])]
        a = tok(r["text"], add_special_tokens=False)["input_ids"]
        b = tok(r["text_pair"], add_special_tokens=False)["input_ids"]
        want = [tok.cls_token_id, *a, tok.sep_token_id, *b, tok.sep_token_id]
        n = len(want)
        assert batch["input_ids"][i, :n].tolist() == want
        assert batch["token_type_ids"][i, :n].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        assert batch["attention_mask"][i].sum() == n
    seen = forward_kwargs(model, batch)
    assert torch.equal(seen["token_type_ids"], batch["token_type_ids"])
    assert int(seen["token_type_ids"].max()) == 1
    # and they change the model's output: segment embeddings are in use
    with torch.no_grad():
        zeros = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      token_type_ids=torch.zeros_like(batch["token_type_ids"])).logits
        given = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      token_type_ids=batch["token_type_ids"]).logits
    assert not torch.allclose(zeros, given)


@pytest.mark.parametrize("arch", ["gpt2", "distilbert"])
def test_models_without_segments_get_no_token_type_ids(arch):
    """GPT-2: ``A <eos> B`` (its end-of-text token separates); DistilBERT: [CLS] A [SEP] B [SEP]."""
    model, tok, rows, batch = pair_batch(arch)
    assert "token_type_ids" not in batch and "token_type_ids" not in forward_kwargs(model, batch)
    by_row = dict(zip(batch["example_id"].tolist(), range(len(rows))))
    for _, r in rows.iterrows():
        a = tok(r["text"], add_special_tokens=False)["input_ids"]
        b = tok(r["text_pair"], add_special_tokens=False)["input_ids"]
        if arch == "gpt2":
            want = [*a, tok.eos_token_id, *b]
        else:
            want = [tok.cls_token_id, *a, tok.sep_token_id, *b, tok.sep_token_id]
        ids = batch["input_ids"][by_row[int(r["example_id"])]].tolist()
        assert ids[:len(want)] == want and all(t == tok.pad_token_id for t in ids[len(want):])


def test_gpt2_pairs_truncate_like_the_tokenizers_longest_first():
    """``A <eos> B`` cut to max_length keeps what the tokenizer's own ``longest_first`` pair
    truncation keeps of A and B (for max_length - 1 tokens: one goes to the separator)."""
    from headsweep.trials.tokenizers import joined_pairs
    _, tok, _, _ = pair_batch("gpt2")
    a, b = "the movie is very good and the plot is clever .", "the cast is good ."
    for max_length in (6, 10, 13, 40):
        ref = tok(a, b, add_special_tokens=False, truncation="longest_first", max_length=max_length - 1,
                  return_token_type_ids=True)
        ids, types = ref["input_ids"], ref["token_type_ids"]
        want = [t for t, s in zip(ids, types) if s == 0] + [tok.eos_token_id] + [t for t, s in zip(ids, types) if s == 1]
        assert joined_pairs(tok, [a], [b], max_length=max_length) == [want]


def test_a_pair_task_is_learnt_above_chance(tmp_path):
    data = DataSpec(source="synthetic-pairs", text_column="sentence1", text_pair_column="sentence2",
                    synthetic_size=1500, max_length=40, eval_limit=200)
    spec = FinetuneSpec(model=ModelSpec(name="preset:tiny-bert-random"), data=data,
                        train=TrainSpec(epochs=4, lr=2e-3, batch_size=32, mixed_precision="no"),
                        importance=ImportanceSpec(examples=16), seed=0)
    (row,) = run_finetune(spec, tmp_path)
    # chance is 0.5 (balanced labels, 200 examples: sd 0.035); measured 0.74
    assert row["accuracy"] >= 0.65, row["accuracy"]
    ev = read_split(data, "eval").iloc[:200]
    preds = pd.read_parquet(tmp_path / layout.predictions_file(row["trial_key"]))
    assert preds["label"].tolist() == ev["label"].tolist()


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_pair_rows_reproduce_on_the_checkpoint(tmp_path, arch):
    path = tmp_path / "ckpt"
    ft = make_checkpoint(path, arch, PAIRS)
    out = tmp_path / "b"
    (row,) = run_prune(PruneSpec(ft, "top", 5), path, out)
    assert row["k"] == 5
    check_row(row, pd.read_parquet(out / layout.predictions_file(row["trial_key"])), path, PAIRS)
    extra = json.loads(row["extra_evals"])                               # the second evaluation split
    assert list(extra) == ["mismatched"] and extra["mismatched"]["n_eval"] == 48


@pytest.mark.skipif(not (SST2 / "train.tsv").exists(), reason="../shared/data/sst2 not present")
def test_sst2_smoke(tmp_path):
    """The real SST-2 files: a tiny random-init DistilBERT on 3000 sentences learns above chance."""
    data = DataSpec(source=str(SST2), train_limit=3000, eval_limit=400, max_length=48)
    spec = FinetuneSpec(model=ModelSpec(name="preset:tiny-distilbert-random"), data=data,
                        train=TrainSpec(epochs=2, lr=2e-3, batch_size=32, mixed_precision="no"),
                        importance=ImportanceSpec(examples=32), seed=0)
    (row,) = run_finetune(spec, tmp_path)
    assert row["n_eval"] == 400 and row["stage"] == "A"
    # chance: the majority class of these 400 (about half; sd of a coin 0.025); measured 0.68
    labels = read_split(data, "eval")["label"].iloc[:400]
    majority = max(labels.mean(), 1 - labels.mean())
    assert row["accuracy"] >= majority + 0.08, (row["accuracy"], majority)
    assert (tmp_path / layout.CHECKPOINT / layout.CKPT_IMPORTANCE).exists()
