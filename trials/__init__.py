"""headsweep trials: one trial's worth of head tools, fine-tuning and evaluation (no Ray here).

    model, tokenizer = trials.load_model("distilbert-base-uncased", num_labels=2)
    layout = trials.head_layout(model)              # .n_layers, .n_heads
    with trials.masked(model, [(0, 3), (5, 11)]):    # hooks removed on exit
        logits = model(**batch).logits
    scores = trials.head_importance(model, batches)  # [n_layers, n_heads], raw
    trials.prune_heads(model, [(0, 3), (5, 11)])     # physical removal, same logits
    with trials.units(llama, "kv_group"):            # grouped-query models: KV groups as the units
        scores = trials.head_importance(llama, batches)  # [n_layers, n_kv_heads]

Names load lazily (PEP 562), so ``import trials.spec`` — all the CLI needs to read a sweep file —
does not pay for importing torch and transformers.
"""
import importlib

_EXPORTS = {
    "headsweep.trials.adapters": ("ADAPTERS", "HeadLayout", "head_layout"),
    "headsweep.trials.errors": ("UserError",),
    "headsweep.trials.gates": ("gated", "masked", "multi_masked", "repeat_batch"),
    "headsweep.trials.importance": ("IMPORTANCE_METHODS", "head_importance", "normalize_per_layer"),
    "headsweep.trials.models": ("load_model", "to_single_head"),
    "headsweep.trials.presets": ("PRESETS",),
    "headsweep.trials.prune": ("count_parameters", "prune_heads"),
    "headsweep.trials.strategies": ("STRATEGIES", "choose_heads", "resolve_k"),
    "headsweep.trials.spec": ("DataSpec", "FinetuneSpec", "ImportanceSpec", "ModelSpec", "PruneSpec", "TrainSpec"),
    "headsweep.trials.units": ("units",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'headsweep.trials' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
