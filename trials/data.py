"""Task data: hub datasets, local files, or the synthetic set -> checked DataFrames -> batches.

Every split becomes a DataFrame with ``example_id`` (row number in the source split), ``text``
(and ``text_pair`` for a sentence-pair task, ``data.text_pair_column``) and ``label`` (class ids,
or real values for regression: ``num_labels: 1``). Importance examples are held out of the training split with a fixed permutation
(the same for every seed), so importance never sees the fine-tuning or the evaluation data.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from headsweep.trials.errors import UserError
from headsweep.trials.spec import DataSpec
from headsweep.trials.tasks import SYNTHETIC_PAIRS
from headsweep.trials.tokenizers import encode

SYNTHETIC_SOURCES = ("synthetic", SYNTHETIC_PAIRS)
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_inputs(batch: dict) -> dict:
    """The entries of a batch that the model takes (not labels, not example ids)."""
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS}

READERS = {
    ".tsv": lambda p: pd.read_csv(p, sep="\t", quoting=3, keep_default_na=False, na_values=[""]),
    ".csv": lambda p: pd.read_csv(p, keep_default_na=False, na_values=[""]),
    ".jsonl": lambda p: pd.read_json(p, lines=True),
    ".json": lambda p: pd.read_json(p, lines=True),
    ".parquet": pd.read_parquet,
}
HUB_ALIASES = {"glue/": ("nyu-mll/glue",)}  # glue/sst2 -> load_dataset("nyu-mll/glue", "sst2")
HOLDOUT_SEED = 20190510  # fixed: the importance split must not change with the trial seed


@dataclass
class TaskData:
    train: pd.DataFrame        # fine-tuning rows
    importance: pd.DataFrame   # held-out training rows for head importance
    eval: pd.DataFrame
    num_labels: int
    extra: dict[str, pd.DataFrame] | None = None   # further evaluation splits (data.extra_eval)


def is_local_source(source: str) -> bool:
    return source not in SYNTHETIC_SOURCES and (os.path.exists(source) or Path(source).suffix in READERS
                                      or source.startswith((".", "/", "~")))


def _local_split(spec: DataSpec, split: str, key: str) -> Path:
    src = Path(os.path.expanduser(spec.source))
    if not src.exists():
        raise UserError("data.source", spec.source, "no such file or directory")
    cand = Path(os.path.expanduser(split))
    if cand.suffix in READERS and (cand.is_absolute() or cand.exists()):
        path = cand
    elif src.is_file():
        if key == "data.train":
            return src
        path = src.parent / split
        if not path.exists():
            raise UserError(key, split, "with a single-file data.source, give the evaluation "
                                        "split as a file path")
        return path
    else:
        if not any(f.suffix.lower() in READERS for f in src.iterdir() if f.is_file()):
            raise UserError("data.source", spec.source, "this directory holds no .tsv/.csv/.jsonl/.parquet "
                                                        f"files (expected {spec.train}.tsv and {spec.eval}.tsv, "
                                                        "or the names given by data.train / data.eval)")
        found = [src / f"{split}{ext}" for ext in READERS if (src / f"{split}{ext}").exists()]
        if not found:
            have = sorted(f.name for f in src.iterdir() if f.suffix.lower() in READERS)
            raise UserError(key, split, f"no {split}.tsv/.csv/.jsonl/.parquet in {src} (it has: "
                                        f"{', '.join(have[:5])})")
        path = found[0]
    if not path.exists():
        raise UserError(key, str(path), "no such file")
    return path


def local_files(spec: DataSpec) -> list[Path]:
    """The files a local data source's splits read (train, eval, extra_eval), for provenance."""
    splits = [(spec.train, "data.train"), (spec.eval, "data.eval")] + [(s, "data.extra_eval") for s in spec.extra_eval]
    return sorted({_local_split(spec, split, key).resolve() for split, key in splits})


def _read_local(path: Path, key: str) -> pd.DataFrame:
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise UserError(key, str(path), f"unsupported file type; use one of {', '.join(READERS)}")
    if path.is_dir():
        raise UserError(key, str(path), "is a directory, not a data file")
    try:
        return reader(path)
    except Exception as e:  # pandas/pyarrow raise many kinds; the user needs one line
        msg = str(e).strip().splitlines()[0][:120] if str(e).strip() else "no details"
        raise UserError(key, str(path), f"cannot read file ({type(e).__name__}: {msg})")


def _read_hub(spec: DataSpec, split: str, key: str) -> pd.DataFrame:
    import datasets
    source = spec.source.removeprefix("hub:")
    args: tuple = (source,)
    for alias, repo in HUB_ALIASES.items():
        if source.startswith(alias):
            args = (*repo, source[len(alias):])
    if ":" in source:
        args = tuple(source.split(":", 1))
    try:
        ds = datasets.load_dataset(*args, split=split, revision=spec.revision)
    except Exception as e:
        raise UserError(key, f"{spec.source}[{split}]",
                        f"cannot load hub dataset ({type(e).__name__}: {str(e).splitlines()[0][:160]})")
    return ds.to_pandas()


