"""Grouped-query attention (trials/gqa.py, trials/units.py) on tiny random Llama, Qwen2 and Mistral
models: 3 layers, 8 query heads of width 4 sharing 2 key/value heads (query head h reads KV head
h // 4), weights drawn large (``perturb_``) so every head matters; Qwen2 has q/k/v biases.

The references reach the projections by their literal paths (``model.model.layers[i].self_attn``)
and do by hand what the package does through hooks and adapters: zero a query head's o_proj input
columns, cut a KV group's rows and columns out of q/k/v/o_proj, scale a group's o_proj columns for
a finite difference, mask one group at a time for leave-one-out.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from headsweep import trials
from headsweep.trials.errors import UserError
from headsweep.trials.importance import IMPORTANCE_METHODS, head_importance, model_inputs
from headsweep.trials.units import units
from tests.trials.conftest import perturb_

FAMILY = ("llama", "qwen2", "mistral")
LAYERS, HEADS, KV, D = 3, 8, 2, 4
GROUP = HEADS // KV
# Llama-family RMSNorm computes in float32 even in a float64 model, so the finite-difference step
# is large enough for float32 rounding (~1e-7) not to matter: 1e-2 (central differences, error ~eps^2).
EPS = 1e-2
LABELS = torch.tensor([1, 0, 1, 0])


def build(model_type: str, n_kv: int = KV, seed: int = 0, dtype=torch.float32):
    from transformers import AutoConfig, AutoModelForSequenceClassification
    cfg = AutoConfig.for_model(model_type, vocab_size=60, hidden_size=32, intermediate_size=48,
                               num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=n_kv,
                               head_dim=D, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                               eos_token_id=2, num_labels=2)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(cfg)
    perturb_(model, seed)
    trials.ADAPTERS[model_type].prepare(model)
    return model.to(dtype).eval()


def batch() -> dict:
    """Four right-padded sequences (pad 0) of lengths 9, 6, 4, 7."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 60, (4, 9), generator=g)
    mask = torch.ones_like(ids)
    for row, n in enumerate((9, 6, 4, 7)):
        ids[row, n:], mask[row, n:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask}


def attn(model, layer):
    return model.model.layers[layer].self_attn


@torch.no_grad()
def logits(model, b=None) -> torch.Tensor:
    return model(**(b or batch())).logits


@torch.no_grad()
def zero_by_hand(model, heads):
    """A copy whose o_proj input columns of ``heads`` are zero (no hooks)."""
    ref = copy.deepcopy(model)
    for layer, h in heads:
        attn(ref, layer).o_proj.weight[:, h * D:(h + 1) * D] = 0
    return ref


def _slice(lin: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    w = lin.weight.detach().index_select(dim, keep)
    new = nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None).to(w.dtype)
    new.weight.data.copy_(w)
    if lin.bias is not None:
        new.bias.data.copy_(lin.bias.detach() if dim == 1 else lin.bias.detach().index_select(0, keep))
    return new


