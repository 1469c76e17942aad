"""Tokenizers: loading one from a directory or the hub, GPT-2's padding, and the word-level
tokenizer the offline presets build from task text (no network)."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<|endoftext|>"]
# Files that tell AutoTokenizer which tokenizer class a directory holds.
DESCRIBED_BY = ("tokenizer_config.json", "tokenizer.json", "config.json")


def word_tokenizer(texts: Iterable[str], style: str, max_vocab: int = 20000, segment_ids: bool = False):
    """A deterministic lowercase word-level tokenizer built from ``texts`` (no network).

    ``style`` "bert" adds [CLS] ... [SEP]; "gpt2" adds nothing and pads with <|endoftext|>.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.BertPreTokenizer()
    norm = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    counts = Counter()
    for t in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
    # Sort by (-count, word): the vocabulary never depends on input order or hash seeds.
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:max_vocab]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + [w for w in words if w not in SPECIALS])}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = norm, pre
    if style == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",  # segment 1 for B
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        # BERT takes segment ids and DistilBERT does not: as their hub tokenizers, only the first
        # returns token_type_ids by default (so tok(a, b) feeds a model what it expects).
        names = ["input_ids", "token_type_ids", "attention_mask"] if segment_ids else ["input_ids", "attention_mask"]
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                       model_input_names=names)
    eos = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token=eos,
                                   eos_token=eos, bos_token=eos)


def load_tokenizer(path: str, trust_remote_code: bool = False, vocab_only_class: str | None = None,
                   revision: str | None = None):
    """AutoTokenizer, or ``vocab_only_class`` for a directory that holds only vocab files (a bare
    BERT vocab.txt): with nothing describing it there, AutoTokenizer cannot tell the class."""
    import transformers
    if vocab_only_class and os.path.isdir(path) and not any(
            os.path.exists(os.path.join(path, f)) for f in DESCRIBED_BY):
        return getattr(transformers, vocab_only_class).from_pretrained(path)
    return transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                      **({"revision": revision} if revision else {}))


def fix_padding(model, tokenizer) -> None:
    """GPT-2 has no pad token: pad with EOS and tell the model, which pools the last non-pad token."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id


def uses_token_types(model) -> bool:
    """Whether the model has segment embeddings (BERT, ELECTRA: ``type_vocab_size`` >= 2) and so
    should get token_type_ids; DistilBERT and GPT-2 have none, RoBERTa only one."""
    return getattr(getattr(model, "config", None), "type_vocab_size", 0) >= 2


def encode(tokenizer, texts: list[str], pairs: list[str] | None, max_length: int,
           token_types: bool | None = None) -> tuple[list[list[int]], list[list[int]] | None]:
    """(input_ids, token_type_ids or None) per example, truncated to ``max_length``.

    Pairs use the tokenizer's own pair template where it has a separator token (BERT family:
    ``[CLS] A [SEP] B [SEP]``, segment ids 0/1). A tokenizer without one (GPT-2) gets ``A <sep> B``
    with its end-of-text token as the separator and no segment ids (GPT-2 has no segment
    embeddings; transformers would add the *word* embedding of the segment id). ``token_types``:
    return token_type_ids (None: if the tokenizer returns them by default).
    """
    if token_types is None:
        token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
    if pairs is not None and tokenizer.sep_token is None:
        return joined_pairs(tokenizer, texts, pairs, max_length), None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length,
                    return_token_type_ids=bool(token_types))
    return enc["input_ids"], (enc["token_type_ids"] if token_types else None)


def joined_pairs(tokenizer, texts: list[str], pairs: list[str], max_length: int) -> list[list[int]]:
    """``A <sep> B`` token ids, the longer side truncated first (transformers' ``longest_first``)."""
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    if sep is None:
        raise ValueError("a sentence-pair task needs a separator: this tokenizer has no sep, eos or pad token")
    a_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    b_ids = tokenizer(pairs, add_special_tokens=False)["input_ids"]
    out = []
    for a, b in zip(a_ids, b_ids):
        na, nb = len(a), len(b)
        for _ in range(na + nb + 1 - max_length):   # one token at a time from the longer side
            if na > nb:
                na -= 1
            else:
                nb -= 1
        a, b = a[:na], b[:nb]
        out.append(list(a) + [sep] + list(b))
    return out
