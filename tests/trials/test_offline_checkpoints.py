"""Real checkpoints without the hub (trials.models.load_model): a local directory holding
safetensors, and a GGUF file (``models[].gguf_file``, transformers' own GGUF loading, dequantised).

The GGUF file is written here with the gguf package the way llama.cpp's converter writes one
(tests/conftest.py ``llama_gguf``); loading it must give back every weight it was written from.
"""
from __future__ import annotations

import pytest
import torch

from headsweep import trials
from headsweep.trials.units import units

TEXT = ["the movie is good .", "the movie is bad ."]


def test_a_local_safetensors_directory_loads_as_a_gqa_model(tmp_path):
    from transformers import AutoModelForSequenceClassification
    torch.manual_seed(0)
    base, tok = trials.load_model("preset:tiny-llama-random", 2, texts=TEXT)
    base.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    model, tok2 = trials.load_model(str(tmp_path), 2)
    layout = trials.head_layout(model)
    assert (model.config.model_type, layout.n_heads, layout.kv_heads) == ("llama", 8, 2)
    assert model.config.use_cache is False and tok2.pad_token_id == model.config.pad_token_id
    enc = tok2(TEXT, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()(**enc).logits
        torch.testing.assert_close(model.eval()(**enc).logits, want)
    with units(model, "kv_group") as groups:
        assert groups.n_heads == 2


def test_a_gguf_file_loads_dequantised_with_its_tokenizer(llama_gguf):
    written, path = llama_gguf
    model, tok = trials.load_model(str(path.parent), 2, gguf_file=path.name)
    assert type(model).__name__ == "LlamaForSequenceClassification" and model.dtype == torch.float32
    got = model.state_dict()
    for name, t in written.state_dict().items():
        if name != "lm_head.weight":                                  # the causal LM's head is not loaded
            assert torch.equal(got[name], t), name                   # q/k un-permuted: bit for bit
    layout = trials.head_layout(model)
    assert (layout.n_layers, layout.n_heads, layout.kv_heads) == (2, 4, 2)
    ids = tok("the movie is good .")["input_ids"]
    assert ids[0] == 1 and tok.convert_ids_to_tokens(ids[1:]) == ["\u2581the", "\u2581movie", "\u2581is", "\u2581good",
                                                                   "\u2581."]
    assert tok.pad_token is not None and model.config.pad_token_id == tok.pad_token_id   # EOS, as for GPT-2
    enc = tok(TEXT, padding=True, return_tensors="pt")
    with torch.no_grad(), trials.masked(model, [(0, 1)]):
        assert model.eval()(**enc).logits.shape == (2, 2)


def test_a_gguf_file_needs_the_gguf_package(llama_gguf, monkeypatch):
    from headsweep.trials.errors import UserError
    _, path = llama_gguf
    monkeypatch.setattr("transformers.utils.is_gguf_available", lambda *a, **k: False)
    with pytest.raises(UserError, match=r"pip install 'headsweep\[gguf\]'"):
        trials.load_model(str(path.parent), 2, gguf_file=path.name)
