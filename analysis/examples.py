"""Per-example tests on the shared evaluation set, with the EXAMPLE as the unit.

The same example is evaluated in every seed, so (seed, example) pairs are not independent: an
example that condition b gets wrong and a gets right tends to be so in every seed (its own
direction of difference). Pooling discordant pairs over seeds (McNemar on the sums) counts that
one example S times and rejects far too often (tests/analysis/test_defects.py simulates it).
Here each example's correctness is averaged over the seeds (and random draws) of a condition
first, so an example is one observation: d_i = mean_s b_is - mean_s a_is, and a paired t-test
over the examples asks whether the mean of d over the population of examples this evaluation
set was drawn from is 0. It treats the fine-tuned models as fixed: it generalises over examples,
not over training runs (that is the seed-level test's job).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from headsweep.trials.schema import STATS_COLUMNS

from .compare import HIDDEN, _join, base_row, plan_comparisons
from .conditions import index, paired
from .stats import difference_range, example_t, mcnemar_test, t_bounds


class _Correct:
    """trial_key -> (sorted example ids, correctness as floats); cached per call."""

    def __init__(self, predictions):
        self.predictions, self.cache = predictions, {}

    def __call__(self, key):
        if key not in self.cache:
            df = self.predictions(key) if key is not None else None
            if df is None:
                self.cache[key] = None
            else:
                s = df.drop_duplicates("example_id").set_index("example_id")["correct"].sort_index()
                self.cache[key] = (s.index.to_numpy(), s.to_numpy(float))
        return self.cache[key]


def _mean_over(keys, correct: _Correct):
    """Correctness averaged over several trials (random draws of one seed), on their shared examples."""
    parts = [correct(k) for k in keys]
    if not parts or any(p is None for p in parts):
        return None
    ids = parts[0][0]
    if all(len(p[0]) == len(ids) and np.array_equal(p[0], ids) for p in parts):
        return ids, np.mean([p[1] for p in parts], axis=0)
    s = pd.concat([pd.Series(p[1], index=p[0]) for p in parts], axis=1, join="inner")
    return s.index.to_numpy(), s.mean(axis=1).to_numpy()


def example_matrix(pairs: dict, correct: _Correct):
    """[examples, seeds] correctness of a and b on the examples every used trial shares."""
    seeds, cols_a, cols_b = [], [], []
    for seed, ka, kb in zip(pairs["seed"], pairs["keys_a"], pairs["keys_b"]):
        a, b = _mean_over(ka, correct), _mean_over(kb, correct)
        if a is None or b is None:
            continue
        seeds.append(seed)
        cols_a.append(a)
        cols_b.append(b)
    if not seeds:
        return [], np.zeros((0, 0)), np.zeros((0, 0))
    ids = cols_a[0][0]
    if all(np.array_equal(x[0], ids) for x in cols_a + cols_b):
        return seeds, np.stack([x[1] for x in cols_a], 1), np.stack([x[1] for x in cols_b], 1)
    common = ids
    for x in cols_a + cols_b:
        common = np.intersect1d(common, x[0])

    def take(cols):
        return np.stack([x[1][np.searchsorted(x[0], common)] for x in cols], 1)
    return seeds, take(cols_a), take(cols_b)


def example_tests(results: pd.DataFrame, predictions, plan: pd.DataFrame | None = None, *, conf: float = 0.95,
                  **_ignored) -> pd.DataFrame:
    """The example-level paired t-test for every planned comparison (accuracy only).

    predictions: callable trial_key -> DataFrame(example_id, correct) or None (a loaded Sweep is one)."""
    plan = plan_comparisons(results) if plan is None else plan
    idx, rows, correct = index(results, "accuracy"), [], _Correct(predictions)
    rng = difference_range("accuracy")
    for p in plan.to_dict("records"):
        pairs = paired(idx, p["cond_a"], p["cond_b"])
        seeds, a, b = example_matrix(pairs, correct)
        if not seeds or a.shape[0] < 2:
            continue
        ca, cb = a.mean(axis=1), b.mean(axis=1)   # one value per example: the unit of this test
        r = example_t(ca, cb)
        n = a.shape[0]
        mean, se, pval = float(r["difference"]), float(r["se"]), float(r["p"])
        lo = hi = math.nan
        if not math.isnan(pval) and se > 0:   # zero variance: said in the note, no zero-width interval
            lo, hi = (float(x) for x in t_bounds(mean, se, n - 1, conf, rng))
        note = "" if len(seeds) == len(pairs["seed"]) else f"predictions for {len(seeds)} of {len(pairs['seed'])} seeds"
        if se == 0:
            note = _join(note, "no example differs between the two conditions" if mean == 0 else
                         "every example differs by the same amount: t undefined")
        rows.append({**base_row(p, "accuracy", "examples", "example_t"), "n": n, "n_seeds": len(seeds),
                     "n_examples": n, "n_draws": pairs["n_draws"], "mean_a": float(a.mean()), "mean_b": float(b.mean()),
                     "difference": mean, "sd": se * math.sqrt(n), "ci_low": lo, "ci_high": hi,
                     "effect_size": float(r["dz"]), "effect_size_name": "cohen_dz_examples",
                     "statistic": float(r["t"]), "df": n - 1, "p": pval, "_se": se, "_df": n - 1, "_lo": rng[0],
                     "_hi": rng[1], "note": _join(p["note"], note)})
    return pd.DataFrame(rows, columns=[c for c in STATS_COLUMNS if c not in ("p_adjusted", "family_size",
                                                                              "significant")] + HIDDEN)


MCNEMAR_COLUMNS = ["comparison_id", "family", "model", "group_a", "group_b", "seed", "draw_b", "n_examples",
                   "accuracy_a", "accuracy_b", "n01", "n10", "statistic", "p", "method"]


def mcnemar_by_seed(results: pd.DataFrame, predictions, plan: pd.DataFrame | None = None) -> pd.DataFrame:
    """Descriptive: McNemar for one seed's pair of fixed models at a time (each row its own test,
    unadjusted). Condition b's random draws get a row each (draw_b); a uses its first trial."""
    plan = plan_comparisons(results) if plan is None else plan
    idx, rows, correct = index(results, "accuracy"), [], _Correct(predictions)
    for p in plan.to_dict("records"):
        pairs = paired(idx, p["cond_a"], p["cond_b"])
        for seed, ka, kb in zip(pairs["seed"], pairs["keys_a"], pairs["keys_b"]):
            a = correct(ka[0])
            for j, key in enumerate(kb):
                b = correct(key)
                if a is None or b is None:
                    continue
                ids = np.intersect1d(a[0], b[0])
                xa = a[1][np.searchsorted(a[0], ids)] > 0.5
                xb = b[1][np.searchsorted(b[0], ids)] > 0.5
                n01, n10 = int(np.sum(xa & ~xb)), int(np.sum(~xa & xb))
                stat, pv, method = mcnemar_test(n01, n10)
                rows.append({"comparison_id": p["comparison_id"], "family": p["family"], "model": p["model"],
                             "group_a": p["group_a"], "group_b": p["group_b"], "seed": seed,
                             "draw_b": j if len(kb) > 1 else -1, "n_examples": len(ids),
                             "accuracy_a": float(xa.mean()), "accuracy_b": float(xb.mean()), "n01": n01, "n10": n10,
                             "statistic": stat, "p": pv, "method": method})
    return pd.DataFrame(rows, columns=MCNEMAR_COLUMNS)