@torch.no_grad()
def remove_group_by_hand(model, layer: int, group: int):
    """A copy with KV group ``group`` of ``layer`` cut out: its key/value rows, its query heads'
    q_proj rows and o_proj columns. Every group left keeps its 4 query heads."""
    ref = copy.deepcopy(model)
    a = attn(ref, layer)
    q_keep = torch.tensor([c for c in range(HEADS * D) if c // D // GROUP != group])
    kv_keep = torch.tensor([c for c in range(a.k_proj.weight.shape[0]) if c // D != group])
    a.q_proj, a.o_proj = _slice(a.q_proj, q_keep, 0), _slice(a.o_proj, q_keep, 1)
    a.k_proj, a.v_proj = _slice(a.k_proj, kv_keep, 0), _slice(a.v_proj, kv_keep, 0)
    return ref


def group_heads(layer, group):
    return [(layer, group * GROUP + j) for j in range(GROUP)]


@pytest.fixture(scope="module", params=FAMILY)
def gqa(request):
    return build(request.param)


# ---------------------------------------------------------------------------- layout and gates

def test_layout_in_query_heads_and_in_kv_groups(gqa):
    layout = trials.head_layout(gqa)
    assert (layout.n_layers, layout.n_heads, layout.head_dim, layout.kv_heads, layout.group_size) == (3, 8, 4, 2, 4)
    with units(gqa, "kv_group") as groups:
        assert groups == trials.head_layout(gqa)
        assert (groups.n_heads, groups.head_dim, groups.query_per_unit, groups.unit) == (2, 16, 4, "kv_group")
        assert groups.query_heads_of([(2, 1)]) == [(2, 4), (2, 5), (2, 6), (2, 7)]
        assert groups.total == 6 and groups.query_total == 24
    assert trials.head_layout(gqa) == layout and not hasattr(gqa, "headsweep_unit")


def test_a_masked_query_head_equals_zeroing_its_o_proj_input_by_hand(gqa):
    b = batch()
    for heads in ([(0, 3)], [(1, 0), (1, 5)], [(0, 1), (0, 2), (0, 3), (2, 7)]):   # within and across groups
        with trials.masked(gqa, heads):
            got = logits(gqa, b)
        torch.testing.assert_close(got, logits(zero_by_hand(gqa, heads), b), atol=1e-6, rtol=0)
        assert not torch.allclose(got, logits(gqa, b), atol=1e-4)           # the head mattered
    assert [len(attn(gqa, i).o_proj._forward_pre_hooks) for i in range(LAYERS)] == [0] * LAYERS


@pytest.mark.parametrize("layer, group", [(0, 0), (1, 1), (2, 0)])
def test_masking_a_groups_query_heads_equals_removing_the_group(gqa, layer, group):
    from headsweep.trials.efficiency import efficiency, pruned_copy
    b = batch()
    by_hand = remove_group_by_hand(gqa, layer, group)
    want = logits(by_hand, b)
    with trials.masked(gqa, group_heads(layer, group)):
        torch.testing.assert_close(logits(gqa, b), want, atol=1e-5, rtol=0)
    with units(gqa, "kv_group"):
        with trials.masked(gqa, [(layer, group)]):                           # one gate for the group
            torch.testing.assert_close(logits(gqa, b), want, atol=1e-5, rtol=0)
        pruned = pruned_copy(gqa, [(layer, group)])
        eff = efficiency(gqa, [(layer, group)])
    torch.testing.assert_close(logits(pruned, b), want, atol=1e-5, rtol=0)
    for mine, ref in zip(pruned.state_dict().items(), by_hand.state_dict().items()):
        assert mine[0] == ref[0] and torch.equal(mine[1], ref[1])            # the same weights, by hand
    assert eff["params_pruned"] == sum(p.numel() for p in by_hand.parameters())
    assert eff["kv_cache_bytes_per_token"] == 2 * (LAYERS * KV - 1) * D * 4   # fp32 keys and values
    assert eff["kv_cache_bytes_per_token_total"] == 2 * LAYERS * KV * D * 4


# ---------------------------------------------------------------------------- importance

def labelled(b=None) -> list[dict]:
    return [{**(b or batch()), "labels": LABELS}]


@torch.no_grad()
def per_example_losses(model) -> torch.Tensor:
    b = labelled()[0]
    return F.cross_entropy(model(**model_inputs(b)).logits, b["labels"], reduction="none")


def finite_differences(model, unit_heads) -> torch.Tensor:
    """E_x |dL(x)/d xi| where xi scales the o_proj input columns of the query heads of one unit
    (a head, or a group's four), central differences, no hooks."""
    out = torch.zeros(len(unit_heads), len(unit_heads[0]), dtype=torch.float64)
    for layer, row in enumerate(unit_heads):
        for u, heads in enumerate(row):
            w = attn(model, layer).o_proj.weight
            orig = w.detach().clone()
            cols = torch.cat([torch.arange(h * D, (h + 1) * D) for h in heads])
            losses = []
            for scale in (1 + EPS, 1 - EPS):
                with torch.no_grad():
                    w.copy_(orig)
                    w[:, cols] *= scale
                losses.append(per_example_losses(model))
            with torch.no_grad():
                w.copy_(orig)
            out[layer, u] = ((losses[0] - losses[1]) / (2 * EPS)).abs().mean()
    return out


@pytest.mark.parametrize("model_type", FAMILY)
def test_gradient_importance_equals_finite_differences_in_the_gate(model_type):
    model = build(model_type, dtype=torch.float64)
    heads = head_importance(model, labelled()).double()                      # [layers, 8]
    want = finite_differences(model, [[[h] for h in range(HEADS)] for _ in range(LAYERS)])
    torch.testing.assert_close(heads, want, rtol=1e-3, atol=1e-5)
    with units(model, "kv_group"):
        groups = head_importance(model, labelled()).double()                 # [layers, 2]
    want = finite_differences(model, [[list(range(g * GROUP, (g + 1) * GROUP)) for g in range(KV)]
                                      for _ in range(LAYERS)])
    assert groups.shape == (LAYERS, KV)
    torch.testing.assert_close(groups, want, rtol=1e-3, atol=1e-5)
    # = per example, the sum of the group's query-head gate gradients, then E|.|
    b = labelled()[0]
    gates = torch.ones(4, LAYERS, HEADS, dtype=torch.float64, requires_grad=True)
    with trials.gated(model, gates):
        loss = F.cross_entropy(model(**model_inputs(b)).logits, b["labels"], reduction="sum")
    (grad,) = torch.autograd.grad(loss, gates)                               # [batch, layers, 8]
    summed = grad.view(4, LAYERS, KV, GROUP).sum(-1).abs().mean(0)
    torch.testing.assert_close(groups, summed, rtol=1e-6, atol=1e-10)
    assert not torch.allclose(groups, heads.view(LAYERS, KV, GROUP).sum(-1))    # not the sum of |head scores|


def test_ablation_of_a_group_masks_all_its_query_heads(gqa):
    from headsweep.trials.metrics import task_loss
    with units(gqa, "kv_group"):
        got = IMPORTANCE_METHODS["ablation"](gqa, labelled()).double()
    b = labelled()[0]
    with torch.no_grad():
        base = task_loss(gqa(**model_inputs(b)).logits, b["labels"])
        want = torch.zeros(LAYERS, KV, dtype=torch.float64)
        for layer in range(LAYERS):
            for g in range(KV):
                with trials.masked(gqa, group_heads(layer, g)):
                    want[layer, g] = float(task_loss(gqa(**model_inputs(b)).logits, b["labels"]) - base)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_entropy_of_a_group_is_the_mean_of_its_query_heads(gqa):
    per_head = IMPORTANCE_METHODS["entropy"](gqa, labelled())
    with units(gqa, "kv_group"):
        per_group = IMPORTANCE_METHODS["entropy"](gqa, labelled())
    torch.testing.assert_close(per_group, per_head.view(LAYERS, KV, GROUP).mean(-1), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------- physical pruning

REMOVALS = [
    [(0, 1), (0, 2)],                                     # uneven within a group: padded slots
    [(1, h) for h in range(4)] + [(2, 5)],                # a whole group, and one head elsewhere
    [(0, 0), (0, 4), (1, 1), (1, 2), (1, 5), (1, 6)],     # the same count from every group: no padding
    [(2, h) for h in range(HEADS)] + [(0, 7)],            # a whole layer
]


@pytest.mark.parametrize("removed", REMOVALS, ids=["uneven", "group", "even", "layer"])
def test_pruning_gives_the_masked_logits_and_the_counted_parameters(gqa, removed):
    from headsweep.trials.efficiency import efficiency, pruned_copy
    b = batch()
    with trials.masked(gqa, removed):
        want = logits(gqa, b)
    pruned = pruned_copy(gqa, removed)
    torch.testing.assert_close(logits(pruned, b), want, atol=1e-5, rtol=0)
    eff = efficiency(gqa, removed)
    assert eff["params_pruned"] == sum(p.numel() for p in pruned.parameters())
    kv = sum(2 * attn(pruned, i).k_proj.weight.shape[0] for i in range(LAYERS)
             if hasattr(attn(pruned, i), "k_proj"))                           # keys + values, per token
    assert eff["kv_cache_bytes_per_token"] == kv * 4
    for i in range(LAYERS):                                                   # grouping kept consistent
        a = attn(pruned, i)
        if hasattr(a, "q_proj"):
            assert a.q_proj.weight.shape[0] == a.k_proj.weight.shape[0] * a.num_key_value_groups
    assert trials.head_layout(pruned).heads_per_layer == tuple(
        HEADS - sum(layer == i for layer, _ in removed) for i in range(LAYERS))


def test_uneven_pruning_pads_a_group_with_slots_that_add_nothing(gqa):
    from headsweep.trials.efficiency import pruned_copy
    pruned = pruned_copy(gqa, [(0, 1), (0, 2)])
    assert pruned.headsweep_present_heads[0] == [0, 3, -1, -1, 4, 5, 6, 7]
    a = attn(pruned, 0)
    assert a.num_key_value_groups == 4 and a.k_proj.weight.shape[0] == KV * D
    assert torch.count_nonzero(a.o_proj.weight[:, 2 * D:4 * D]) == 0         # the padding slots
    assert torch.count_nonzero(a.q_proj.weight[2 * D:4 * D]) == 0
    # removing the rest of the group removes the group: no padding, one KV head fewer
    again = trials.prune_heads(pruned, [(0, 0), (0, 3)])
    assert again.headsweep_present_heads[0] == [4, 5, 6, 7] and attn(again, 0).k_proj.weight.shape[0] == D


@pytest.mark.parametrize("removed", REMOVALS[:3], ids=["uneven", "group", "even"])
def test_a_pruned_model_saves_and_reloads_with_from_pretrained(gqa, removed, tmp_path):
    from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    from headsweep.trials.efficiency import pruned_copy
    from headsweep.trials.pruned_model import save_pruned
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"[PAD]": 0, "[UNK]": 1}, unk_token="[UNK]")),
                                  pad_token="[PAD]", unk_token="[UNK]")
    with trials.masked(gqa, removed):
        want = logits(gqa)
    save_pruned(pruned_copy(gqa, removed), tok, tmp_path)
    remote = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True).eval()
    torch.testing.assert_close(logits(remote), want, atol=1e-5, rtol=0)
    plain, _ = trials.load_model(str(tmp_path), 2)                            # no remote code
    torch.testing.assert_close(logits(plain.eval()), want, atol=1e-5, rtol=0)
    assert plain.headsweep_present_heads == pruned_copy(gqa, removed).headsweep_present_heads


