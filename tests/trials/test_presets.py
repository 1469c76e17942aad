"""The pretrained tiny presets (trials/presets.py, trials/pretrain.py) and the demo sweep.

- ``preset:tiny-<arch>`` loads the shipped base offline, with the head layout the gate and pruning
  tests rely on; seeds share the base and draw their own classifier.
- The shipped files are what ``python -m headsweep.trials.pretrain`` makes: same recipe, seed, corpus,
  vocabulary and config, and replaying the first pretraining steps gives the recorded losses
  (the full pretraining is minutes, so it is not repeated here).
- ``-random`` presets and ``tokenizer=`` keep the random initialisation.
- The demo sweep validates, with the grid docs/demo.md describes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import socket
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from headsweep import trials
from headsweep.trials import pretrain
from headsweep.trials.presets import PRESETS, RANDOM_SUFFIX, WEIGHTS_DIR
from headsweep.trials.synthetic import lexicon, review_corpus, synthetic_sentiment

REPO = Path(__file__).resolve().parents[2]
ARCHS = ("gpt2", "distilbert", "bert", "llama")
PRETRAINED = [f"preset:tiny-{a}" for a in ARCHS]
# The classifier each architecture's sequence-classification model adds on top of the base.
CLASSIFIER = {"gpt2": {"score.weight"},
              "distilbert": {"pre_classifier.weight", "pre_classifier.bias", "classifier.weight",
                             "classifier.bias"},
              "bert": {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight",
                       "classifier.bias"},
              "llama": {"score.weight"}}
BASE_PREFIX = {"gpt2": "transformer.", "distilbert": "distilbert.", "bert": "bert.", "llama": "model."}
# (layers, query heads, head width, key/value heads): tiny-llama has grouped-query attention
LAYOUT = {"gpt2": (4, 4, 16, 4), "distilbert": (4, 4, 16, 4), "bert": (4, 4, 16, 4), "llama": (4, 8, 8, 2)}


def seeded(name: str, seed: int, **kw):
    from accelerate.utils import set_seed
    set_seed(seed)
    return trials.load_model(name, 2, **kw)


def shipped_tensors(arch: str) -> dict:
    """The base's tensors as stored, keyed as the sequence-classification model names them."""
    from transformers.utils import SAFE_WEIGHTS_NAME
    stored = load_file(WEIGHTS_DIR / f"tiny-{arch}" / SAFE_WEIGHTS_NAME)
    return {k if k.startswith(BASE_PREFIX[arch]) else BASE_PREFIX[arch] + k: v for k, v in stored.items()}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ---------------------------------------------------------------------------- loading

@pytest.mark.parametrize("arch", ARCHS)
def test_pretrained_presets_load_offline_with_the_head_layout(arch, no_network):
    model, tok = trials.load_model(f"preset:tiny-{arch}", 3)
    assert model.config.model_type == arch and model.config.num_labels == 3
    layout = trials.head_layout(model)
    assert (layout.n_layers, layout.n_heads, layout.head_dim, layout.kv_heads) == LAYOUT[arch]
    assert model.config.hidden_size == 64 and trials.count_parameters(model) < 400_000
    # every base weight is the stored one; only the classifier is new
    stored, got = shipped_tensors(arch), model.state_dict()
    base = {k for k in got if k not in CLASSIFIER[arch]}
    assert set(got) - base == CLASSIFIER[arch]
    missing = [k for k in base if k not in stored and not k.endswith("position_ids")]
    assert not missing, missing
    assert all(torch.equal(got[k], stored[k]) for k in base if k in stored)
    # the shipped vocabulary covers the task: no unknown word, ids inside the embedding
    ids = tok(list(synthetic_sentiment(300, seed=1)["sentence"]))["input_ids"]
    flat = [i for row in ids for i in row]
    assert tok.unk_token_id not in flat and max(flat) < model.config.vocab_size
    assert tok.pad_token is not None and model.config.pad_token_id == tok.pad_token_id
    if arch in ("gpt2", "llama"):
        assert tok.pad_token == tok.eos_token                  # decoders pool the last non-pad token
    else:
        assert ids[0][0] == tok.cls_token_id and ids[0][-1] == tok.sep_token_id


@pytest.mark.parametrize("arch", ARCHS)
def test_seeds_share_the_base_and_draw_their_own_classifier(arch):
    a, _ = seeded(f"preset:tiny-{arch}", 0)
    b, _ = seeded(f"preset:tiny-{arch}", 1)
    again, _ = seeded(f"preset:tiny-{arch}", 0)
    sa, sb, s0 = a.state_dict(), b.state_dict(), again.state_dict()
    for k in sa:
        assert torch.equal(sa[k], s0[k]), k                        # a seed is reproducible
        if k in CLASSIFIER[arch] and k.endswith("weight"):
            assert not torch.equal(sa[k], sb[k]), k                # its own classifier
        elif k not in CLASSIFIER[arch]:
            assert torch.equal(sa[k], sb[k]), k                    # the shared base


