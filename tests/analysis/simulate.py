"""Vectorised simulations for the calibration tests (issue 11 item 4).

Everything is drawn as whole arrays ([comparisons, examples, seeds]) so 400+ simulated comparisons
take well under a second to generate; the tests then push them through the package's own entry
points (``analysis.example_tests`` / ``analysis.seed_tests``) as a results table plus predictions.

The null is the one the issue names: every example has its own direction of difference (a logit
shift delta_i, mean zero over the population of examples), the same in every seed. A test that
treats (seed, example) pairs as independent sees the same discordance S times and is
anti-conservative; a test whose unit is the example is not.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit


def correctness(rng, n_comp: int, n_ex: int, n_seeds: int, *, effect: float = 0.0, sd_delta: float = 2.0,
                antithetic: bool = False, seed_sd: float = 0.3):
    """Correctness of conditions a and b: two bool arrays [n_comp, n_ex, n_seeds].

    logit P(a correct) = mu_i + u_s - delta_i / 2, logit P(b correct) = mu_i + u_s + delta_i / 2 + effect.
    u_s is the seed's (shared) quality. With ``antithetic`` the examples come in pairs (mu, delta)
    and (mu, -delta), so this evaluation set's expected difference is exactly zero in every seed:
    the null of a test across training runs on a fixed evaluation set."""
    mu = rng.normal(1.0, 1.0, (n_comp, n_ex, 1))
    delta = rng.normal(0.0, sd_delta, (n_comp, n_ex, 1))
    if antithetic:
        half = n_ex // 2
        mu[:, half:2 * half] = mu[:, :half]
        delta[:, half:2 * half] = -delta[:, :half]
    u = rng.normal(0.0, seed_sd, (n_comp, 1, n_seeds))
    pa = expit(mu + u - delta / 2)
    pb = expit(mu + u + delta / 2 + effect)
    return rng.random(pa.shape) < pa, rng.random(pb.shape) < pb


def as_sweep(a: np.ndarray, b: np.ndarray, *, strategy_b: str = "top", with_predictions: bool = True):
    """A results table (one model per simulated comparison: none vs ``strategy_b``) and a
    predictions dict trial_key -> DataFrame(example_id, correct)."""
    n_comp, n_ex, n_seeds = a.shape
    rows, preds = [], {}
    ids = np.arange(n_ex)
    for c in range(n_comp):
        model = f"m{c:04d}"
        for strategy, k, arr in (("none", 0, a), (strategy_b, 2, b)):
            for s in range(n_seeds):
                key = f"{model}-{strategy}-{s}"
                col = arr[c, :, s]
                rows.append({"model": model, "strategy": strategy, "k": k, "k_fraction": k / 4, "seed": s,
                             "accuracy": float(col.mean()), "trial_key": key, "heads_total": 4})
                if with_predictions:
                    preds[key] = pd.DataFrame({"example_id": ids, "correct": col})
    return pd.DataFrame(rows), preds
