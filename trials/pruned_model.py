"""Physically pruned models as Hugging Face checkpoints (``save_pruned: true``).

transformers 5 has no per-layer head counts (``pruned_heads`` is gone), so a pruned model is saved
with the heads each layer keeps in its config (``headsweep_present_heads``: {layer: [original head
indices]}, -1 for a grouped-query layer's padding slot (trials/gqa.py); ``headsweep_heads_per_layer``) and a small modeling file whose class builds the base
architecture, prunes it to those heads, then loads the weights. Both of these reload it:

    AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)  # the saved file
    trials.load_model(path)                                                           # no remote code

The modeling file imports headsweep (``trials.prune``), which must be installed where it loads.
"""
from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from headsweep.trials.prune import prune_heads

MODULE = "headsweep_pruned"          # the modeling file saved beside the weights
PRESENT_KEY = "headsweep_present_heads"
AUTO_CLASS = "AutoModelForSequenceClassification"

_SOURCE = '''"""headsweep: a physically pruned {base} (its heads per layer: config.{key})."""
from transformers import {base}

from headsweep.trials.pruned_model import pruned_class

{name} = pruned_class({base})
'''


def pruned_class(base: type) -> type:
    """A subclass of ``base`` (a ``*ForSequenceClassification``) that prunes itself to the heads
    in its config before the weights are loaded."""

    def __init__(self, config, *args, **kwargs):
        base.__init__(self, config, *args, **kwargs)
        present = {int(k): list(v) for k, v in getattr(config, PRESENT_KEY).items()}
        removed = [(layer, h) for layer, keep in present.items()
                   for h in range(config.num_attention_heads) if h not in keep]
        prune_heads(self, removed)

    name = f"Pruned{base.__name__}"
    return type(name, (base,), {"__init__": __init__, "__module__": MODULE, "__qualname__": name})


def save_pruned(model: nn.Module, tokenizer, out_dir: Path) -> Path:
    """Save a model pruned by ``trials.prune_heads`` (and its tokenizer) to ``out_dir``."""
    out_dir = Path(out_dir)
    present = getattr(model, "headsweep_present_heads", None)
    if present is None:
        raise ValueError("save_pruned needs a model pruned with trials.prune_heads")
    base = _base_class(model)
    name = f"Pruned{base.__name__}"
    cfg = model.config
    setattr(cfg, PRESENT_KEY, {str(k): list(v) for k, v in sorted(present.items())})
    cfg.headsweep_heads_per_layer = [sum(h >= 0 for h in present[i]) for i in range(cfg.num_hidden_layers)]
    cfg.auto_map = {AUTO_CLASS: f"{MODULE}.{name}"}
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / f"{MODULE}.py").write_text(_SOURCE.format(base=base.__name__, name=name, key=PRESENT_KEY))
    return out_dir


def is_pruned_checkpoint(path) -> bool:
    from transformers.utils import CONFIG_NAME
    cfg = Path(path) / CONFIG_NAME
    return cfg.is_file() and PRESENT_KEY in json.loads(cfg.read_text())


def load_pruned(path, num_labels: int | None = None) -> nn.Module:
    """A saved pruned model, without remote code (the class is built here)."""
    import transformers
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(path)
    arch = (config.architectures or [""])[0].removeprefix("Pruned")
    base = getattr(transformers, arch)
    model = pruned_class(base).from_pretrained(path)
    if num_labels is not None and model.config.num_labels != num_labels:
        raise ValueError(f"{path} has {model.config.num_labels} labels, not {num_labels}")
    return model


def _base_class(model: nn.Module) -> type:
    """The transformers class of ``model`` (a Pruned* subclass's base if it is one)."""
    cls = type(model)
    return cls.__mro__[1] if cls.__name__.startswith("Pruned") else cls
