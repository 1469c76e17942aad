"""Architecture adapters: where each model family keeps its per-layer attention.

An adapter names, for layer i, the attention *output projection* whose input is the head-major
concatenation of head outputs (`[batch, seq, heads*head_dim]`, head h = channels h*d..(h+1)*d),
and knows how to slice that layer's heads out physically. Adding an architecture = registering
one adapter (``@ADAPTERS.register("model_type", ...)``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from headsweep.trials.registry import Registry

ADAPTERS = Registry("architecture")   # config.model_type -> Adapter


def adapter_for(model: nn.Module) -> "Adapter":
    model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    return ADAPTERS.lookup(model_type)


@dataclass(frozen=True)
class HeadLayout:
    """A model's attention units. ``unit`` "head": one unit per query head; "kv_group" (inside
    ``trials.units.units``): one per key/value head, covering the ``query_per_unit`` query heads
    that read it, which sit side by side at the output projection's input, so a group is a head
    ``query_per_unit`` times as wide there and every gate, mask and importance method works on it
    unchanged."""
    n_layers: int
    n_heads: int                        # units per layer in the unpruned architecture
    head_dim: int                       # a unit's channels at the output projection's input
    heads_per_layer: tuple[int, ...]    # units currently present (differs after prune_heads)
    n_kv_heads: int | None = None       # key/value heads per layer (None: one per query head)
    unit: str = "head"
    query_per_unit: int = 1             # query heads one unit covers

    @property
    def total(self) -> int:
        return self.n_layers * self.n_heads

    @property
    def query_heads(self) -> int:
        """Query heads per layer (unpruned)."""
        return self.n_heads * self.query_per_unit

    @property
    def query_total(self) -> int:
        return self.n_layers * self.query_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.query_heads

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 without GQA)."""
        return self.query_heads // self.kv_heads

    def query_heads_of(self, units) -> list[tuple[int, int]]:
        """The (layer, query head) pairs the (layer, unit) pairs ``units`` cover, sorted."""
        q = self.query_per_unit
        return sorted({(int(layer), int(u) * q + j) for layer, u in units for j in range(q)})

    def groups_removed(self, query_heads) -> list[tuple[int, int]]:
        """The (layer, KV group) pairs all of whose query heads are in ``query_heads``."""
        gone, g = {(int(layer), int(h)) for layer, h in query_heads}, self.group_size
        return [(layer, k) for layer in range(self.n_layers) for k in range(self.kv_heads)
                if all((layer, k * g + j) in gone for j in range(g))]


def head_layout(model: nn.Module) -> HeadLayout:
    """Layer/head counts of a supported model; raises (listing supported types) for others.
    Inside ``trials.units.units(model, "kv_group")`` the units are KV groups."""
    ad = adapter_for(model)  # raises, listing the supported architectures
    cfg = model.config
    n_layers, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
    present = getattr(model, "headsweep_present_heads", None)
    per_layer = (tuple(sum(h >= 0 for h in present[i]) for i in range(n_layers)) if present
                 else (n_heads,) * n_layers)
    query = HeadLayout(n_layers, n_heads, ad.head_dim(cfg), per_layer, ad.kv_heads(cfg))
    from headsweep.trials.units import unit_layout
    return unit_layout(model, query)


# ---------------------------------------------------------------------------- slicing helpers

def _take_linear(lin: nn.Linear, idx: torch.Tensor, dim: int) -> nn.Linear:
    """nn.Linear keeping output rows (dim=0) or input columns (dim=1) ``idx``; may be empty."""
    w = lin.weight.detach().index_select(dim, idx).clone()
    new = nn.Linear(1, 1, bias=lin.bias is not None)  # placeholder init, replaced below
    new.out_features, new.in_features = w.shape
    new.weight = nn.Parameter(w, requires_grad=lin.weight.requires_grad)
    if lin.bias is not None:
        b = lin.bias.detach() if dim == 1 else lin.bias.detach().index_select(0, idx)
        new.bias = nn.Parameter(b.clone(), requires_grad=lin.bias.requires_grad)
    return new


def _take_conv1d(conv, idx: torch.Tensor, dim: int):
    """GPT-2 Conv1D (weight [in, out]) keeping inputs (dim=0) or outputs (dim=1) ``idx``."""
    from transformers.pytorch_utils import Conv1D
    w = conv.weight.detach().index_select(dim, idx).clone()
    new = Conv1D(1, 1)  # placeholder init, replaced below
    new.nx, new.nf = w.shape
    new.weight = nn.Parameter(w, requires_grad=conv.weight.requires_grad)
    b = conv.bias.detach() if dim == 0 else conv.bias.detach().index_select(0, idx)
    new.bias = nn.Parameter(b.clone(), requires_grad=conv.bias.requires_grad)
    return new


