"""A generated sentence-pair task (``data.source: synthetic-pairs``): are both reviews positive?

Each sentence is one clause, "the plot is not very clever": its polarity is its adjective's,
flipped by a negation. The label is 1 when both sentences are positive. Labels are balanced: half
the pairs are (positive, positive), the other half split evenly over the three other polarity
pairs. One sentence alone tells at most 5/6 of the labels (a negative first sentence means 0,
a positive one 1 for 3/4 of them), so an accuracy above 5/6 needs both sentences (offline tests
of pair tokenisation: token_type_ids, GPT-2's separator). "Do both agree" (an XOR of the two
polarities) would need both from the start, but tiny models learn it far too slowly for tests.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

SUBJECTS = ["the movie", "the film", "the plot", "the acting", "the script", "the music",
            "the ending", "the cast", "the story", "the pacing"]
VERBS = ["is", "was", "seems", "feels"]
POSITIVE = ["good", "great", "clever", "charming", "moving", "funny", "sharp", "warm"]
NEGATIVE = ["bad", "dull", "boring", "awful", "clumsy", "bland", "weak", "flat"]
NEGATIONS = ["not", "never"]
INTENSIFIERS = ["very", "really", "quite"]


ONE_SENTENCE_CEILING = 5 / 6   # the best accuracy from either sentence alone


def clause(rng: np.random.Generator, polarity: int) -> str:
    """A clause of the given polarity (0 negative, 1 positive)."""
    negated = rng.random() < 0.4
    positive_adj = bool(polarity) != negated
    words = [SUBJECTS[rng.integers(len(SUBJECTS))], VERBS[rng.integers(len(VERBS))]]
    if negated:
        words.append(NEGATIONS[rng.integers(len(NEGATIONS))])
    if rng.random() < 0.3:
        words.append(INTENSIFIERS[rng.integers(len(INTENSIFIERS))])
    pool = POSITIVE if positive_adj else NEGATIVE
    words.append(pool[rng.integers(len(pool))])
    return " ".join(words) + " ."


def polarity(text: str) -> int:
    """A clause's polarity recomputed from its words (the generator's rule, for tests)."""
    words = text.split()
    positive = any(w in POSITIVE for w in words)
    negated = any(w in NEGATIONS for w in words)
    return int(positive != negated)


def synthetic_pairs(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` rows: ``sentence1``, ``sentence2``, ``label`` (1: both positive), seeded."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = int(rng.random() < 0.5)
        pa, pb = (1, 1) if label else ((0, 1), (1, 0), (0, 0))[rng.integers(3)]
        rows.append((clause(rng, pa), clause(rng, pb), label))
    return pd.DataFrame(rows, columns=["sentence1", "sentence2", "label"])
