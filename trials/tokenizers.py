"""Tokenizers: loading one from a directory or the hub, GPT-2's padding, and the word-level
tokenizer the offline presets build from task text (no network)."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<|endoftext|>"]
# Files that tell AutoTokenizer which tokenizer class a directory holds.
DESCRIBED_BY = ("tokenizer_config.json", "tokenizer.json", "config.json")


def word_tokenizer(texts: Iterable[str], style: str, max_vocab: int = 20000):
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
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    eos = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token=eos,
                                   eos_token=eos, bos_token=eos)


def load_tokenizer(path: str, trust_remote_code: bool = False, vocab_only_class: str | None = None):
    """AutoTokenizer, or ``vocab_only_class`` for a directory that holds only vocab files (a bare
    BERT vocab.txt): with nothing describing it there, AutoTokenizer cannot tell the class."""
    import transformers
    if vocab_only_class and os.path.isdir(path) and not any(
            os.path.exists(os.path.join(path, f)) for f in DESCRIBED_BY):
        return getattr(transformers, vocab_only_class).from_pretrained(path)
    return transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def fix_padding(model, tokenizer) -> None:
    """GPT-2 has no pad token: pad with EOS and tell the model, which pools the last non-pad token."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
