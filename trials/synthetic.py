"""A generated sentiment task for the offline demo and tests: learnable, but not by word counts,
and the generated corpus the tiny presets were pretrained on (trials/pretrain.py).

Sentences are built from clauses ("the plot is not very clever"). A clause's polarity is its
adjective's, flipped by negation; intensifiers and fillers change nothing. Two-clause sentences
are either contrasts ("A but B", "although A, B": the second clause decides) or agreements
("A and B", same polarity). A bag-of-words model cannot read negation or which side of "but" a
word is on, so getting far past ~75% needs attention to word order.

The pretraining corpus (``review_corpus``) is unlabelled "reviews" in the same vocabulary: a few
sentences, mostly plain clauses, each usually followed by a verdict ("loved it ."). Predicting
the verdict (the next word, or a masked one) needs the same structure the task does (which
adjective a negation flips, which side of "but" counts), so the pretrained heads specialise on it,
as a hub model's heads do on real text; no task label is ever seen.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

SUBJECTS = ["the movie", "this film", "the plot", "the acting", "the script", "the soundtrack",
            "the ending", "the cast", "the dialogue", "the direction", "the story", "the pacing",
            "the humor", "the cinematography", "the lead performance", "the sequel"]
VERBS = ["is", "was", "feels", "seems", "remains", "turns out"]
POSITIVE = ["good", "great", "brilliant", "charming", "moving", "delightful", "funny", "clever",
            "gripping", "beautiful", "warm", "smart", "sharp", "touching", "fresh", "engaging"]
NEGATIVE = ["bad", "dull", "boring", "awful", "clumsy", "tedious", "bland", "messy", "weak",
            "painful", "flat", "silly", "lifeless", "predictable", "shallow", "forgettable"]
NEGATIONS = ["not", "never", "hardly", "far from"]
INTENSIFIERS = ["very", "really", "truly", "remarkably", "extremely", "rather", "somewhat", "quite"]
FILLERS = ["frankly ,", "overall ,", "in the end ,", "at times ,", "honestly ,", "for the most part ,"]


def _clause(rng: np.random.Generator, polarity: int | None = None, negation: bool = True) -> tuple[str, int]:
    """(text, polarity in {0, 1}); ``polarity`` forces the clause's meaning; ``negation=False``
    gives a plain clause whose adjective carries the polarity."""
    negated = negation and rng.random() < 0.35
    want = int(rng.integers(2)) if polarity is None else polarity
    adj_pos = bool(want) != negated           # negation flips the adjective's polarity
    words = [SUBJECTS[rng.integers(len(SUBJECTS))], VERBS[rng.integers(len(VERBS))]]
    if negated:
        words.append(NEGATIONS[rng.integers(len(NEGATIONS))])
    if rng.random() < 0.4:
        words.append(INTENSIFIERS[rng.integers(len(INTENSIFIERS))])
    pool = POSITIVE if adj_pos else NEGATIVE
    words.append(pool[rng.integers(len(pool))])
    return " ".join(words), want


def _sentence(rng: np.random.Generator, label: int | None = None) -> tuple[str, int]:
    """One task sentence and its label; ``label`` forces the meaning (the corpus uses that)."""
    kind = rng.random()
    if kind < 0.45:                                   # one clause
        text, label = _clause(rng, label)
    elif kind < 0.80:                                 # contrast: the second clause decides
        if label is None:
            a, pa = _clause(rng)
            b, label = _clause(rng, polarity=1 - pa)
        else:
            a, _ = _clause(rng, polarity=1 - label)
            b, _ = _clause(rng, polarity=label)
        text = f"{a} , but {b}" if rng.random() < 0.6 else f"although {a} , {b}"
    else:                                             # agreement
        a, label = _clause(rng, label)
        b, _ = _clause(rng, polarity=label)
        text = f"{a} and {b}"
    if rng.random() < 0.2:
        text = f"{FILLERS[rng.integers(len(FILLERS))]} {text}"
    return text + " .", label


def synthetic_sentiment(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` rows with columns ``sentence`` and ``label`` (0 negative, 1 positive), seeded."""
    rng = np.random.default_rng(seed)
    rows = [_sentence(rng) for _ in range(n)]
    return pd.DataFrame(rows, columns=["sentence", "label"])


# ---------------------------------------------------------------------------- pretraining corpus

# A verdict is "<verb> it ." with a verb of the sentence's polarity, words the task never uses.
# What it closes is the task's question: the word after a sentence's "." (the causal LM) or a
# masked verb (the masked LM) is predictable only from that sentence's polarity.
VERDICT_VERBS = {1: ["loved", "enjoyed", "liked", "recommend"], 0: ["hated", "disliked", "regretted", "avoid"]}
PLAIN_SHARE = 0.6        # share of the corpus's sentences that are one plain clause, no negation
VERDICT_SHARE = 0.8      # share of sentences followed by their verdict


def verdict(rng: np.random.Generator, polarity: int) -> str:
    verbs = VERDICT_VERBS[polarity]
    return f"{verbs[rng.integers(len(verbs))]} it ."


def review_corpus(n: int, seed: int) -> list[str]:
    """``n`` unlabelled reviews of 1-3 sentences, each of its own polarity and usually followed by
    a verdict that agrees with it. Deterministic in ``seed``.

    Most sentences (``PLAIN_SHARE``) are plain clauses, the rest the task's grammar (negation,
    contrast, agreement). The plain ones teach which words carry polarity; with only the task's
    grammar the LMs never learnt it (3000 steps: the verdict probe at chance, each verdict verb
    equally likely after any sentence), and on top of the plain ones they learn negation and
    contrast too (docs/demo.md has the probe's numbers)."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        out = []
        for _ in range(int(rng.integers(1, 4))):
            polarity = int(rng.integers(2))
            plain = rng.random() < PLAIN_SHARE
            out.append(_clause(rng, polarity, negation=False)[0] + " ." if plain else _sentence(rng, polarity)[0])
            if rng.random() < VERDICT_SHARE:
                out.append(verdict(rng, polarity))
        docs.append(" ".join(out))
    return docs


def lexicon() -> list[str]:
    """Every word and punctuation mark the task and the corpus can produce (the vocabulary the
    presets' tokenizer must cover)."""
    phrases = (SUBJECTS + VERBS + POSITIVE + NEGATIVE + NEGATIONS + INTENSIFIERS + FILLERS
               + ["but", "although", "and", ",", ".", "it"] + VERDICT_VERBS[0] + VERDICT_VERBS[1])
    return sorted({w for p in phrases for w in p.split()})