def _channels(heads: list[int], head_dim: int, device) -> torch.Tensor:
    """Channel indices of ``heads`` in a head-major layout."""
    if not heads:
        return torch.empty(0, dtype=torch.long, device=device)
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim, device=device) for h in heads])


def _first_token(input_ids: torch.Tensor) -> torch.Tensor:
    return torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)


class NoHeads(nn.Module):
    """Stands in for an attention block whose heads were all pruned.

    The output projection still runs on a zero-width input, so its bias is what the layer adds,
    exactly as when every head is gated to 0. (The original modules reshape with ``view(-1,
    head_dim)``, which is ambiguous for zero elements, hence the replacement.)
    """

    def __init__(self, out_proj: nn.Module | None = None, dropout: nn.Module | None = None,
                 proj_name: str = "out_proj"):
        super().__init__()
        # Keep the projection under its original attribute name so hook paths still resolve.
        self.proj_name = proj_name
        if out_proj is not None:
            self.add_module(proj_name, out_proj)
        self.dropout = dropout if dropout is not None else nn.Identity()

    def forward(self, hidden_states, *args, **kwargs):
        z = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)  # [batch, seq, 0 heads]
        proj = self._modules.get(self.proj_name)
        if proj is None:
            return z, None
        # = proj(z) for a zero-width input (Conv1D cannot view a 0-element tensor as [-1, 0]).
        if proj.bias is None:                         # no output bias (the Llama family): nothing added
            out = hidden_states.new_zeros(*hidden_states.shape[:-1], proj.out_features)
        else:
            out = proj.bias.to(hidden_states.dtype).expand(*hidden_states.shape[:-1], -1)
        return self.dropout(out), None


# ---------------------------------------------------------------------------- adapters

class Adapter:
    """Per-architecture access to attention. Subclasses name three paths and how to prune."""
    layers_path: str                 # the ModuleList of layers, relative to ``model.base_model``
    out_proj_path: str               # a layer's attention output projection, relative to the layer
    attention_paths: tuple[str, ...]  # a layer's attention projections (for re-initialisation)
    ffn_path: str | None = None      # a layer's feed-forward block (its input: [batch, seq, hidden])

    def base(self, model):
        return model.base_model

    def layers(self, model) -> nn.ModuleList:
        return self.base(model).get_submodule(self.layers_path)

    def out_proj_name(self, i: int) -> str:
        """Path of layer i's output projection relative to ``model.base_model`` (for messages)."""
        return f"{self.layers_path}.{i}.{self.out_proj_path}"

    def out_proj(self, model, i: int) -> nn.Module:
        return self.base(model).get_submodule(self.out_proj_name(i))

    def attention_modules(self, model, i: int) -> list[nn.Module]:
        layer = self.layers(model)[i]
        return [layer.get_submodule(p) for p in self.attention_paths]

    def ffn(self, model, i: int) -> nn.Module | None:
        return self.layers(model)[i].get_submodule(self.ffn_path) if self.ffn_path else None

    def pooled_positions(self, model, input_ids: torch.Tensor) -> torch.Tensor | None:
        """[batch] the one position per example the sequence-classification head reads, or None
        where unknown (then nothing relies on it)."""
        return None

    def prune_layer(self, model, i: int, keep: list[int], head_dim: int) -> None:
        """Keep only the (current, 0-based) heads ``keep`` of layer i."""
        raise NotImplementedError

    # What grouped-query architectures (trials/gqa.py) answer differently.
    one_head_variant = True          # single_head_arch can merge a layer's heads into one

    def head_dim(self, config) -> int:
        return config.hidden_size // config.num_attention_heads

    def kv_heads(self, config) -> int:
        """Key/value heads per layer: one per query head unless the architecture groups them."""
        return config.num_attention_heads

    def prepare(self, model) -> None:
        """Adjust a loaded model for sequence classification (nothing by default)."""

    def prune_present(self, model, i: int, current: list[int], drop: set[int], head_dim: int) -> list[int]:
        """Remove the heads ``drop`` (original indices) from layer i, whose present heads are
        ``current``; returns the heads present afterwards."""
        keep = [pos for pos, h in enumerate(current) if h not in drop]
        self.prune_layer(model, i, keep, head_dim)
        return [current[pos] for pos in keep]

    def attention_params_kept(self, model, i: int, removed: set[int]) -> int:
        """Attention-projection parameters of the unpruned layer i left after pruning its heads
        ``removed``: each projection splits evenly over the heads, except the output bias, which
        stays however many heads go (as with a zero gate)."""
        out_proj, split, total = self.out_proj(model, i), 0, 0
        for mod in self.attention_modules(model, i):
            for name, p in mod.named_parameters(recurse=False):
                total += p.numel()
                if not (mod is out_proj and name == "bias"):
                    split += p.numel()
        return total - split // model.config.num_attention_heads * len(removed)

    def kv_heads_kept(self, model, i: int, removed: set[int]) -> int:
        """Key/value heads layer i keeps after pruning its heads ``removed`` (each head has its own)."""
        return model.config.num_attention_heads - len(removed)


