"""Trial specs (trials.spec): labels, keys, and the dict round trip."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from headsweep.trials.spec import (DataSpec, FinetuneSpec, ImportanceSpec, ModelSpec, PruneSpec, TrainSpec,
                         default_label, from_dict, to_dict)


def make(seed=0, **model) -> FinetuneSpec:
    return FinetuneSpec(model=ModelSpec(name="preset:tiny-gpt2", **model),
                        data=DataSpec(source="synthetic", synthetic_size=500, train_limit=100),
                        train=TrainSpec(epochs=2, lr=1e-3), importance=ImportanceSpec(examples=64),
                        seed=seed)


@pytest.mark.parametrize("name, label", [
    ("preset:tiny-gpt2", "tiny-gpt2"), ("openai-community/gpt2", "gpt2"), ("gpt2", "gpt2"),
    ("./ckpt/", "ckpt"), ("/data/models/distilbert-base-uncased", "distilbert-base-uncased"),
])
def test_default_label(name, label):
    assert default_label(name) == label
    assert ModelSpec(name=name).label == label


def test_model_variant_and_arch():
    assert ModelSpec(name="gpt2").variant == "gpt2" and ModelSpec(name="gpt2").arch == "multi-head"
    one = ModelSpec(name="gpt2", label="g", single_head="random")
    assert one.variant == "g-1head" and one.arch == "single-head"
    # checkpoints are named by the fine-tune's key (content), never by label: distinct variants and
    # seeds get distinct folders
    from headsweep.trials import layout
    names = {layout.checkpoint_dir(make(s, **kw).key) for s in (1, 3) for kw in ({}, {"single_head": "pretrained"})}
    assert len(names) == 4


def test_specs_are_frozen():
    spec = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 4
    assert spec.stage == "A" and PruneSpec(spec, "top", 2).stage == "B"


def test_key_is_the_sha256_of_the_canonical_json():
    spec = make()
    d = dataclasses.asdict(spec)
    # keys added later (revision) are in the key only when set: an unset one leaves every key of a
    # sweep that ran before it as it was
    del d["model"]["revision"], d["data"]["revision"]
    canonical = json.dumps(d, sort_keys=True, separators=(",", ":"))
    assert spec.key == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert len(spec.key) == 16 and int(spec.key, 16) >= 0
    pinned = dataclasses.replace(spec, model=dataclasses.replace(spec.model, revision="abc123"))
    assert pinned.key != spec.key
    d["model"]["revision"] = "abc123"
    assert pinned.key == hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def test_keys_tell_trials_apart():
    a = make()
    assert a.key == make().key
    changed = [make(seed=1), make(label="other"), make(single_head="random"),
               dataclasses.replace(a, data=dataclasses.replace(a.data, max_length=64)),
               dataclasses.replace(a, train=dataclasses.replace(a.train, lr=2e-3)),
               dataclasses.replace(a, importance=dataclasses.replace(a.importance, examples=65))]
    keys = {a.key} | {c.key for c in changed}
    assert len(keys) == 1 + len(changed)
    b = PruneSpec(a, "top", 0.25)
    prune_keys = {b.key, PruneSpec(a, "bottom", 0.25).key, PruneSpec(a, "top", 4).key,
                  PruneSpec(a, "top", 0.25, per_layer=True).key,
                  PruneSpec(a, "top", 0.25, recovery_epochs=1).key, PruneSpec(make(seed=1), "top", 0.25).key}
    assert len(prune_keys) == 6 and a.key not in prune_keys
    assert b.seed == a.seed


@pytest.mark.parametrize("spec", [make(), make(2, single_head="pretrained", tokenizer="/tok"),
                                  PruneSpec(make(), "random", 0.25, per_layer=True, recovery_epochs=0.5),
                                  PruneSpec(make(4), "top", 3)])
def test_dict_round_trip_through_json_and_yaml(spec):
    d = to_dict(spec)
    back = from_dict(json.loads(json.dumps(d)))
    assert back == spec and back.key == spec.key and type(back) is type(spec)
    yaml = pytest.importorskip("yaml")
    assert from_dict(yaml.safe_load(yaml.safe_dump(d))).key == spec.key


def test_from_dict_ignores_unknown_keys():
    d = to_dict(make())
    d["model"]["future_option"] = 1
    d["data"]["another"] = "x"
    assert from_dict(d) == make()


def test_new_prune_fields_round_trip_and_refuse_impossible_trials():
    from headsweep.trials.errors import UserError
    ft = make()
    it = PruneSpec(ft, "iterative", 0, iterative_step=0.1, k_grid=(2, 4, 8))
    best = PruneSpec(ft, "layer-single-head", 0, importance_method="oracle", keep="best")
    for spec in (it, best, PruneSpec(ft, "each-head", 1)):
        again = from_dict(json.loads(json.dumps(to_dict(spec))))
        assert again == spec and again.key == spec.key
    assert it.key != PruneSpec(ft, "iterative", 0, iterative_step=0.1, k_grid=(2, 4)).key
    with pytest.raises(UserError, match="keep: must be one of ranked, best"):
        PruneSpec(ft, "layer-single-head", 0, keep="oracle")
    with pytest.raises(UserError, match="^importance_method: .*oracle"):
        PruneSpec(ft, "layer-single-head", 0, keep="best")                       # a ranked label
    with pytest.raises(UserError, match="^importance_method: .*oracle"):
        PruneSpec(ft, "layer-single-head", 0, importance_method="oracle")        # keep: ranked
    with pytest.raises(UserError, match="^recovery_epochs: each-head"):
        PruneSpec(ft, "each-head", 1, recovery_epochs=1)
