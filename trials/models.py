"""Model loading: hub ids, local directories, offline presets, and the one-head architecture.

``load_model(name, num_labels)`` returns ``(model, tokenizer)`` for sequence classification.
Presets (``preset:tiny-gpt2`` / ``-distilbert`` / ``-bert`` / ``-llama``, trials/presets.py) need no network.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from headsweep.trials.adapters import adapter_for
from headsweep.trials.errors import UserError
from headsweep.trials.presets import PRESET_PREFIX, load_preset
from headsweep.trials.spec import SINGLE_HEAD_INITS
from headsweep.trials.tokenizers import fix_padding, load_tokenizer


# ---------------------------------------------------------------------------- loading

def load_model(name: str, num_labels: int = 2, *, tokenizer: str | None = None,
               texts: Iterable[str] | None = None, single_head: str | None = None,
               trust_remote_code: bool = False, scratch: bool = False, gguf_file: str | None = None,
               revision: str | None = None):
    """(model, tokenizer) for a hub id, a local directory, or a ``preset:`` name; ``gguf_file``: a
    GGUF file in the directory (or hub repo) ``name``, loaded by transformers and dequantised.

    ``texts`` builds a preset's vocabulary (defaults to the synthetic task's text).
    ``single_head`` ("pretrained" | "random" | "scratch") returns the one-head architecture
    variant; ``scratch`` the multi-head architecture with every weight drawn afresh from its
    config. ``revision``: the hub commit / branch / tag to load (models[].revision). A directory
    saved by ``save_pruned`` loads as the pruned model it is.
    Seed first (``accelerate.utils.set_seed``): the classifier head is freshly initialised.
    """
    from headsweep.trials.pruned_model import is_pruned_checkpoint, load_pruned
    if name.startswith(PRESET_PREFIX):
        model, tok = load_preset(name, num_labels, tokenizer, texts)
    elif is_pruned_checkpoint(name):
        model, tok = load_pruned(name, num_labels), load_tokenizer(tokenizer or name, False)
    elif gguf_file:
        model, tok = load_gguf(name, gguf_file, num_labels, tokenizer)
    else:
        from transformers import AutoModelForSequenceClassification
        tok = load_tokenizer(tokenizer or name, trust_remote_code, revision=None if tokenizer else revision)
        model = AutoModelForSequenceClassification.from_pretrained(
            name, num_labels=num_labels, trust_remote_code=trust_remote_code,
            **({"revision": revision} if revision else {}))
    fix_padding(model, tok)
    adapter_for(model).prepare(model)  # fails early, listing the supported architectures
    if scratch and not single_head:
        model = from_scratch(model)
    if single_head:
        model = to_single_head(model, single_head)
    return model, tok


def load_gguf(name: str, gguf_file: str, num_labels: int, tokenizer: str | None = None):
    """(model, tokenizer) from a GGUF file (llama.cpp's format) in the directory or hub repo ``name``,
    through transformers' own GGUF loading: quantised tensors are dequantised to float32, the
    tokenizer is rebuilt from the file's metadata unless ``tokenizer`` names another. Needs the
    ``gguf`` package (``pip install 'headsweep[gguf]'``)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import is_gguf_available
    if not is_gguf_available():
        raise UserError("models[].gguf_file", gguf_file, "reading GGUF files needs the gguf package: "
                                                         "pip install 'headsweep[gguf]'")
    tok = load_tokenizer(tokenizer, False) if tokenizer else AutoTokenizer.from_pretrained(name, gguf_file=gguf_file)
    model = AutoModelForSequenceClassification.from_pretrained(name, gguf_file=gguf_file, num_labels=num_labels,
                                                               dtype=torch.float32)
    return model, tok


def from_scratch(model: nn.Module) -> nn.Module:
    """The same architecture with every weight freshly initialised (from the global seed)."""
    from transformers import AutoModelForSequenceClassification
    return AutoModelForSequenceClassification.from_config(copy.deepcopy(model.config)).to(
        next(model.parameters()).device)


def to_single_head(model: nn.Module, init: str = "pretrained") -> nn.Module:
    """The same network with ONE attention head of full width in every layer.

    q/k/v/output projections keep their shapes, so ``init="pretrained"`` reuses the weights
    unchanged (only the head split, and so the 1/sqrt(d) scale, changes); ``init="scratch"``
    draws every weight afresh (the architectural comparison, with ``from_scratch`` for the
    multi-head side: from one seed both draw the same weights, split into 12 heads or one);
    ``init="random"``
    re-draws the attention projections (normal(0, initializer_range), zero bias) as the seed
    study did. Everything outside attention, classifier included, is copied.
    """
    from transformers import AutoModelForSequenceClassification
    if init not in SINGLE_HEAD_INITS:
        raise UserError("single_head_arch.init", init, f"must be one of {', '.join(SINGLE_HEAD_INITS)}")
    if not adapter_for(model).one_head_variant:
        raise UserError("single_head_arch", init, f"{model.config.model_type} has grouped-query attention: its "
                                                  "key/value projections cannot merge into one head")
    config = copy.deepcopy(model.config)
    config.num_attention_heads = 1
    new = AutoModelForSequenceClassification.from_config(config)
    if init == "scratch":
        return new.to(next(model.parameters()).device)
    new.load_state_dict(model.state_dict())
    if init == "random":
        ad, std = adapter_for(new), config.initializer_range
        with torch.no_grad():
            for i in range(config.num_hidden_layers):
                for mod in ad.attention_modules(new, i):
                    mod.weight.normal_(0.0, std)
                    mod.bias.zero_()
    return new.to(next(model.parameters()).device)