@ADAPTERS.register("gpt2")
class GPT2Adapter(Adapter):
    layers_path = "h"
    out_proj_path = "attn.c_proj"    # not mlp.c_proj
    attention_paths = ("attn.c_attn", "attn.c_proj")
    ffn_path = "mlp"

    def pooled_positions(self, model, input_ids):
        """GPT2ForSequenceClassification's rule: the rightmost token that is not the pad token."""
        pad = model.config.pad_token_id
        seq = input_ids.shape[-1]
        if pad is None:
            return torch.full((input_ids.shape[0],), seq - 1, dtype=torch.long, device=input_ids.device)
        index = torch.arange(seq, device=input_ids.device, dtype=torch.int32)
        return (index * (input_ids != pad).int()).argmax(-1)

    def prune_layer(self, model, i, keep, head_dim):
        block = self.layers(model)[i]
        attn = block.attn
        e = attn.c_attn.weight.shape[1] // 3       # current q/k/v width
        idx = _channels(keep, head_dim, attn.c_proj.weight.device)
        attn.c_proj = _take_conv1d(attn.c_proj, idx, dim=0)
        if not keep:
            block.attn = NoHeads(attn.c_proj, attn.resid_dropout, proj_name="c_proj")
            return
        # c_attn's outputs are [q | k | v], each head-major.
        attn.c_attn = _take_conv1d(attn.c_attn, torch.cat([idx, idx + e, idx + 2 * e]), dim=1)
        attn.split_size = len(keep) * head_dim
        attn.num_heads = len(keep)
        attn.embed_dim = attn.split_size


@ADAPTERS.register("distilbert")
class DistilBertAdapter(Adapter):
    layers_path = "transformer.layer"
    out_proj_path = "attention.out_lin"
    attention_paths = ("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin")
    ffn_path = "ffn"

    def pooled_positions(self, model, input_ids):
        return _first_token(input_ids)        # the classifier reads [CLS]

    def prune_layer(self, model, i, keep, head_dim):
        layer = self.layers(model)[i]
        a = layer.attention
        idx = _channels(keep, head_dim, a.out_lin.weight.device)
        a.out_lin = _take_linear(a.out_lin, idx, dim=1)
        if not keep:
            layer.attention = NoHeads(a.out_lin, proj_name="out_lin")
            return
        for name in ("q_lin", "k_lin", "v_lin"):
            setattr(a, name, _take_linear(getattr(a, name), idx, dim=0))
        a.n_heads = len(keep)


@ADAPTERS.register("bert", "roberta", "xlm-roberta", "electra")
class BertAdapter(Adapter):
    layers_path = "encoder.layer"
    out_proj_path = "attention.output.dense"
    attention_paths = ("attention.self.query", "attention.self.key", "attention.self.value",
                       "attention.output.dense")
    ffn_path = "intermediate"        # BertOutput adds its result to the (broadcast) residual

    def pooled_positions(self, model, input_ids):
        return _first_token(input_ids)        # the pooler / classification head reads [CLS] or <s>

    def prune_layer(self, model, i, keep, head_dim):
        a = self.layers(model)[i].attention
        idx = _channels(keep, head_dim, a.output.dense.weight.device)
        a.output.dense = _take_linear(a.output.dense, idx, dim=1)
        if not keep:
            a.self = NoHeads()  # BertSelfOutput applies the (now zero-input) dense + LayerNorm
            return
        s = a.self
        for name in ("query", "key", "value"):
            setattr(s, name, _take_linear(getattr(s, name), idx, dim=0))
        s.num_attention_heads = len(keep)
        s.all_head_size = len(keep) * head_dim


# The grouped-query (Llama-family) adapter registers itself; imported last, as it builds on the above.
from headsweep.trials import gqa  # noqa: E402,F401
