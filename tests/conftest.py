"""Fixtures shared by every test package."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: every test that draws random inputs gets the same draws each run."""
    return np.random.default_rng(20190510)


@pytest.fixture
def shadowing_cwd(tmp_path):
    """A working directory holding a user's own ``trials/``, ``analysis/`` and ``orchestrator/``
    packages that fail on import: headsweep run from here must never import them (Ray workers
    get the driver's working directory on their path too)."""
    cwd = tmp_path / "user-project"
    for name in ("trials", "analysis", "orchestrator"):
        (cwd / name).mkdir(parents=True)
        (cwd / name / "__init__.py").write_text(f"raise ImportError('the user\'s own {name}/ was imported')\n")
    return cwd


def _write_llama_gguf(folder, seed: int = 0, words=("the", "movie", "is", "good", "bad", ".")):
    """A tiny Llama (2 layers, 4 query heads in 2 KV groups, hidden 32) written as a float32 GGUF
    file, the way llama.cpp's converter writes one (its tensor names, q/k rows permuted for its RoPE
    layout, a sentencepiece vocabulary: every prefix and letter of ``words``, then merges derived
    by transformers). Returns (the LlamaForCausalLM written, the file's path)."""
    from pathlib import Path

    import gguf
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    pieces = []
    for w in (f"\u2581{w}" for w in words):
        for piece in [w[:i] for i in range(1, len(w) + 1)] + list(w):
            if piece not in pieces:
                pieces.append(piece)
    tokens = ["<unk>", "<s>", "</s>"] + pieces
    cfg = LlamaConfig(vocab_size=len(tokens), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    path = Path(folder) / "tiny-llama-f32.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_block_count(2)
    w.add_feed_forward_length(48)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(8)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 3 + [-float(i) for i in range(len(pieces))])
    w.add_token_types([2, 3, 3] + [1] * len(pieces))               # unknown, control x2, normal
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def permute(t, n_head):        # llama.cpp's rotary layout of q/k rows (transformers undoes it)
        return t.reshape(n_head, 2, t.shape[0] // n_head // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    for i in range(2):
        for hf, cpp in (("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                        ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
                        ("mlp.down_proj", "ffn_down"), ("input_layernorm", "attn_norm"),
                        ("post_attention_layernorm", "ffn_norm")):
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{cpp}.weight"
    for name, t in model.state_dict().items():
        t = t.numpy()
        if ".q_proj." in name:
            t = permute(t, 4)
        elif ".k_proj." in name:
            t = permute(t, 2)
        w.add_tensor(names[name], np.ascontiguousarray(t, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model, path


@pytest.fixture
def llama_gguf(tmp_path):
    """``(model, path)``: a tiny Llama written as a GGUF file under tmp_path (needs the gguf package)."""
    pytest.importorskip("gguf", reason="the gguf package (extra 'gguf', in dev) is not installed")
    folder = tmp_path / "gguf-model"
    folder.mkdir()
    return _write_llama_gguf(folder)