# ---------------------------------------------------------------------------- units

def test_without_gqa_the_two_units_coincide():
    model = build("llama", n_kv=HEADS, dtype=torch.float64)
    heads = trials.head_layout(model)
    with units(model, "kv_group") as groups:
        assert (groups.n_heads, groups.head_dim, groups.query_per_unit) == (heads.n_heads, heads.head_dim, 1)
        by_group = {m: IMPORTANCE_METHODS[m](model, labelled()) for m in ("gradient", "ablation", "entropy")}
        removed = trials.choose_heads("top", by_group["gradient"], 5)
        assert groups.query_heads_of(removed) == removed
        assert groups.groups_removed(removed) == removed
    for m, scores in by_group.items():
        torch.testing.assert_close(scores, IMPORTANCE_METHODS[m](model, labelled()), atol=1e-9, rtol=0)
    assert removed == trials.choose_heads("top", IMPORTANCE_METHODS["gradient"](model, labelled()), 5)


def test_multi_query_attention_refuses_kv_group_in_one_line():
    model = build("llama", n_kv=1)
    with pytest.raises(UserError) as err:
        with units(model, "kv_group"):
            pass
    assert err.value.key == "importance.unit" and "multi-query" in str(err.value) and "\n" not in str(err.value)
    with units(model, "head") as layout:
        assert layout.n_heads == HEADS and layout.group_size == HEADS