def test_random_presets_are_seeded_random_inits_of_the_same_architecture():
    a, tok = seeded("preset:tiny-gpt2-random", 0, texts=["zebra crossings are good ."])
    b, _ = seeded("preset:tiny-gpt2-random", 1, texts=["zebra crossings are good ."])
    pre, _ = seeded("preset:tiny-gpt2", 0)
    assert "zebra" in tok.get_vocab()                              # vocabulary from the texts
    assert trials.head_layout(a) == trials.head_layout(pre)
    key = "transformer.h.0.attn.c_attn.weight"
    assert not torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert a.state_dict()[key].shape == pre.state_dict()[key].shape
    assert abs(a.state_dict()[key].std().item() - 0.02) < 0.005      # transformers' init, not trained
    assert set(n for n in PRESETS if n.endswith(RANDOM_SUFFIX)) == {f"{p}{RANDOM_SUFFIX}" for p in PRETRAINED}


def test_a_tokenizer_directory_gives_a_random_init_sized_to_it(tmp_path):
    """``tokenizer=`` (real vocab files) cannot use the shipped embeddings: random init, as before."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "is", "good", "."]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    model, tok = seeded("preset:tiny-bert", 0, tokenizer=str(tmp_path))
    assert model.config.vocab_size == len(words) == len(tok)
    assert tok("the movie is good .")["input_ids"] == [2, 5, 6, 7, 8, 9, 3]
    assert trials.head_layout(model).n_heads == 4


def test_task_text_outside_the_vocabulary_warns():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seeded("preset:tiny-distilbert", 0, texts=synthetic_sentiment(50, seed=0)["sentence"])
    with pytest.warns(UserWarning, match="outside the pretrained preset's vocabulary.*-random"):
        seeded("preset:tiny-distilbert", 0, texts=["a wholly different corpus of reviews"])


# ---------------------------------------------------------------------------- the shipped files

@pytest.fixture(scope="module")
def corpus_sha() -> dict:
    """SHA-256 of the corpus each recipe pretrains on, computed here from the generator."""
    sizes = {r.docs for r in pretrain.RECIPES.values()}
    return {n: pretrain.sha256_text(review_corpus(n, pretrain.CORPUS_SEED)) for n in sizes}


def manifest_of(name: str) -> dict:
    folder = WEIGHTS_DIR / PRESETS[name].weights
    return json.loads((folder / pretrain.MANIFEST).read_text())


@pytest.mark.parametrize("name", PRETRAINED)
def test_shipped_files_are_what_the_pretraining_script_makes(name, corpus_sha):
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import SAFE_WEIGHTS_NAME
    folder = WEIGHTS_DIR / PRESETS[name].weights
    man = manifest_of(name)
    recipe = pretrain.RECIPES[name]
    assert man["preset"] == name and man["objective"] == PRESETS[name].objective
    assert man["recipe"] == dataclasses.asdict(recipe) and man["steps_done"] == recipe.steps
    assert (man["seed"], man["corpus_seed"]) == (pretrain.SEED, pretrain.CORPUS_SEED)
    assert man["corpus_sha256"] == corpus_sha[recipe.docs]
    assert man["weights_sha256"] == hashlib.sha256((folder / SAFE_WEIGHTS_NAME).read_bytes()).hexdigest()
    # the script's tokenizer and config are the shipped ones
    tok = pretrain.build_tokenizer(name)
    shipped = AutoTokenizer.from_pretrained(folder)
    assert shipped.get_vocab() == tok.get_vocab() and man["vocab_sha256"] == pretrain.vocab_hash(tok)
    text = "although the plot is not dull , the cast is great . loved it ."
    assert shipped(text)["input_ids"] == tok(text)["input_ids"]
    want = pretrain.init_model(name, tok).config.to_dict()
    got = AutoConfig.from_pretrained(folder).to_dict()
    ignore = {"architectures", "transformers_version", "dtype", "torch_dtype", "_name_or_path"}
    assert {k: v for k, v in got.items() if k not in ignore} == {k: v for k, v in want.items() if k not in ignore}
    # replaying the first steps (same init, batches, masking, schedule) gives the recorded losses
    _, _, replay = pretrain.pretrain(name, stop_after=3)
    assert replay["first_losses"] == pytest.approx(man["first_losses"][:3], rel=1e-5)
    assert replay["corpus_sha256"] == man["corpus_sha256"]


def test_the_pretrained_bases_learnt_the_corpus():
    """Recorded by the script on held-out text: the LM loss fell far below its start."""
    for name in PRETRAINED:
        man = manifest_of(name)
        assert man["heldout_loss"] < man["first_losses"][0] / 2, (name, man["heldout_loss"])


@pytest.mark.parametrize("name", PRETRAINED)
def test_the_shipped_bases_know_the_verdict_zero_shot(name):
    """The probe, run here on the shipped weights: before any fine-tune the LM prefers the right
    verdict after a task sentence (negations and contrasts included) far above chance, and says
    what the script recorded."""
    import transformers
    folder = WEIGHTS_DIR / PRESETS[name].weights
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = getattr(transformers, PRESETS[name].lm_class).from_pretrained(folder)
    acc = pretrain.verdict_probe(model, tok, PRESETS[name].objective)
    assert acc > 0.8, (name, acc)
    assert acc == pytest.approx(manifest_of(name)["zero_shot_accuracy"], abs=0.01)


def test_the_zero_shot_probe_is_at_chance_before_pretraining():
    for name in ("preset:tiny-gpt2", "preset:tiny-distilbert"):
        tok = pretrain.build_tokenizer(name)
        acc = pretrain.verdict_probe(pretrain.init_model(name, tok), tok, PRESETS[name].objective, n=300)
        assert 0.35 < acc < 0.65, (name, acc)


def test_the_vocabulary_covers_corpus_and_task():
    vocab = set(pretrain.build_tokenizer("preset:tiny-gpt2").get_vocab())
    corpus_words = {w for doc in review_corpus(2000, pretrain.CORPUS_SEED) for w in doc.split()}
    task_words = {w for s in synthetic_sentiment(2000, seed=0)["sentence"] for w in s.split()}
    assert corpus_words | task_words <= vocab
    assert set(lexicon()) == corpus_words | task_words           # the lexicon is exactly what they use


def test_review_corpus_is_seeded_and_each_verdict_agrees_with_its_sentence():
    from headsweep.trials.synthetic import NEGATIVE, NEGATIONS, POSITIVE, VERDICT_VERBS
    assert review_corpus(50, 3) == review_corpus(50, 3) != review_corpus(50, 4)
    verbs = VERDICT_VERBS[0] + VERDICT_VERBS[1]
    checked = plain = 0
    for doc in review_corpus(400, 3):
        sentences = [s.strip() for s in doc.split(" .") if s.strip()]
        for before, sentence in zip(sentences, sentences[1:]):
            if sentence.split()[0] not in verbs or before.split()[0] in verbs:
                continue
            if any(w in before.split() for w in ("but", "although", "and")):
                continue                              # single clauses only: polarity by hand
            words = before.split()
            negated = any(f" {n} " in f" {before} " for n in NEGATIONS)
            assert words[-1] in POSITIVE + NEGATIVE
            assert (sentence.split()[0] in VERDICT_VERBS[1]) == ((words[-1] in POSITIVE) != negated), doc
            checked += 1
            plain += not negated
    assert checked > 300 and plain > checked / 2


# ---------------------------------------------------------------------------- the demo sweep

def test_demo_sweep_validates_as_documented(tmp_path, capsys, monkeypatch):
    from headsweep.orchestrator import cli
    path = REPO / "configs" / "demo.yaml"
    raw = yaml.safe_load(path.read_text())
    assert {m["name"] for m in raw["models"]} == {"preset:tiny-gpt2", "preset:tiny-distilbert"}
    assert len(raw["seeds"]) >= 5 and raw["single_head_arch"] == {"init": "pretrained"}
    assert set(raw["strategies"]) == {"none", "top", "bottom", "random", "single-head", "layer-single-head",
                                      "iterative"}
    assert sorted(raw["k"]) == raw["k"] and len(raw["k"]) >= 4 and max(raw["k"]) >= 0.5
    monkeypatch.chdir(tmp_path)           # demo storage is ./sweeps: validate must not create it
    rc = cli.main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert rc == 0 and "error:" not in err, err
    # counted here from the file: (multi-head + one-head) x seeds fine-tunes per model; per
    # (multi-head model, seed) one trial per distinct head count of top and bottom, one per count
    # and draw of random, one each for single-head, layer-single-head and iterative
    n_seeds, n_models = len(raw["seeds"]), len(raw["models"])
    counts = {max(1, math.floor(k * 16 + 0.5)) if isinstance(k, float) else k for k in raw["k"]}  # of 16 heads
    draws = raw.get("random_draws", 5)
    per_seed = {"none": 0, "single-head": 1, "layer-single-head": 1, "iterative": 1,
                "top": len(counts), "bottom": len(counts), "random": len(counts) * draws}
    unknown = set(raw["strategies"]) - set(per_seed)
    assert not unknown, f"count the stage-B trials of {unknown} here"
    stage_a = n_models * n_seeds * 2
    stage_b = n_models * n_seeds * sum(per_seed[s] for s in raw["strategies"])
    assert f"ok: demo: {stage_a} stage-A fine-tunes, {stage_b} stage-B trials" in out, out
    assert not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize("arch, segments", [("bert", True), ("distilbert", False), ("gpt2", False),
                                            ("llama", False)])
def test_a_plain_tokenizer_call_feeds_the_model_what_it_takes(arch, segments):
    """As with the hub's tokenizers: tok(a, b) gives token_type_ids exactly where the model takes
    them (BERT), so model(**tok(a, b)) runs and a BERT pair gets its segments."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(WEIGHTS_DIR / f"tiny-{arch}")
    model, _ = seeded(f"preset:tiny-{arch}", 0)
    enc = tok(["the plot is dull ."], ["loved it ."], return_tensors="pt")
    assert ("token_type_ids" in enc) == segments
    if segments:
        assert enc["token_type_ids"][0].tolist()[-4:] == [1, 1, 1, 1]     # "loved it . [SEP]"
    with torch.no_grad():
        assert model.eval()(**enc).logits.shape == (1, 2)
