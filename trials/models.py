"""Model loading: hub ids, local directories, offline presets, and the one-head architecture.

``load_model(name, num_labels)`` returns ``(model, tokenizer)`` for sequence classification.
Presets (``preset:tiny-gpt2`` / ``-distilbert`` / ``-bert``) are small random-init models with
several heads per layer; their tokenizer is a word-level vocabulary built from the task text (or
real vocab files when ``tokenizer=`` points at them), so they need no network.
"""
from __future__ import annotations

import copy
import os
import re
from collections import Counter
from collections.abc import Iterable

import torch
from torch import nn

from trials.adapters import adapter_for
from trials.errors import UserError, registry_error

PRESET_PREFIX = "preset:"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<|endoftext|>"]


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


# name -> (config builder, tokenizer style); sizes are tiny so the CPU demo runs in minutes.
PRESETS = {
    "tiny-gpt2": (_gpt2_config, "gpt2"),
    "tiny-distilbert": (_distilbert_config, "bert"),
    "tiny-bert": (_bert_config, "bert"),
}
# Tokenizer class for a preset's ``tokenizer=`` directory that holds only vocab files (e.g. a bare
# BERT vocab.txt): with no tokenizer_config.json / tokenizer.json / config.json there,
# AutoTokenizer cannot tell which class to build.
PRESET_TOKENIZERS = {"tiny-gpt2": "GPT2Tokenizer", "tiny-distilbert": "DistilBertTokenizer",
                     "tiny-bert": "BertTokenizer"}


# ---------------------------------------------------------------------------- tokenizers

def word_tokenizer(texts: Iterable[str], style: str, max_vocab: int = 20000):
    """A deterministic lowercase word-level tokenizer built from ``texts`` (no network).

    ``style`` "bert" adds [CLS] ... [SEP]; "gpt2" adds nothing and pads with <|endoftext|>.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.BertPreTokenizer()
    norm = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    counts = Counter()
    for t in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
    # Sort by (-count, word): the vocabulary never depends on input order or hash seeds.
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:max_vocab]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + [w for w in words if w not in SPECIALS])}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = norm, pre
    if style == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    eos = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token=eos,
                                   eos_token=eos, bos_token=eos)


def _load_tokenizer(path: str, trust_remote_code: bool, vocab_only_class: str | None = None):
    import transformers
    described = ("tokenizer_config.json", "tokenizer.json", "config.json")
    if vocab_only_class and os.path.isdir(path) and not any(
            os.path.exists(os.path.join(path, f)) for f in described):
        return getattr(transformers, vocab_only_class).from_pretrained(path)
    return transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def _fix_padding(model, tokenizer) -> None:
    """GPT-2 has no pad token: pad with EOS and tell the model, which pools the last non-pad token."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id


# ---------------------------------------------------------------------------- loading

def load_model(name: str, num_labels: int = 2, *, tokenizer: str | None = None,
               texts: Iterable[str] | None = None, single_head: str | None = None,
               trust_remote_code: bool = False):
    """(model, tokenizer) for a hub id, a local directory, or a ``preset:`` name.

    ``texts`` builds a preset's vocabulary (defaults to the synthetic task's text).
    ``single_head`` ("pretrained" | "random") returns the one-head architecture variant.
    Seed first (``accelerate.utils.set_seed``): the classifier head is freshly initialised.
    """
    if name.startswith(PRESET_PREFIX):
        model, tok = _load_preset(name[len(PRESET_PREFIX):], num_labels, tokenizer, texts)
    else:
        from transformers import AutoModelForSequenceClassification
        tok = _load_tokenizer(tokenizer or name, trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(
            name, num_labels=num_labels, trust_remote_code=trust_remote_code)
    _fix_padding(model, tok)
    adapter_for(model)  # fail early, listing the supported architectures
    if single_head:
        model = to_single_head(model, single_head)
    return model, tok


def _load_preset(preset: str, num_labels: int, tokenizer: str | None, texts):
    from transformers import AutoModelForSequenceClassification
    if preset not in PRESETS:
        raise registry_error("preset", PRESET_PREFIX + preset, [PRESET_PREFIX + p for p in PRESETS])
    build, style = PRESETS[preset]
    if tokenizer:
        tok = _load_tokenizer(tokenizer, False, PRESET_TOKENIZERS[preset])
    else:
        if texts is None:
            from trials.synthetic import synthetic_sentiment
            texts = synthetic_sentiment(2000, seed=0)["sentence"]
        tok = word_tokenizer(texts, style)
    _fix_padding(None, tok)
    ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id or tok.pad_token_id,
               eos_token_id=tok.eos_token_id or tok.pad_token_id)
    config = build(len(tok), **ids)
    config.num_labels = num_labels
    return AutoModelForSequenceClassification.from_config(config), tok


SINGLE_HEAD_INITS = ("pretrained", "random")


def to_single_head(model: nn.Module, init: str = "pretrained") -> nn.Module:
    """The same network with ONE attention head of full width in every layer.

    q/k/v/output projections keep their shapes, so ``init="pretrained"`` reuses the weights
    unchanged (only the head split, and so the 1/sqrt(d) scale, changes); ``init="random"``
    re-draws the attention projections (normal(0, initializer_range), zero bias) as the seed
    study did. Everything outside attention, classifier included, is copied.
    """
    from transformers import AutoModelForSequenceClassification
    if init not in SINGLE_HEAD_INITS:
        raise UserError("single_head_arch.init", init, f"must be one of {', '.join(SINGLE_HEAD_INITS)}")
    config = copy.deepcopy(model.config)
    config.num_attention_heads = 1
    new = AutoModelForSequenceClassification.from_config(config)
    new.load_state_dict(model.state_dict())
    if init == "random":
        ad, std = adapter_for(new), config.initializer_range
        with torch.no_grad():
            for i in range(config.num_hidden_layers):
                for mod in ad.attention_modules(new, i):
                    mod.weight.normal_(0.0, std)
                    mod.bias.zero_()
    return new.to(next(model.parameters()).device)


def is_local(name: str) -> bool:
    return os.path.isdir(name) or bool(re.match(r"^(\.|/|~)", name))