def read_split(spec: DataSpec, which: str, split: str | None = None) -> pd.DataFrame:
    """Raw split (``which`` = "train" | "eval" | "extra_eval", the last with its ``split`` name)
    as a DataFrame with example_id/text[/text_pair]/label."""
    split = split or (spec.train if which == "train" else spec.eval)
    key = f"data.{which}"
    if spec.source in SYNTHETIC_SOURCES:
        raw = _synthetic(spec, which, split)
    elif is_local_source(spec.source):
        raw = _read_local(_local_split(spec, split, key), key)
    else:
        raw = _read_hub(spec, split, key)
    return check_columns(raw, spec, key, spec.num_labels)


def _synthetic(spec: DataSpec, which: str, split: str) -> pd.DataFrame:
    """The generated sets: train, eval and any extra split drawn with their own seeds."""
    import zlib
    n = spec.synthetic_size if which == "train" else max(200, spec.synthetic_size // 4)
    seed = {"train": 0, "eval": 1}.get(which, 2 + zlib.crc32(split.encode()) % 1000)
    if spec.source == SYNTHETIC_PAIRS:
        from headsweep.trials.synthetic_pairs import synthetic_pairs
        return synthetic_pairs(n, seed=seed)
    from headsweep.trials.synthetic import synthetic_sentiment
    return synthetic_sentiment(n, seed=seed)


def _plain(v):
    """A cell as the user wrote it: 1 rather than np.float64(1.0) in messages."""
    v = v.item() if isinstance(v, np.generic) else v
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _columns(spec: DataSpec) -> dict[str, str]:
    """Source column per role; the generated sets have fixed names."""
    if spec.source == "synthetic":
        return {"text": "sentence", "label": "label"}
    if spec.source == SYNTHETIC_PAIRS:
        return {"text": "sentence1", "text_pair": "sentence2", "label": "label"}
    cols = {"text": spec.text_column, "label": spec.label_column}
    if spec.text_pair_column:
        cols["text_pair"] = spec.text_pair_column
    return cols


def check_columns(raw: pd.DataFrame, spec: DataSpec, key: str, num_labels: int = 2) -> pd.DataFrame:
    """Validate and normalise one split; every problem is a one-line ``UserError``."""
    cols = _columns(spec)
    label_col = cols["label"]
    for role, k in (("text", "data.text_column"), ("text_pair", "data.text_pair_column"),
                    ("label", "data.label_column")):
        if role in cols and cols[role] not in raw.columns:
            raise UserError(k, cols[role], f"column missing in {key}; columns are {list(raw.columns)}")
    if len(raw) == 0:
        raise UserError(key, spec.train if key == "data.train" else spec.eval, "split is empty (no rows)")
    texts = [r for r in ("text", "text_pair") if r in cols]
    df = pd.DataFrame({"example_id": np.arange(len(raw)), **{r: raw[cols[r]] for r in texts},
                       "label": raw[label_col]})
    bad = df["label"].isna()
    for r in texts:
        t = df[r].astype("string")
        bad |= t.isna() | (t.str.strip() == "")
    if bad.any():
        if not spec.drop_invalid:
            first = df[bad].iloc[0]
            shown = {c: (None if pd.isna(first[c]) else _plain(first[c])) for c in (*texts, "label")}
            cells = ", ".join(f"{c}={shown[c]!r}" for c in shown)
            raise UserError(key, f"row {int(first.example_id)}: {cells}",
                            f"{int(bad.sum())} rows with empty text or a missing label (of {len(df)}; "
                            "the first is shown); fix them or set data.drop_invalid: true")
        df = df[~bad]
        if len(df) == 0:
            raise UserError(key, f"{int(bad.sum())} rows", "every row has empty text or a missing label")
    try:
        labels = pd.to_numeric(df["label"], errors="coerce")
    except (TypeError, ValueError):  # lists, dicts...: not numbers either
        labels = pd.Series(np.nan, index=df.index)
    if num_labels == 1:  # regression: any finite real value
        not_real = labels.isna() | ~np.isfinite(labels.astype(float))
        if not_real.any():
            example = _plain(df["label"][not_real].iloc[0])
            raise UserError("data.label_column", f"{label_col}={example!r}",
                            f"regression labels (num_labels: 1) must be numbers in {key}; "
                            f"{int(not_real.sum())} rows are not")
        return df.assign(**{r: df[r].astype(str) for r in texts},
                         label=labels.astype(np.float32)).reset_index(drop=True)
    not_int = labels.isna() | (labels != labels.round())
    if not_int.any():
        example = _plain(df["label"][not_int].iloc[0])
        raise UserError("data.label_column", f"{label_col}={example!r}",
                        f"labels must be integers 0..{num_labels - 1} in {key}; {int(not_int.sum())} "
                        "rows are not (map text labels to numbers first)")
    labels = labels.astype(int)
    out_of_range = sorted(int(x) for x in set(labels.unique()) - set(range(num_labels)))
    if out_of_range:
        raise UserError("data.label_column", f"{label_col}={out_of_range[:5]}",
                        f"labels must be in 0..{num_labels - 1} (a {num_labels}-class task) in {key}; "
                        "set data.num_labels for more classes")
    return df.assign(**{r: df[r].astype(str) for r in texts}, label=labels).reset_index(drop=True)


def load_task(spec: DataSpec, importance_examples: int = 0) -> TaskData:
    """Read both splits, hold out importance examples, apply the limits."""
    train_all, ev = read_split(spec, "train"), read_split(spec, "eval")
    if importance_examples >= len(train_all):
        raise UserError("importance.examples", importance_examples,
                        f"must be smaller than the training split ({len(train_all)} rows)")
    perm = np.random.default_rng(HOLDOUT_SEED).permutation(len(train_all))
    imp = train_all.iloc[np.sort(perm[:importance_examples])].reset_index(drop=True)
    train = train_all.iloc[np.sort(perm[importance_examples:])].reset_index(drop=True)
    if spec.train_limit:
        train = train.iloc[: spec.train_limit]
    return TaskData(train=train, importance=imp, eval=limit_eval(ev, spec),
                    num_labels=spec.num_labels, extra=read_extra_evals(spec))


def limit_eval(df: pd.DataFrame, spec: DataSpec) -> pd.DataFrame:
    return (df.iloc[: spec.eval_limit] if spec.eval_limit else df).reset_index(drop=True)


def read_extra_evals(spec: DataSpec) -> dict[str, pd.DataFrame]:
    """The further evaluation splits (``data.extra_eval``), with the evaluation limit applied."""
    return {name: limit_eval(read_split(spec, "extra_eval", name), spec) for name in spec.extra_eval}


# ---------------------------------------------------------------------------- batches

class Encoded(torch.utils.data.Dataset):
    """Token ids per example (unpadded), segment ids where the model uses them, labels (class
    ids, or float32 for regression) and example ids.

    ``token_types``: pass token_type_ids to the model (``trials.tokenizers.uses_token_types``);
    None: whenever the tokenizer returns them.
    """

    def __init__(self, df: pd.DataFrame, tokenizer, max_length: int, token_types: bool | None = None):
        pairs = list(df["text_pair"]) if "text_pair" in df.columns else None
        self.input_ids, self.token_type_ids = encode(tokenizer, list(df["text"]), pairs, max_length,
                                                     token_types)
        self.labels = df["label"].to_numpy()
        self.example_ids = df["example_id"].to_numpy()
        self.lengths = np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(df))

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, i):
        return i


