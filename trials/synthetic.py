"""A generated sentiment task for the offline demo and tests: learnable, but not by word counts.

Sentences are built from clauses ("the plot is not very clever"). A clause's polarity is its
adjective's, flipped by negation; intensifiers and fillers change nothing. Two-clause sentences
are either contrasts ("A but B", "although A, B": the second clause decides) or agreements
("A and B", same polarity). A bag-of-words model cannot read negation or which side of "but" a
word is on, so getting far past ~75% needs attention to word order.
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


def _clause(rng: np.random.Generator, polarity: int | None = None) -> tuple[str, int]:
    """(text, polarity in {0, 1}); ``polarity`` forces the clause's meaning."""
    negated = rng.random() < 0.35
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


def synthetic_sentiment(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` rows with columns ``sentence`` and ``label`` (0 negative, 1 positive), seeded."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.45:                                   # one clause
            text, label = _clause(rng)
        elif kind < 0.80:                                 # contrast: the second clause decides
            a, pa = _clause(rng)
            b, label = _clause(rng, polarity=1 - pa)
            text = f"{a} , but {b}" if rng.random() < 0.6 else f"although {a} , {b}"
        else:                                             # agreement
            a, label = _clause(rng)
            b, _ = _clause(rng, polarity=label)
            text = f"{a} and {b}"
        if rng.random() < 0.2:
            text = f"{FILLERS[rng.integers(len(FILLERS))]} {text}"
        rows.append((text + " .", label))
    return pd.DataFrame(rows, columns=["sentence", "label"])
