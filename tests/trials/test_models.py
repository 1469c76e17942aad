"""Model loading (trials.models, trials.adapters): presets, local directories, real tokenizers,
unknown architectures and the one-head architecture."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from headsweep import trials

# ../shared/data beside the project root (read-only in CI); the real tokenizer files live there.
SHARED_DATA = (Path(__file__).resolve().parents[2] / "../shared/data").resolve()
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(),
                                  reason=f"shared data folder {SHARED_DATA} not present")
GPT2_TOKENIZER = SHARED_DATA / "tokenizers" / "gpt2"
DISTILBERT_TOKENIZER = SHARED_DATA / "tokenizers" / "distilbert-base-uncased"

# Attention projection parameters, by literal name, per architecture.
ATTENTION_PARAMS = {
    "gpt2": r"^transformer\.h\.\d+\.attn\.(c_attn|c_proj)\.",
    "distilbert": r"^distilbert\.transformer\.layer\.\d+\.attention\.(q_lin|k_lin|v_lin|out_lin)\.",
    "bert": r"^bert\.encoder\.layer\.\d+\.attention\.(self\.(query|key|value)|output\.dense)\.",
}


def sst2_sentences(n: int) -> list[str]:
    import pandas as pd
    df = pd.read_csv(SHARED_DATA / "sst2" / "validation.tsv", sep="\t", quoting=3, keep_default_na=False)
    return df["sentence"].iloc[:n].tolist()


def tiny_opt_model():
    from transformers import OPTConfig, OPTForSequenceClassification
    cfg = OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, ffn_dim=32, num_attention_heads=2,
                    word_embed_proj_dim=16, max_position_embeddings=32, num_labels=2)
    return OPTForSequenceClassification(cfg)


def test_presets_have_several_heads_per_layer():
    # each architecture twice: the shipped pretrained base and its random-init twin (-random)
    assert set(trials.PRESETS) == {f"preset:tiny-{arch}{suffix}" for arch in ("gpt2", "distilbert", "bert", "llama")
                                   for suffix in ("", "-random")}
    for arch, model_type in (("gpt2", "gpt2"), ("distilbert", "distilbert"), ("bert", "bert"), ("llama", "llama")):
        model, tok = trials.load_model(f"preset:tiny-{arch}", 3)
        assert model.config.model_type == model_type
        assert model.config.num_labels == 3
        layout = trials.head_layout(model)
        assert (layout.n_layers, layout.n_heads) == (model.config.num_hidden_layers,
                                                     model.config.num_attention_heads)
        assert layout.n_heads > 1 and layout.total == layout.n_layers * layout.n_heads
        assert layout.head_dim * layout.n_heads == model.config.hidden_size
        assert layout.heads_per_layer == (layout.n_heads,) * layout.n_layers
        assert tok.pad_token is not None and model.config.pad_token_id == tok.pad_token_id
        ids = tok(["the movie is good ."])["input_ids"][0]
        assert tok.unk_token_id not in ids                            # a vocabulary of task words
        assert max(max(tok.get_vocab().values()), *ids) < model.config.vocab_size


def test_seeded_presets_are_reproducible():
    from accelerate.utils import set_seed
    set_seed(3)
    a, _ = trials.load_model("preset:tiny-distilbert", 2)
    set_seed(3)
    b, _ = trials.load_model("preset:tiny-distilbert", 2)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(trials.UserError) as err:
        trials.load_model("preset:tiny-t5", 2)
    msg = str(err.value)
    assert "preset:tiny-t5" in msg and "\n" not in msg
    for p in ("preset:tiny-gpt2", "preset:tiny-distilbert", "preset:tiny-bert"):
        assert p in msg


def test_unknown_architecture_lists_the_supported_ones(tmp_path):
    model = tiny_opt_model()
    with pytest.raises(trials.UserError) as err:
        trials.head_layout(model)
    msg = str(err.value)
    assert "opt" in msg and "\n" not in msg
    for supported in ("gpt2", "distilbert", "bert"):
        assert re.search(rf"\b{supported}\b", msg)
    for call in (lambda: trials.masked(model, [(0, 0)]).__enter__(),
                 lambda: trials.prune_heads(model, [(0, 0)]),
                 lambda: trials.head_importance(model, [])):
        with pytest.raises(trials.UserError, match="gpt2"):
            call()
    # load_model refuses it too (early, before any training), from a local directory
    tok = trials.load_model("preset:tiny-bert", 2)[1]
    model.save_pretrained(tmp_path / "opt")
    tok.save_pretrained(tmp_path / "opt")
    with pytest.raises(trials.UserError, match="distilbert"):
        trials.load_model(str(tmp_path / "opt"), 2)


def test_load_model_from_a_local_directory(tiny, tmp_path, logits):
    """The from_pretrained path that hub ids take, on a directory written by save_pretrained."""
    src = tmp_path / tiny.arch
    tiny.model.save_pretrained(src)
    tiny.tok.save_pretrained(src)
    model, tok = trials.load_model(str(src), 2)
    model.eval()
    want, got = tiny.model.state_dict(), model.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert tok(TEXT)["input_ids"] == tiny.tok(TEXT)["input_ids"]
    assert model.config.pad_token_id == tok.pad_token_id == tiny.tok.pad_token_id
    batch = dict(tok(SENTS, padding=True, return_tensors="pt"))
    torch.testing.assert_close(logits(model, batch), logits(tiny.model, batch), atol=0, rtol=0)
    assert trials.head_layout(model) == trials.head_layout(tiny.model)


TEXT = "although the script seems dull , the ending is touching ."
SENTS = [TEXT, "the cast is great .", "this film remains quite charming , but the plot is weak ."]


def test_load_model_single_head_option():
    model, _ = trials.load_model("preset:tiny-gpt2", 2, single_head="pretrained")
    assert trials.head_layout(model).n_heads == 1


def test_to_single_head_pretrained_keeps_every_weight(tiny, logits):
    if tiny.arch == "llama":
        pytest.skip("grouped-query attention has no one-head variant (refused: tests/trials/test_gqa.py)")
    single = trials.to_single_head(tiny.model, "pretrained").eval()
    layout = trials.head_layout(single)
    assert layout.n_heads == 1 and layout.heads_per_layer == (1,) * tiny.n_layers
    assert layout.head_dim == tiny.hidden
    assert trials.count_parameters(single) == trials.count_parameters(tiny.model)
    want, got = tiny.model.state_dict(), single.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    out = logits(single, tiny.batch)
    assert out.shape == (tiny.batch["input_ids"].shape[0], 2) and torch.isfinite(out).all()
    # same weights, one head instead of four: the attention (and so the output) changes
    assert (out - logits(tiny.model, tiny.batch)).abs().max() > 1e-4
    assert tiny.model.config.num_attention_heads == tiny.n_heads          # original untouched


def test_to_single_head_random_redraws_only_attention(tiny, logits):
    if tiny.arch == "llama":
        pytest.skip("grouped-query attention has no one-head variant (refused: tests/trials/test_gqa.py)")
    torch.manual_seed(0)
    single = trials.to_single_head(tiny.model, "random").eval()
    assert trials.head_layout(single).n_heads == 1
    want, got = tiny.model.state_dict(), single.state_dict()
    assert want.keys() == got.keys()
    attention = [k for k in want if re.match(ATTENTION_PARAMS[tiny.arch], k)]
    assert len(attention) == 2 * (4 if tiny.arch != "gpt2" else 2) * tiny.n_layers  # weight + bias
    for k in want:
        if k in attention:
            assert not torch.equal(want[k], got[k]), k
            if k.endswith("weight"):
                assert 0.015 < got[k].std().item() < 0.025, k            # N(0, initializer_range)
            else:
                assert torch.equal(got[k], torch.zeros_like(got[k])), k
        else:
            assert torch.equal(want[k], got[k]), k
    assert torch.isfinite(logits(single, tiny.batch)).all()


def test_to_single_head_rejects_unknown_init(tiny):
    with pytest.raises(trials.UserError, match="single_head_arch.init"):
        trials.to_single_head(tiny.model, "xavier")


def _pad_check(model, tok, texts, logits):
    """Each row of a right-padded batch gives the logits of that text run alone, unpadded."""
    batch = dict(tok(texts, padding=True, return_tensors="pt"))
    lengths = batch["attention_mask"].sum(1)
    assert lengths.min() < batch["input_ids"].shape[1]                   # some rows are padded
    padded = logits(model, batch)
    for i, text in enumerate(texts):
        alone = logits(model, dict(tok([text], return_tensors="pt")))
        torch.testing.assert_close(padded[i:i + 1], alone, atol=1e-5, rtol=0)


def test_gpt2_padding_with_the_word_tokenizer(tiny_gpt2, logits):
    tok = tiny_gpt2.tok
    assert tok.pad_token == tok.eos_token
    assert tiny_gpt2.model.config.pad_token_id == tok.pad_token_id
    _pad_check(tiny_gpt2.model, tok, SENTS, logits)


@needs_shared
def test_real_gpt2_tokenizer_with_tiny_gpt2(logits):
    model, tok = trials.load_model("preset:tiny-gpt2", 2, tokenizer=str(GPT2_TOKENIZER))
    model.eval()
    assert len(tok) == 50257 and model.config.vocab_size >= 50257
    assert tok("Hello world")["input_ids"] == [15496, 995]             # SOURCE.md's check
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"
    assert model.config.pad_token_id == tok.pad_token_id == 50256
    texts = sst2_sentences(8)
    batch = dict(tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt"))
    out = logits(model, batch)
    assert out.shape == (8, 2) and torch.isfinite(out).all()
    _pad_check(model, tok, texts, logits)


@needs_shared
def test_real_distilbert_vocab_with_tiny_distilbert(logits):
    model, tok = trials.load_model("preset:tiny-distilbert", 2, tokenizer=str(DISTILBERT_TOKENIZER))
    model.eval()
    assert len(tok) == 30522 and model.config.vocab_size == 30522
    assert tok("Hello World")["input_ids"] == [101, 7592, 2088, 102]   # SOURCE.md's check
    assert model.config.pad_token_id == tok.pad_token_id == 0
    texts = sst2_sentences(8)
    batch = dict(tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt"))
    assert batch["input_ids"][:, 0].eq(101).all()                         # [CLS] first
    out = logits(model, batch)
    assert out.shape == (8, 2) and torch.isfinite(out).all()
    _pad_check(model, tok, texts, logits)


@pytest.mark.parametrize("arch", ["gpt2", "distilbert"])
def test_scratch_models_are_not_the_pretrained_base(arch):
    """``init: scratch``: the multi-head model (``scratch=True``) and the one-head model
    (``single_head="scratch"``) keep the architecture and parameter shapes of the pretrained base
    but none of its weights; from one seed both draw the same weights (12 heads or one)."""
    name = f"preset:tiny-{arch}"
    torch.manual_seed(0)
    base, _ = trials.load_model(name, 2)
    torch.manual_seed(1)
    multi, _ = trials.load_model(name, 2, scratch=True)
    torch.manual_seed(1)
    one, _ = trials.load_model(name, 2, single_head="scratch")
    assert multi.config.num_attention_heads == base.config.num_attention_heads
    assert one.config.num_attention_heads == 1
    base_sd, multi_sd, one_sd = base.state_dict(), multi.state_dict(), one.state_dict()
    assert list(base_sd) == list(multi_sd) == list(one_sd)
    for key, w in base_sd.items():
        assert multi_sd[key].shape == w.shape == one_sd[key].shape, key
        if w.dim() >= 2 and w.numel() > 1:
            assert not torch.allclose(multi_sd[key], w), f"{key} kept the pretrained weights"
        torch.testing.assert_close(one_sd[key], multi_sd[key], atol=0, rtol=0)