class Collator:
    """Dynamic padding (right side) to the longest sequence in the batch."""

    def __init__(self, data: Encoded, pad_id: int):
        self.data, self.pad_id = data, pad_id
        regression = np.issubdtype(data.labels.dtype, np.floating)
        self.label_dtype = torch.float32 if regression else torch.long

    def __call__(self, idx: list[int]) -> dict:
        d = self.data
        width = int(d.lengths[idx].max())
        ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)   # [batch, seq]
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        types = torch.zeros((len(idx), width), dtype=torch.long) if d.token_type_ids is not None else None
        for row, i in enumerate(idx):
            n = d.lengths[i]
            ids[row, :n] = torch.as_tensor(d.input_ids[i])
            mask[row, :n] = 1
            if types is not None:
                types[row, :n] = torch.as_tensor(d.token_type_ids[i])
        out = {"input_ids": ids, "attention_mask": mask,
               "labels": torch.as_tensor(d.labels[idx], dtype=self.label_dtype),
               "example_id": torch.as_tensor(d.example_ids[idx], dtype=torch.long)}
        if types is not None:
            out["token_type_ids"] = types
        return out


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Shuffled batches of similar length (less padding), seeded per epoch.

    Shuffle, cut into mega-batches of 50 batches, sort each by length, split into batches,
    shuffle the batch order. Same idea as transformers' LengthGroupedSampler.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, group: bool = True):
        self.lengths, self.batch_size, self.seed, self.group = lengths, batch_size, seed, group
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        perm = rng.permutation(len(self.lengths))
        bs = self.batch_size
        if self.group:
            mega = 50 * bs
            perm = np.concatenate([
                c[np.argsort(-self.lengths[c], kind="stable")]
                for c in np.array_split(perm, range(mega, len(perm), mega))])
        batches = [perm[i:i + bs].tolist() for i in range(0, len(perm), bs)]
        for j in rng.permutation(len(batches)):
            yield batches[j]


def train_loader(data: Encoded, pad_id: int, batch_size: int, seed: int, group_by_length: bool = True):
    sampler = LengthGroupedBatches(data.lengths, batch_size, seed, group_by_length)
    return torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=Collator(data, pad_id))


def eval_loader(data: Encoded, pad_id: int, batch_size: int):
    """Batches in length order (least padding); results carry example_id, so order is free."""
    order = np.argsort(data.lengths, kind="stable")
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    return torch.utils.data.DataLoader(data, batch_sampler=batches, collate_fn=Collator(data, pad_id))
