"""Pretrain the tiny presets' bases: ``python -m headsweep.trials.pretrain --out trials/preset_weights``.

Each preset (trials/presets.py) is pretrained once, from a fixed seed, on the generated review
corpus of trials/synthetic.py (``review_corpus``): a causal-LM objective (next word) for GPT-2 and
Llama, a masked-LM objective (15% of words, 80/10/10 [MASK]/random/kept, transformers'
``DataCollatorForLanguageModeling``) for DistilBERT and BERT. The vocabulary is a word-level one
built from the corpus and the task's lexicon, so it covers the fine-tuning task.

On the CPU with one torch thread the run is deterministic: the same command writes the same
files, bit for bit, for the same torch / transformers versions. Each preset folder gets the
weights (safetensors), config, tokenizer files, and ``pretrain.json``: the recipe, the corpus and
vocabulary hashes, the first losses (what ``tests/trials/test_presets.py`` replays), the final
and held-out losses, and the weights' SHA-256. Timings go to stderr only, so the manifest too is
reproducible.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from headsweep.trials.presets import ARCHS, PRESET_PREFIX, PRESETS, RANDOM_SUFFIX, WEIGHTS_DIR, special_ids
from headsweep.trials.synthetic import VERDICT_VERBS, lexicon, review_corpus
from headsweep.trials.tokenizers import word_tokenizer

SEED = 20240917          # model init, batch order and masking: one fixed seed for every preset
CORPUS_SEED = 7          # the task uses seeds 0 (train) and 1 (eval); the corpus is its own draw
HELDOUT_SEED = 8
PROBE_SEED = 9
MANIFEST = "pretrain.json"
FIRST_LOSSES = 5         # losses of the first steps, recorded for the reproducibility test


@dataclass(frozen=True)
class Recipe:
    docs: int = 30000            # corpus size (reviews of 1-3 sentences)
    heldout_docs: int = 1000
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int = 96
    mlm_probability: float = 0.15
    verdict_mask_share: float = 0.5   # masked LM: each verdict verb also masked with this chance


RECIPES = {f"{PRESET_PREFIX}tiny-{arch}": Recipe() for arch in ARCHS}


def sha256_text(texts) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\n")
    return h.hexdigest()


def vocab_hash(tok) -> str:
    return hashlib.sha256(json.dumps(sorted(tok.get_vocab().items())).encode()).hexdigest()


def build_tokenizer(name: str):
    """The preset's word-level tokenizer: the specials, then every word of the task and corpus
    lexicon (alphabetical: each occurs once here), so nothing the task can say is unknown."""
    preset = PRESETS.lookup(name, "name")
    return word_tokenizer([" ".join(lexicon())], preset.style, segment_ids=preset.segment_ids)


def init_model(name: str, tok):
    """The preset's LM, initialised from SEED (transformers' own init)."""
    import transformers
    preset = PRESETS.lookup(name, "name")
    torch.manual_seed(SEED)
    config = preset.config(len(tok), **special_ids(tok))
    return getattr(transformers, preset.lm_class)(config)


def without_dropout(model):
    """Pretrain with every dropout off (faster on the CPU, and the corpus is endless); the saved
    config keeps the preset's dropout, which is the fine-tuning's, as a hub model's does."""
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    return model