def test_one_head_per_layer_is_not_multi_query_attention():
    """The one-head variant of a multi-head model (single_head_arch) has one query and one KV head
    per layer: its one group is its one head, and kv_group is accepted."""
    torch.manual_seed(0)
    model, _ = trials.load_model("preset:tiny-gpt2-random", 2, texts=["the movie is good ."], single_head="random")
    with units(model, "kv_group") as layout:
        assert (layout.n_heads, layout.query_per_unit) == (1, 1)


def test_strategies_count_groups_and_rows_list_query_heads(gqa):
    from headsweep.trials.rows import make_row
    from headsweep.trials.spec import DataSpec, FinetuneSpec, ImportanceSpec, ModelSpec, PruneSpec, TrainSpec
    with units(gqa, "kv_group") as groups:
        scores = torch.tensor([[0.9, 0.1], [0.5, 0.7], [0.2, 0.3]])
        removed = trials.choose_heads("bottom", scores, 0.5)                  # half of the 6 groups
        assert removed == [(0, 1), (2, 0), (2, 1)]
        ft = FinetuneSpec(ModelSpec("x"), DataSpec(), TrainSpec(), ImportanceSpec(unit="kv_group"), 0)
        row = make_row(PruneSpec(ft, "bottom", 0.5), groups, removed, {"n_eval": 1}, {})
    assert (row["k"], row["k_fraction"], row["unit"]) == (3, 0.5, "kv_group")
    assert json.loads(row["heads_removed"]) == [[0, 4], [0, 5], [0, 6], [0, 7]] + [[2, h] for h in range(8)]
    assert json.loads(row["groups_removed"]) == [[0, 1], [2, 0], [2, 1]]
    assert (row["heads_total"], row["heads_kept"]) == (24, 12)
    head_row = make_row(PruneSpec(ft, "top", 3), trials.head_layout(gqa), [(0, 1), (1, 4), (1, 5)], {"n_eval": 1}, {})
    assert (head_row["k"], head_row["heads_kept"], head_row["groups_removed"]) == (3, 21, "[]")


