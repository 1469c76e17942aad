"""The Llama family: decoder models with grouped-query attention (GQA), one adapter.

Every registered model type has the layout ``model.layers[i].self_attn.{q,k,v,o}_proj`` (separate
nn.Linear projections; q and o head-major over the n query heads, k and v over the n_kv key/value
heads), reads ``num_key_value_groups`` = n / n_kv for ``repeat_kv`` (query head h reads KV head
h // (n / n_kv)) in every attention implementation (eager, SDPA, flash), and classifies from the last
non-pad token (``GenericForSequenceClassification``). Gates sit at ``o_proj``'s input, after
attention: RoPE, the attention kernel and the KV cache are untouched (trials/gates.py).

Physical pruning keeps the grouping consistent per layer. A layer keeps every KV group that still
has a query head, and each kept group gets the same number of query slots r (the most any group
keeps), as ``repeat_kv`` needs: a group that keeps fewer query heads is padded with slots whose
q_proj rows and o_proj columns are zero. Such a slot attends uniformly and its output meets zero
columns, so it adds exactly nothing: pruning single query heads unevenly within groups is exact,
but saves their parameters only once every group of the layer has lost as many. Removing whole
groups (``importance.unit: kv_group``) needs no padding and removes k_proj/v_proj rows, so it also
saves KV cache. Layers may keep different counts. A padding slot is -1 in
``headsweep_present_heads``; the slot layout depends only on the heads kept (groups in order, each
group's heads in order, padding last), so a saved pruned model rebuilds it from its config.
"""
from __future__ import annotations

import torch
from torch import nn

from headsweep.trials.adapters import ADAPTERS, Adapter, GPT2Adapter, NoHeads, _take_linear

PAD = -1   # a padding query slot in ``headsweep_present_heads``

# Model types with the layout above; each is checked on a tiny random config by
# tests/trials/test_gqa.py (gates = zeroed o_proj columns, pruning = masking, a group = cut out by hand).
LLAMA_FAMILY = ("llama", "mistral", "ministral", "qwen2", "qwen3", "smollm3", "gemma", "gemma2", "gemma3_text",
                "helium", "olmo", "glm", "glm4", "seed_oss", "exaone4", "arcee", "nemotron", "starcoder2")


def slot_plan(current: list[int], r_cur: int, drop: set[int], group_size: int):
    """How layer pruning rebuilds the query slots.

    ``current``: the layer's present slots (original query heads, PAD for padding), ``r_cur``
    query slots per kept group; ``drop``: original query heads to remove. Returns (slots, q_src,
    kv_src, r): the new slots, each slot's position in ``current`` (None: a new padding slot), each
    kept group's position among the current groups, and the new slots per group."""
    blocks = [current[b * r_cur:(b + 1) * r_cur] for b in range(len(current) // r_cur)] if r_cur else []
    kept, kv_at = {}, {}
    for b, block in enumerate(blocks):
        real = [h for h in block if h != PAD]
        group = real[0] // group_size
        keep = sorted(h for h in real if h not in drop)
        if keep:
            kept[group], kv_at[group] = keep, b
    r = max((len(v) for v in kept.values()), default=0)
    slots, q_src = [], []
    for group in sorted(kept):
        pad = r - len(kept[group])
        slots += kept[group] + [PAD] * pad
        q_src += [current.index(h) for h in kept[group]] + [None] * pad
    return slots, q_src, [kv_at[g] for g in sorted(kept)], r


def _take_blocks(lin: nn.Linear, blocks: list[int | None], head_dim: int, dim: int) -> nn.Linear:
    """``lin`` keeping the ``head_dim``-wide blocks ``blocks`` of its output rows (dim 0) or input
    columns (dim 1), in that order; None puts a zero block there (a padding slot)."""
    zero = lin.weight.shape[dim]                       # the index of an appended zero row/column
    idx = [i for b in blocks for i in (range(b * head_dim, (b + 1) * head_dim) if b is not None
                                      else [zero] * head_dim)]
    idx = torch.tensor(idx, dtype=torch.long, device=lin.weight.device)
    if None not in blocks:
        return _take_linear(lin, idx, dim)
    w = lin.weight.detach()
    padded = nn.Linear(1, 1, bias=lin.bias is not None)        # placeholder init, replaced below
    padded.weight = nn.Parameter(torch.cat([w, w.new_zeros((1, w.shape[1]) if dim == 0 else (w.shape[0], 1))], dim),
                                 requires_grad=lin.weight.requires_grad)
    if lin.bias is not None:
        b = lin.bias.detach()
        padded.bias = nn.Parameter(torch.cat([b, b.new_zeros(1)]) if dim == 0 else b.clone(),
                                   requires_grad=lin.bias.requires_grad)
    return _take_linear(padded, idx, dim)


@ADAPTERS.register(*LLAMA_FAMILY)
class LlamaAdapter(Adapter):
    layers_path = "layers"
    out_proj_path = "self_attn.o_proj"
    attention_paths = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
    ffn_path = "mlp"
    # The key/value projections of GQA cannot merge into one head of full width.
    one_head_variant = False

    pooled_positions = GPT2Adapter.pooled_positions   # the last non-pad token, the same rule

    def head_dim(self, config) -> int:
        return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    def kv_heads(self, config) -> int:
        return getattr(config, "num_key_value_heads", None) or config.num_attention_heads

    def prepare(self, model) -> None:
        """A classifier never generates: no KV cache is built during its forward passes."""
        model.config.use_cache = False

    def prune_present(self, model, i, current, drop, head_dim):
        layer = self.layers(model)[i]
        attn = layer.self_attn
        cfg = model.config
        group_size = cfg.num_attention_heads // self.kv_heads(cfg)
        slots, q_src, kv_src, r = slot_plan(current, attn.num_key_value_groups, drop, group_size)
        attn.o_proj = _take_blocks(attn.o_proj, q_src, head_dim, dim=1)
        if not slots:
            layer.self_attn = NoHeads(attn.o_proj, proj_name="o_proj")
            return []
        attn.q_proj = _take_blocks(attn.q_proj, q_src, head_dim, dim=0)
        attn.k_proj = _take_blocks(attn.k_proj, kv_src, head_dim, dim=0)
        attn.v_proj = _take_blocks(attn.v_proj, kv_src, head_dim, dim=0)
        attn.num_key_value_groups = r
        return slots

    def attention_params_kept(self, model, i, removed):
        attn = self.layers(model)[i].self_attn
        cfg = model.config
        n, n_kv = cfg.num_attention_heads, self.kv_heads(cfg)
        slots, _, kv_src, _ = slot_plan(list(range(n)), n // n_kv, set(removed), n // n_kv)

        def size(mod, bias=True):
            return mod.weight.numel() + (mod.bias.numel() if bias and mod.bias is not None else 0)
        per_query = (size(attn.q_proj) + size(attn.o_proj, bias=False)) // n   # its q rows, o columns
        per_kv = (size(attn.k_proj) + size(attn.v_proj)) // n_kv
        o_bias = attn.o_proj.bias.numel() if attn.o_proj.bias is not None else 0
        return len(slots) * per_query + len(kv_src) * per_kv + o_bias

    def kv_heads_kept(self, model, i, removed):
        n, n_kv = model.config.num_attention_heads, self.kv_heads(model.config)
        return len(slot_plan(list(range(n)), n // n_kv, set(removed), n // n_kv)[2])