class Batches:
    """Endless shuffled batches of corpus documents (one permutation per epoch, from SEED),
    collated (padding, MLM masking) by transformers' collator with its own seeded generator.

    For the masked LM, verdict verbs are masked more often (``verdict_mask_share``) on top of the
    collator's random 15 %, as salient-span masking does for entities: at 15 % alone a verdict is
    a target in one document of ten, and the 3000-step runs never learnt it (probe at chance)."""

    def __init__(self, tok, docs: list[str], recipe: Recipe, mlm: bool):
        from transformers import DataCollatorForLanguageModeling
        self.tok, self.docs, self.max_length = tok, docs, recipe.max_length
        self.collate = DataCollatorForLanguageModeling(tok, mlm=mlm, mlm_probability=recipe.mlm_probability,
                                                       seed=SEED)
        self.batch_size = batch_size = recipe.batch_size
        self.rng = np.random.default_rng(SEED)
        self._order, self._pos = np.empty(0, dtype=np.int64), 0
        self.per_epoch = len(docs) // batch_size
        self.salient = torch.tensor(tok.convert_tokens_to_ids(VERDICT_VERBS[0] + VERDICT_VERBS[1])) if mlm else None
        self.share = recipe.verdict_mask_share
        self.gen = torch.Generator().manual_seed(SEED)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._pos + self.batch_size > len(self._order):
            self._order, self._pos = self.rng.permutation(len(self.docs)), 0
        idx = self._order[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        enc = self.tok([self.docs[i] for i in idx], truncation=True, max_length=self.max_length)
        batch = self.collate([{"input_ids": ids} for ids in enc["input_ids"]])  # [batch, seq] each
        if self.salient is not None and self.share > 0:
            ids, labels = batch["input_ids"], batch["labels"]
            truth = torch.where(labels >= 0, labels, ids)             # the text before masking
            pick = torch.isin(truth, self.salient) & (torch.rand(truth.shape, generator=self.gen) < self.share)
            ids[pick] = self.tok.mask_token_id
            labels[pick] = truth[pick]
        return {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}


@contextlib.contextmanager
def one_thread():
    """One torch thread: reductions then run in one fixed order, so the run is bit-reproducible."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def verdict_probe(model, tok, objective: str, n: int = 500) -> float:
    """Zero-shot accuracy of the LM on the task: on ``n`` task sentences (a draw of its own), does
    the LM put more probability on positive verdict verbs than on negative ones where a verdict
    would follow (the next word for a causal LM; "<sentence> [MASK] it ." for a masked LM)?
    Chance is 0.5; it measures whether pretraining taught the base what the task needs."""
    from headsweep.trials.synthetic import synthetic_sentiment
    task = synthetic_sentiment(n, seed=PROBE_SEED)
    pos, neg = (tok.convert_tokens_to_ids(VERDICT_VERBS[c]) for c in (1, 0))
    was = model.training
    model.eval()
    texts = list(task["sentence"])
    if objective == "mlm":
        texts = [f"{t} {VERDICT_VERBS[1][0]} it ." for t in texts]
    enc = tok(texts, padding=True, return_tensors="pt")            # right padding: [n, seq]
    ids, mask = enc["input_ids"], enc["attention_mask"]
    last = mask.sum(1) - 1                                        # the last real token
    if objective == "mlm":
        where = last - 3 if tok.sep_token_id is not None else last - 2   # the verb, before "it ."
        ids = ids.clone()
        ids[torch.arange(n), where] = tok.mask_token_id
    else:
        where = last
    logits = model(input_ids=ids, attention_mask=mask).logits[torch.arange(n), where]   # [n, vocab]
    p = logits.softmax(-1)
    said = (p[:, pos].sum(-1) > p[:, neg].sum(-1)).long().numpy()
    model.train(was)
    return float((said == task["label"].to_numpy()).mean())


@torch.no_grad()
def heldout_loss(model, tok, recipe: Recipe, mlm: bool) -> float:
    """Mean LM loss on a held-out corpus draw (masking seeded too: comparable across runs)."""
    model.eval()
    batches = Batches(tok, review_corpus(recipe.heldout_docs, HELDOUT_SEED), recipe, mlm)
    losses = [float(model(**next(batches)).loss) for _ in range(batches.per_epoch)]
    model.train()
    return float(np.mean(losses))


def pretrain(name: str, recipe: Recipe | None = None, stop_after: int | None = None, log=None):
    """Pretrain preset ``name``: (model, tokenizer, manifest). ``stop_after`` ends early (the
    schedule is still the full recipe's, so the first steps equal the full run's)."""
    from transformers import get_linear_schedule_with_warmup
    recipe = recipe or RECIPES[name]
    preset = PRESETS.lookup(name, "name")
    mlm = preset.objective == "mlm"
    with one_thread():
        tok = build_tokenizer(name)
        model = without_dropout(init_model(name, tok))
        docs = review_corpus(recipe.docs, CORPUS_SEED)
        batches = Batches(tok, docs, recipe, mlm)
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "ln_", "norm.weight")   # (RMS)norm scales
        groups = [
            {"params": [p for n, p in model.named_parameters() if not any(s in n for s in no_decay)],
             "weight_decay": recipe.weight_decay},
            {"params": [p for n, p in model.named_parameters() if any(s in n for s in no_decay)],
             "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(groups, lr=recipe.lr)
        sched = get_linear_schedule_with_warmup(opt, int(recipe.warmup_ratio * recipe.steps), recipe.steps)
        model.train()
        losses, t0 = [], time.perf_counter()
        for step in range(stop_after or recipe.steps):
            loss = model(**next(batches)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if log and (step + 1) % 250 == 0:
                log(f"{name} step {step + 1}/{recipe.steps} loss {np.mean(losses[-250:]):.4f} "
                    f"zero-shot {verdict_probe(model, tok, preset.objective):.3f} ({time.perf_counter() - t0:.0f} s)")
        model.eval()
        manifest = {
            "preset": name, "objective": preset.objective, "lm_class": preset.lm_class,
            "seed": SEED, "corpus_seed": CORPUS_SEED, "heldout_seed": HELDOUT_SEED, "probe_seed": PROBE_SEED,
            "recipe": dataclasses.asdict(recipe), "steps_done": len(losses),
            "epochs": round(len(losses) / batches.per_epoch, 3),
            "corpus_sha256": sha256_text(docs), "vocab_size": len(tok), "vocab_sha256": vocab_hash(tok),
            "first_losses": losses[:FIRST_LOSSES],
            "final_loss": float(np.mean(losses[-100:])),
            "heldout_loss": heldout_loss(model, tok, recipe, mlm) if stop_after is None else math.nan,
            "zero_shot_accuracy": verdict_probe(model, tok, preset.objective) if stop_after is None else math.nan,
            "torch": torch.__version__.split("+")[0], "transformers": _transformers_version(),
        }
    return model, tok, manifest


def _transformers_version() -> str:
    import transformers
    return transformers.__version__


def save(model, tok, manifest: dict, out: Path) -> Path:
    """Weights (safetensors), config, tokenizer and the manifest into ``out``/tiny-<arch>."""
    folder = Path(out) / PRESETS.lookup(manifest["preset"], "name").weights
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    from transformers.utils import SAFE_WEIGHTS_NAME
    manifest = {**manifest, "weights_sha256": hashlib.sha256((folder / SAFE_WEIGHTS_NAME).read_bytes()).hexdigest()}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return folder


def main(argv=None) -> int:
    pretrained = [n for n in PRESETS if not n.endswith(RANDOM_SUFFIX)]
    p = argparse.ArgumentParser(prog="python -m headsweep.trials.pretrain", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(WEIGHTS_DIR), help="folder for the preset folders (default: %(default)s)")
    p.add_argument("--presets", nargs="+", default=pretrained, choices=pretrained, metavar="PRESET",
                   help=f"which presets (default: all of {', '.join(pretrained)})")
    args = p.parse_args(argv)
    def log(msg):
        print(msg, file=sys.stderr, flush=True)
    for name in args.presets:
        t0 = time.perf_counter()
        model, tok, manifest = pretrain(name, log=log)
        folder = save(model, tok, manifest, Path(args.out))
        log(f"{name}: final loss {manifest['final_loss']:.4f}, held-out {manifest['heldout_loss']:.4f}, "
            f"{time.perf_counter() - t0:.0f} s -> {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
