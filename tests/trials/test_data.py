"""Task data (trials.data, trials.synthetic): sources, validation errors, holdout, batching."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from headsweep import trials
from headsweep.trials.data import Collator, Encoded, LengthGroupedBatches, eval_loader, load_task, read_split
from headsweep.trials.spec import DataSpec
from headsweep.trials.synthetic import synthetic_sentiment

SHARED_DATA = (Path(__file__).resolve().parents[2] / "../shared/data").resolve()
needs_shared = pytest.mark.skipif(not (SHARED_DATA / "sst2").is_dir(),
                                  reason=f"shared SST-2 folder {SHARED_DATA / 'sst2'} not present")


# ---------------------------------------------------------------------------- synthetic

def test_synthetic_is_seeded_and_balanced():
    a = synthetic_sentiment(2000, seed=3)
    assert list(a.columns) == ["sentence", "label"] and len(a) == 2000
    pd.testing.assert_frame_equal(a, synthetic_sentiment(2000, seed=3))
    assert not a["sentence"].equals(synthetic_sentiment(2000, seed=4)["sentence"])
    assert set(a["label"]) == {0, 1}
    assert 0.4 < a["label"].mean() < 0.6
    assert (a["sentence"].str.strip() != "").all()


def test_synthetic_labels_follow_negation_and_contrast():
    """Recompute every label from the text by the generator's documented rules: a clause's
    polarity is its adjective's, flipped by a negation; in "A , but B" and "although A , B" the
    second clause decides; in "A and B" both clauses agree with the label."""
    from headsweep.trials.synthetic import FILLERS, NEGATIONS, NEGATIVE, POSITIVE

    def clause(text):
        words = text.split()
        adj = [w for w in words if w in POSITIVE or w in NEGATIVE]
        assert len(adj) == 1, text
        negated = any(f" {n} " in f" {text} " for n in NEGATIONS)
        return int((adj[0] in POSITIVE) != negated)

    df = synthetic_sentiment(3000, seed=0)
    kinds = {"one": 0, "but": 0, "although": 0, "and": 0}
    for text, label in zip(df["sentence"], df["label"]):
        assert text.endswith(" .")
        body = text[:-2]
        for f in FILLERS:
            body = body.removeprefix(f + " ")
        if " , but " in body:
            first, second = body.split(" , but ")
            kind, want = "but", clause(second)
            assert clause(first) != want
        elif body.startswith("although "):
            first, second = body.removeprefix("although ").split(" , ")
            kind, want = "although", clause(second)
            assert clause(first) != want
        elif " and " in body:
            first, second = body.split(" and ")
            kind, want = "and", clause(first)
            assert clause(second) == want
        else:
            kind, want = "one", clause(body)
        assert label == want, text
        kinds[kind] += 1
    assert min(kinds.values()) > 200, kinds


def test_synthetic_splits_through_read_split():
    spec = DataSpec(source="synthetic", synthetic_size=600)
    train, ev = read_split(spec, "train"), read_split(spec, "eval")
    assert len(train) == 600 and len(ev) == 200                   # eval: max(200, size // 4)
    assert list(train.columns) == ["example_id", "text", "label"]
    assert train["example_id"].tolist() == list(range(600))
    assert not set(train["text"]) >= set(ev["text"])              # eval is drawn separately
    assert len(read_split(DataSpec(source="synthetic", synthetic_size=4000), "eval")) == 1000


# ---------------------------------------------------------------------------- local files

FRAME = pd.DataFrame({"review": ["a fine film", "dull , so dull", "great fun", "not good", "ok"],
                      "y": [1, 0, 1, 0, 1]})


def write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".tsv":
        df.to_csv(path, sep="\t", index=False)
    elif path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    return path


def spec_for(source, **kw) -> DataSpec:
    return DataSpec(source=str(source), text_column="review", label_column="y", **kw)


@pytest.mark.parametrize("ext", [".tsv", ".csv", ".jsonl", ".parquet"])
def test_local_file_with_configurable_columns(tmp_path, ext):
    path = write(FRAME, tmp_path / f"reviews{ext}")
    df = read_split(spec_for(path), "train")
    assert df["text"].tolist() == FRAME["review"].tolist()
    assert df["label"].tolist() == FRAME["y"].tolist()
    assert df["example_id"].tolist() == list(range(len(FRAME)))


@pytest.mark.parametrize("ext", [".tsv", ".csv", ".jsonl", ".parquet"])
def test_local_directory_with_train_and_validation(tmp_path, ext):
    ev = pd.DataFrame({"review": ["bad", "good"], "y": [0, 1]})
    write(FRAME, tmp_path / f"train{ext}")
    write(ev, tmp_path / f"validation{ext}")
    spec = spec_for(tmp_path, train="train", eval="validation")
    assert read_split(spec, "train")["text"].tolist() == FRAME["review"].tolist()
    got = read_split(spec, "eval")
    assert got["text"].tolist() == ["bad", "good"] and got["label"].tolist() == [0, 1]


def test_single_file_source_with_an_eval_file_beside_it(tmp_path):
    write(FRAME, tmp_path / "train.csv")
    write(FRAME.iloc[:2], tmp_path / "dev.csv")
    spec = spec_for(tmp_path / "train.csv", eval="dev.csv")
    assert len(read_split(spec, "train")) == 5 and len(read_split(spec, "eval")) == 2


def test_tsv_keeps_quotes_and_na_like_words(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text('review\ty\n"quoted" text\t1\nNA\t0\nnull\t1\n')
    df = read_split(spec_for(path), "train")
    assert df["text"].tolist() == ['"quoted" text', "NA", "null"]


def assert_one_line_error(spec, which, key, *fragments):
    with pytest.raises(trials.UserError) as err:
        read_split(spec, which)
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert msg.startswith(f"{key}:"), msg
    assert err.value.key == key
    for f in fragments:
        assert f in msg, (f, msg)
    return msg


def test_missing_text_column(tmp_path):
    path = write(FRAME, tmp_path / "d.csv")
    assert_one_line_error(DataSpec(source=str(path), text_column="sentence", label_column="y"),
                          "train", "data.text_column", "sentence", "review")


def test_missing_label_column(tmp_path):
    path = write(FRAME, tmp_path / "d.csv")
    assert_one_line_error(DataSpec(source=str(path), text_column="review", label_column="label"),
                          "train", "data.label_column", "label")


def test_non_numeric_labels(tmp_path):
    path = write(FRAME.assign(y=["pos", "neg", "pos", "neg", "pos"]), tmp_path / "d.csv")
    assert_one_line_error(spec_for(path), "train", "data.label_column", "pos")


def test_fractional_labels(tmp_path):
    path = write(FRAME.assign(y=[1, 0, 0.5, 0, 1]), tmp_path / "d.csv")
    assert_one_line_error(spec_for(path), "train", "data.label_column", "0.5")


@pytest.mark.parametrize("bad", [2, -1])
def test_labels_outside_the_classes(tmp_path, bad):
    path = write(FRAME.assign(y=[1, 0, bad, 0, 1]), tmp_path / "d.csv")
    assert_one_line_error(spec_for(path), "train", "data.label_column", str(bad))
    # ... but a 3-class task accepts 2
    if bad == 2:
        assert read_split(spec_for(path, num_labels=3), "train")["label"].max() == 2


def test_empty_split(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("review,y\n")
    assert_one_line_error(spec_for(path), "train", "data.train", "empty")


@pytest.mark.parametrize("name, content", [
    ("d.parquet", b"this is not parquet"),
    ("d.jsonl", b'{"review": "x", "y": 1}\n{broken\n'),
    ("d.csv", b"review,y\n\xff\xfe\x00bad,1\n"),
])
def test_unreadable_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    assert_one_line_error(spec_for(path), "train", "data.train", str(path))


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("review,y\nfine,1\n")
    assert_one_line_error(spec_for(path), "train", "data.train", ".tsv")


def test_missing_source_and_missing_split(tmp_path):
    assert_one_line_error(spec_for(tmp_path / "nope.tsv"), "train", "data.source", "nope.tsv")
    write(FRAME, tmp_path / "train.tsv")
    assert_one_line_error(spec_for(tmp_path, eval="validation"), "eval", "data.eval", "validation")


def test_rows_with_empty_text_or_missing_label(tmp_path):
    df = pd.DataFrame({"review": ["good", "   ", "bad", "", "fine"], "y": [1, 0, None, 1, 0]})
    path = write(df, tmp_path / "d.csv")
    msg = assert_one_line_error(spec_for(path), "train", "data.train", "drop_invalid", "row 1")
    assert re.search(r"\b3\b", msg)                         # how many rows are bad
    kept = read_split(spec_for(path, drop_invalid=True), "train")
    assert kept["text"].tolist() == ["good", "fine"]
    assert kept["label"].tolist() == [1, 0]
    assert kept["example_id"].tolist() == [0, 4]            # row numbers in the source file


def test_all_rows_invalid_even_when_dropping(tmp_path):
    path = write(pd.DataFrame({"review": ["", " "], "y": [1, 0]}), tmp_path / "d.csv")
    assert_one_line_error(spec_for(path, drop_invalid=True), "train", "data.train")


# ---------------------------------------------------------------------------- holdout and limits

def test_importance_examples_are_held_out_and_seed_independent():
    spec = DataSpec(source="synthetic", synthetic_size=800)
    np.random.seed(0)
    torch.manual_seed(0)
    a = load_task(spec, importance_examples=100)
    np.random.seed(1)
    torch.manual_seed(1)
    b = load_task(spec, importance_examples=100)
    pd.testing.assert_frame_equal(a.importance, b.importance)
    pd.testing.assert_frame_equal(a.train, b.train)
    imp, train = set(a.importance["example_id"]), set(a.train["example_id"])
    assert len(imp) == 100 and len(train) == 700
    assert not imp & train and imp | train == set(range(800))
    # a held-out example keeps its text and label
    full = read_split(spec, "train").set_index("example_id")
    rows = a.importance.set_index("example_id")
    assert (full.loc[rows.index, "text"] == rows["text"]).all()
    assert (full.loc[rows.index, "label"] == rows["label"]).all()
    # not simply the first rows
    assert imp != set(range(100))
    pd.testing.assert_frame_equal(a.eval, read_split(spec, "eval"))


def test_too_many_importance_examples():
    with pytest.raises(trials.UserError) as err:
        load_task(DataSpec(source="synthetic", synthetic_size=300), importance_examples=300)
    assert err.value.key == "importance.examples" and "\n" not in str(err.value)


def test_train_and_eval_limits():
    spec = DataSpec(source="synthetic", synthetic_size=800, train_limit=50, eval_limit=30)
    task = load_task(spec, importance_examples=100)
    assert len(task.train) == 50 and len(task.eval) == 30 and len(task.importance) == 100
    assert not set(task.train["example_id"]) & set(task.importance["example_id"])
    full = load_task(DataSpec(source="synthetic", synthetic_size=800), importance_examples=100)
    pd.testing.assert_frame_equal(task.train, full.train.iloc[:50])
    pd.testing.assert_frame_equal(task.eval, full.eval.iloc[:30])


# ---------------------------------------------------------------------------- batches

@pytest.fixture(scope="module")
def encoded():
    _, tok = trials.load_model("preset:tiny-bert", 2)
    df = read_split(DataSpec(source="synthetic", synthetic_size=600), "train")
    return tok, df, Encoded(df, tok, max_length=12)


def test_encoded_truncates_to_max_length(encoded):
    tok, df, data = encoded
    assert len(data) == len(df) and data.lengths.max() == 12
    for i in (0, 5, 17):
        want = tok(df["text"][i], truncation=True, max_length=12)["input_ids"]
        assert list(data.input_ids[i]) == want and data.lengths[i] == len(want)


def test_collator_pads_to_the_batch_max(encoded, rng):
    tok, df, data = encoded
    idx = [int(i) for i in rng.choice(len(df), size=7, replace=False)]
    batch = Collator(data, tok.pad_token_id)(idx)
    width = max(len(tok(df["text"][i], truncation=True, max_length=12)["input_ids"]) for i in idx)
    assert batch["input_ids"].shape == (7, width) and batch["attention_mask"].shape == (7, width)
    for row, i in enumerate(idx):
        ids = tok(df["text"][i], truncation=True, max_length=12)["input_ids"]
        n = len(ids)
        assert batch["input_ids"][row, :n].tolist() == ids
        assert (batch["input_ids"][row, n:] == tok.pad_token_id).all()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
    assert batch["labels"].tolist() == df["label"].iloc[idx].tolist()
    assert batch["example_id"].tolist() == df["example_id"].iloc[idx].tolist()
    assert batch["input_ids"].dtype == torch.long


def test_eval_loader_covers_every_example_once(encoded):
    tok, df, data = encoded
    seen = [i for b in eval_loader(data, tok.pad_token_id, 64) for i in b["example_id"].tolist()]
    assert sorted(seen) == df["example_id"].tolist()


def epoch(sampler) -> list[list[int]]:
    return [list(b) for b in sampler]


def test_length_grouped_sampler_yields_every_index_once_per_epoch(encoded):
    _, _, data = encoded
    sampler = LengthGroupedBatches(data.lengths, batch_size=16, seed=0)
    epochs = [epoch(sampler) for _ in range(3)]
    for batches in epochs:
        assert len(batches) == len(sampler) == -(-len(data) // 16)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(data)))
        assert all(1 <= len(b) <= 16 for b in batches)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]            # reshuffled each epoch
    again = LengthGroupedBatches(data.lengths, batch_size=16, seed=0)
    assert epoch(again) == epochs[0]                                   # reproducible per seed
    other = LengthGroupedBatches(data.lengths, batch_size=16, seed=1)
    assert epoch(other) != epochs[0]                                   # differs across seeds


def test_length_grouping_reduces_padding(rng):
    lengths = rng.integers(3, 60, size=3000)
    def padding(group):
        s = LengthGroupedBatches(lengths, batch_size=16, seed=0, group=group)
        return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in s)
    assert padding(True) < 0.25 * padding(False)
    plain = epoch(LengthGroupedBatches(lengths, batch_size=16, seed=0, group=False))
    assert sorted(i for b in plain for i in b) == list(range(3000))


# ---------------------------------------------------------------------------- real SST-2

@needs_shared
def test_sst2_tsvs_load_with_documented_counts():
    src = SHARED_DATA / "sst2"
    spec = DataSpec(source=str(src), train="train", eval="validation")
    train, ev = read_split(spec, "train"), read_split(spec, "eval")
    assert len(train) == 67349 and len(ev) == 872
    assert train["label"].value_counts().to_dict() == {0: 29780, 1: 37569}
    assert ev["label"].value_counts().to_dict() == {0: 428, 1: 444}
    test = read_split(DataSpec(source=str(src), eval="test"), "eval")
    assert len(test) == 1821 and test["label"].value_counts().to_dict() == {0: 912, 1: 909}
    assert ev["text"][0].startswith("it 's a charming and often affecting journey")
    task = load_task(spec, importance_examples=2000)
    assert len(task.train) == 67349 - 2000 and len(task.importance) == 2000