def test_the_one_head_variant_is_refused_for_grouped_query_attention(gqa):
    with pytest.raises(UserError, match="grouped-query attention"):
        trials.to_single_head(gqa, "pretrained")


@pytest.mark.parametrize("model_type", sorted(set(__import__("headsweep.trials.gqa", fromlist=["x"]).LLAMA_FAMILY)
                                              - set(FAMILY)))
def test_every_registered_family_type_gates_and_prunes_exactly(model_type):
    """The other model types registered on the adapter: gates = zeroed columns by hand, a removed
    group = the group cut out by hand, uneven pruning = the mask."""
    from headsweep.trials.efficiency import pruned_copy
    model = build(model_type)
    b = batch()
    with trials.masked(model, [(1, 2), (2, 6)]):
        torch.testing.assert_close(logits(model, b), logits(zero_by_hand(model, [(1, 2), (2, 6)]), b),
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(logits(pruned_copy(model, [(1, 2), (2, 6)]), b), logits(model, b),
                                   atol=1e-5, rtol=0)
    with units(model, "kv_group"):
        torch.testing.assert_close(logits(pruned_copy(model, [(0, 1)]), b),
                                   logits(remove_group_by_hand(model, 0, 1), b), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- stage B in KV groups

@pytest.fixture(scope="module")
def kv_ckpt(tmp_path_factory):
    """A tiny-llama (4 layers x 8 query heads in 2 KV groups) stage-A checkpoint scored per group."""
    from tests.trials.conftest import make_checkpoint
    from headsweep.trials.spec import DataSpec
    data = DataSpec(source="synthetic", synthetic_size=80, max_length=32, eval_limit=48)
    path = tmp_path_factory.mktemp("kv-ckpt")
    return make_checkpoint(path, "llama", data, methods=("gradient", "entropy"), unit="kv_group"), path, data


@pytest.mark.parametrize("strategy, k", [("top", 3), ("bottom", 0.25), ("random", 2)])
def test_kv_group_rows_remove_groups_and_reproduce_by_masking_heads_removed(kv_ckpt, tmp_path, strategy, k):
    import numpy as np
    import pandas as pd

    from tests.trials.conftest import check_row, stage_a_scores
    from headsweep.trials import layout
    from headsweep.trials.run import run_prune
    from headsweep.trials.spec import PruneSpec
    ft, path, data = kv_ckpt
    scores = stage_a_scores(path)                                     # [4 layers, 2 groups]
    assert scores.shape == (4, 2)
    (row,) = run_prune(PruneSpec(ft, strategy, k, draw=0 if strategy == "random" else None), path, tmp_path)
    groups = [tuple(g) for g in json.loads(row["groups_removed"])]
    n = 3 if k == 3 else 2                                             # 0.25 of 8 groups
    assert row["k"] == len(groups) == n and row["k_fraction"] == n / 8 and row["unit"] == "kv_group"
    if strategy != "random":                                           # by hand from the table
        order = np.argsort(-scores.ravel() if strategy == "top" else scores.ravel(), kind="stable")[:n]
        assert groups == sorted(divmod(int(i), 2) for i in order)
    heads = json.loads(row["heads_removed"])
    assert heads == [[layer, g * 4 + j] for layer, g in groups for j in range(4)]
    assert row["heads_total"] == 32 and row["heads_kept"] == 32 - 4 * n
    assert row["kv_cache_bytes_per_token"] == row["kv_cache_bytes_per_token_total"] * (8 - n) // 8
    check_row(row, pd.read_parquet(tmp_path / layout.predictions_file(row["trial_key"])), path, data)


def test_iterative_pruning_in_kv_groups_nests_whole_groups(kv_ckpt, tmp_path):
    import pandas as pd

    from tests.trials.conftest import check_row
    from headsweep.trials import layout
    from headsweep.trials.run import run_prune
    from headsweep.trials.spec import PruneSpec
    ft, path, data = kv_ckpt
    rows = run_prune(PruneSpec(ft, "iterative", 0, iterative_step=0.25, importance_method="entropy"), path, tmp_path)
    assert [r["k"] for r in rows] == [2, 4, 6, 8]                     # 0.25 of 8 groups per step
    before = set()
    for row in rows:
        groups = {tuple(g) for g in json.loads(row["groups_removed"])}
        assert before < groups and len(json.loads(row["heads_removed"])) == 4 * row["k"]
        before = groups
        check_row(row, pd.read_parquet(tmp_path / layout.predictions_file(row["trial_key"])), path, data)
