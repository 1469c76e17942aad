"""Offline presets: ``preset:tiny-gpt2`` / ``-distilbert`` / ``-bert`` / ``-llama``.

Small models with several heads per layer (4 layers x 4 heads, hidden 64; tiny-llama: 4 layers x 8
query heads sharing 2 key/value heads, hidden 64), so the CPU demo and the tests run in minutes,
with no network.

- ``preset:tiny-<arch>`` is a *pretrained* base, as a hub model is: weights pretrained once with a
  fixed seed (causal LM for GPT-2 and Llama, masked LM for DistilBERT and BERT) on a generated corpus in the
  synthetic task's vocabulary, shipped under ``trials/preset_weights/tiny-<arch>/`` with its
  word-level tokenizer and made by ``python -m headsweep.trials.pretrain`` (docs/demo.md). Every seed shares
  these weights; only the classifier (drawn from the caller's seed), data order and dropout vary.
- ``preset:tiny-<arch>-random`` is the same architecture randomly initialised from the caller's
  seed, with a word-level vocabulary built from the task text (``texts``).
- ``tokenizer=`` (real vocab files, e.g. GPT-2's 50257 tokens) gives the random-init model sized
  to that vocabulary for either name: pretrained embeddings exist only for the shipped vocabulary.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from headsweep.trials.registry import Registry
from headsweep.trials.tokenizers import fix_padding, load_tokenizer, word_tokenizer

PRESET_PREFIX = "preset:"
RANDOM_SUFFIX = "-random"
PRESETS = Registry("preset", key="models[].name")   # "preset:<name>" -> Preset
WEIGHTS_DIR = Path(__file__).resolve().parent / "preset_weights"
# Above this share of unknown words in the task text the shipped vocabulary does not fit the task.
MAX_UNKNOWN_SHARE = 0.01


@dataclass(frozen=True)
class Preset:
    config: Callable          # (vocab_size, pad_token_id=, bos_token_id=, eos_token_id=) -> PretrainedConfig
    style: str                # word-tokenizer style: "gpt2" or "bert"
    vocab_only_class: str     # tokenizer class for a ``tokenizer=`` directory of bare vocab files
    lm_class: str             # the pretraining model class (trials/pretrain.py)
    objective: str            # "clm" (next word) or "mlm" (masked words)
    weights: str | None       # folder under WEIGHTS_DIR, or None: random init

    @property
    def segment_ids(self) -> bool:
        """Whether the architecture takes token_type_ids (BERT does, DistilBERT and GPT-2 do not)."""
        return self.lm_class.startswith("Bert")

    @property
    def weights_dir(self) -> Path | None:
        return WEIGHTS_DIR / self.weights if self.weights else None


def _gpt2_config(vocab_size, **ids):
    from transformers import GPT2Config
    return GPT2Config(vocab_size=vocab_size, n_positions=256, n_embd=64, n_layer=4, n_head=4,
                      n_inner=128, **ids)


def _distilbert_config(vocab_size, **ids):
    from transformers import DistilBertConfig
    return DistilBertConfig(vocab_size=vocab_size, max_position_embeddings=256, dim=64, n_layers=4,
                            n_heads=4, hidden_dim=128, pad_token_id=ids["pad_token_id"])


def _bert_config(vocab_size, **ids):
    from transformers import BertConfig
    return BertConfig(vocab_size=vocab_size, max_position_embeddings=256, hidden_size=64,
                      num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                      pad_token_id=ids["pad_token_id"])


def _llama_config(vocab_size, **ids):
    """Grouped-query attention: 8 query heads share 2 key/value heads (4 per KV group), head_dim 8;
    the embedding is tied to the LM head, as in small Llama-family models (SmolLM2), which also
    keeps the shipped file under 1 MB."""
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=vocab_size, max_position_embeddings=256, hidden_size=64, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=2, intermediate_size=128,
                       tie_word_embeddings=True, **ids)


ARCHS = {  # arch -> (config, word-tokenizer style, bare-vocab tokenizer class, LM class, objective)
    "gpt2": (_gpt2_config, "gpt2", "GPT2Tokenizer", "GPT2LMHeadModel", "clm"),
    "distilbert": (_distilbert_config, "bert", "DistilBertTokenizer", "DistilBertForMaskedLM", "mlm"),
    "bert": (_bert_config, "bert", "BertTokenizer", "BertForMaskedLM", "mlm"),
    "llama": (_llama_config, "gpt2", "LlamaTokenizer", "LlamaForCausalLM", "clm"),
}
for _arch, _parts in ARCHS.items():
    PRESETS.add(f"{PRESET_PREFIX}tiny-{_arch}", Preset(*_parts, weights=f"tiny-{_arch}"))
    PRESETS.add(f"{PRESET_PREFIX}tiny-{_arch}{RANDOM_SUFFIX}", Preset(*_parts, weights=None))


def preset_config(name: str, vocab_size: int = 100):
    """The preset's architecture (for head counts without building the model)."""
    return PRESETS.lookup(name, "name").config(vocab_size, pad_token_id=0, bos_token_id=0, eos_token_id=0)


def load_preset(name: str, num_labels: int, tokenizer: str | None = None, texts: Iterable[str] | None = None):
    """(model, tokenizer) of a preset: the shipped pretrained base with a fresh classifier, or a
    random init (``-random`` names, or ``tokenizer=``). Seed first: the classifier (and a random
    init) is drawn from torch's global generator."""
    preset = PRESETS.lookup(name, "name")
    if preset.weights and not tokenizer:
        return load_pretrained(preset, num_labels, texts)
    from transformers import AutoModelForSequenceClassification
    if tokenizer:
        tok = load_tokenizer(tokenizer, False, preset.vocab_only_class)
    else:
        if texts is None:
            from headsweep.trials.synthetic import synthetic_sentiment
            texts = synthetic_sentiment(2000, seed=0)["sentence"]
        tok = word_tokenizer(texts, preset.style, segment_ids=preset.segment_ids)
    fix_padding(None, tok)
    config = preset.config(len(tok), **special_ids(tok))
    config.num_labels = num_labels
    return AutoModelForSequenceClassification.from_config(config), tok


def special_ids(tok) -> dict:
    return dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id or tok.pad_token_id,
                eos_token_id=tok.eos_token_id or tok.pad_token_id)


def load_pretrained(preset: Preset, num_labels: int, texts: Iterable[str] | None = None):
    """The shipped base for sequence classification; only the classifier is newly initialised."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging
    path = preset.weights_dir
    tok = AutoTokenizer.from_pretrained(path)
    fix_padding(None, tok)
    if texts is not None:
        _warn_unknown_words(tok, texts, preset)
    # The load report ("newly initialized: classifier...", "unused: lm_head...") says what we
    # intend; a user cannot act on it, so it is silenced for this call only.
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    finally:
        hf_logging.set_verbosity(level)
    return model, tok


def _warn_unknown_words(tok, texts: Iterable[str], preset: Preset) -> None:
    """Warn when the task text is mostly outside the shipped vocabulary (another data set)."""
    unk, total = tok.unk_token_id, 0
    unknown = 0
    for ids in tok(list(texts)[:2000], add_special_tokens=False)["input_ids"]:
        total += len(ids)
        unknown += sum(i == unk for i in ids)
    if total and unknown / total > MAX_UNKNOWN_SHARE:
        warnings.warn(f"{unknown / total:.0%} of the task's words are outside the pretrained preset's "
                      f"vocabulary (the synthetic task's); use '{PRESET_PREFIX}tiny-...{RANDOM_SUFFIX}' "
                      "or models[].tokenizer for other data", stacklevel=3)
