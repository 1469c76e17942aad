"""Offline presets: ``preset:tiny-gpt2`` / ``preset:tiny-distilbert`` / ``preset:tiny-bert``.

Small models with several heads per layer, so the CPU demo and the tests run in minutes. Their
tokenizer is a word-level vocabulary built from the task text, or real vocab files when
``tokenizer=`` points at them, so they need no network.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from trials.registry import Registry
from trials.tokenizers import fix_padding, load_tokenizer, word_tokenizer

PRESET_PREFIX = "preset:"
PRESETS = Registry("preset", key="models[].name")   # "preset:<name>" -> Preset


@dataclass(frozen=True)
class Preset:
    config: Callable          # (vocab_size, pad_token_id=, bos_token_id=, eos_token_id=) -> PretrainedConfig
    style: str                # word-tokenizer style: "gpt2" or "bert"
    vocab_only_class: str     # tokenizer class for a ``tokenizer=`` directory of bare vocab files


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


PRESETS.add(f"{PRESET_PREFIX}tiny-gpt2", Preset(_gpt2_config, "gpt2", "GPT2Tokenizer"))
PRESETS.add(f"{PRESET_PREFIX}tiny-distilbert", Preset(_distilbert_config, "bert", "DistilBertTokenizer"))
PRESETS.add(f"{PRESET_PREFIX}tiny-bert", Preset(_bert_config, "bert", "BertTokenizer"))


def preset_config(name: str, vocab_size: int = 100):
    """The preset's architecture (for head counts without building the model)."""
    return PRESETS.lookup(name, "name").config(vocab_size, pad_token_id=0, bos_token_id=0, eos_token_id=0)


def load_preset(name: str, num_labels: int, tokenizer: str | None = None, texts: Iterable[str] | None = None):
    """(model, tokenizer) of a preset, randomly initialised (seed first)."""
    from transformers import AutoModelForSequenceClassification
    preset = PRESETS.lookup(name, "name")
    if tokenizer:
        tok = load_tokenizer(tokenizer, False, preset.vocab_only_class)
    else:
        if texts is None:
            from trials.synthetic import synthetic_sentiment
            texts = synthetic_sentiment(2000, seed=0)["sentence"]
        tok = word_tokenizer(texts, preset.style)
    fix_padding(None, tok)
    ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id or tok.pad_token_id,
               eos_token_id=tok.eos_token_id or tok.pad_token_id)
    config = preset.config(len(tok), **ids)
    config.num_labels = num_labels
    return AutoModelForSequenceClassification.from_config(config), tok
