"""headsweep trials: one trial's worth of head tools, fine-tuning and evaluation (no Ray here).

    model, tokenizer = trials.load_model("distilbert-base-uncased", num_labels=2)
    layout = trials.head_layout(model)              # .n_layers, .n_heads
    with trials.masked(model, [(0, 3), (5, 11)]):    # hooks removed on exit
        logits = model(**batch).logits
    scores = trials.head_importance(model, batches)  # [n_layers, n_heads], raw
    trials.prune_heads(model, [(0, 3), (5, 11)])     # physical removal, same logits
"""
from trials.adapters import ADAPTERS, HeadLayout, head_layout
from trials.errors import UserError
from trials.gates import gated, masked, multi_masked, repeat_batch
from trials.importance import IMPORTANCE_METHODS, head_importance, normalize_per_layer
from trials.models import PRESETS, load_model, to_single_head
from trials.prune import count_parameters, prune_heads
from trials.strategies import STRATEGIES, choose_heads, resolve_k
from trials.spec import DataSpec, FinetuneSpec, ImportanceSpec, ModelSpec, PruneSpec, TrainSpec

__all__ = [
    "ADAPTERS", "HeadLayout", "head_layout", "UserError", "gated", "masked", "multi_masked",
    "repeat_batch", "IMPORTANCE_METHODS", "head_importance", "normalize_per_layer", "PRESETS",
    "load_model", "to_single_head", "count_parameters", "prune_heads", "STRATEGIES",
    "choose_heads", "resolve_k", "DataSpec", "FinetuneSpec", "ImportanceSpec", "ModelSpec",
    "PruneSpec", "TrainSpec",
]
