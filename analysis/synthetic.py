"""Synthetic sweeps with planted effects, for tests, demos and the orchestrator's tests.

    from analysis.synthetic import make_sweep_dir
    make_sweep_dir("/tmp/fake-sweep", seed=0)          # a full sweep directory
    analysis.analyze("/tmp/fake-sweep")

The generative model is small but has the structure real sweeps have:
  accuracy = base + seed effect (shared by all trials of a model and seed, which
             is why pairing by seed helps) + planted strategy effect + trial noise
  per example: correct_i = U_i < accuracy, with U_i = Phi(rho z_i + sqrt(1-rho^2) e_i);
             z_i is a per-example difficulty shared by all trials of a model, so
             trials agree on easy/hard examples like real models do, and
             P(correct) is exactly the trial's accuracy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as st

from trials import layout
from trials.schema import CLASSIC_STRATEGIES, IMPORTANCE_COLUMNS, result_row

from .load import write_csv, write_text

DEFAULT_MODELS = {"gpt2": (4, 4), "distilbert": (3, 4)}  # label -> (layers, heads per layer)


def default_effect(model: str, strategy: str, k_fraction: float, recovery_epochs: float, arch: str) -> float:
    """Planted accuracy change: top hurts a lot, bottom barely, random in between;
    recovery fine-tuning shrinks the damage."""
    if arch == "single-head":
        return -0.10
    drop = {"none": 0.0, "top": -0.6 * k_fraction, "bottom": -0.02 * k_fraction,
            "random": -0.25 * k_fraction, "single-head": -0.15}[strategy]
    return drop / (1.0 + recovery_epochs)


def null_effect(*_args) -> float:
    """No strategy changes anything: every comparison is a true null."""
    return 0.0


@dataclass
class SyntheticSweep:
    results: pd.DataFrame
    importance: pd.DataFrame
    predictions: dict = field(default_factory=dict)  # trial_key -> DataFrame


def _importance(rng, model: str, n_layers: int, n_heads: int, seeds) -> pd.DataFrame:
    mu = rng.gamma(2.0, 1.0, size=(n_layers, n_heads))
    mu[0, 0] = 30.0  # planted: always among the most important heads (even per-layer normalised)
    mu[-1, -1] = 0.02  # planted: always among the least important
    rows = []
    for s in seeds:
        raw = mu * np.exp(rng.normal(0, 0.25, size=mu.shape))
        norm = raw / np.linalg.norm(raw, axis=1, keepdims=True)
        for layer in range(n_layers):
            for head in range(n_heads):
                rows.append({"model": model, "seed": int(s), "method": "gradient", "layer": layer, "head": head,
                             "score": float(norm[layer, head]), "score_raw": float(raw[layer, head])})
    return pd.DataFrame(rows)


def _removed(rng, strategy: str, k: int, scores: np.ndarray) -> list:
    n_layers, n_heads = scores.shape
    order = np.argsort(-scores, axis=None, kind="stable")  # most important first
    pairs = [divmod(int(i), n_heads) for i in order]
    if strategy == "top":
        out = pairs[:k]
    elif strategy == "bottom":
        out = pairs[len(pairs) - k:]
    elif strategy == "random":
        out = [pairs[i] for i in rng.choice(len(pairs), size=k, replace=False)]
    elif strategy == "single-head":
        keep = scores.argmax(axis=1)
        out = [(l, h) for l in range(n_layers) for h in range(n_heads) if h != keep[l]]
    else:
        out = []
    return sorted([int(l), int(h)] for l, h in out)


def synthetic_sweep(rng: np.random.Generator, *, models: dict | None = None, strategies=CLASSIC_STRATEGIES,
                    k_fractions=(0.25, 0.5), seeds=(0, 1, 2, 3, 4), recovery_epochs=(0,),
                    single_head_arch: bool = True, effect=default_effect, base_accuracy: float = 0.85,
                    seed_sd: float = 0.01, trial_sd: float = 0.005, n_eval: int = 300,
                    difficulty_corr: float = 0.7, predictions: bool = True) -> SyntheticSweep:
    """Generate results (+ importance, + per-example predictions) with planted effects."""
    models = DEFAULT_MODELS if models is None else models
    rows, imps, preds = [], [], {}
    rho = difficulty_corr
    for model, (n_layers, n_heads) in models.items():
        total = n_layers * n_heads
        imp = _importance(rng, model, n_layers, n_heads, seeds)
        imps.append(imp)
        z = rng.normal(size=n_eval)  # per-example difficulty, shared by all trials of this model
        labels = rng.integers(0, 2, size=n_eval)
        seed_eff = {s: rng.normal(0, seed_sd) for s in seeds}
        score_of = {s: g.sort_values(["layer", "head"])["score"].to_numpy().reshape(n_layers, n_heads)
                    for s, g in imp.groupby("seed")}
        grid = []
        for s in seeds:
            for strat in strategies:
                if strat in ("none", "single-head"):
                    k = 0 if strat == "none" else total - n_layers
                    recs = (0.0,) if strat == "none" else recovery_epochs
                    grid += [(s, strat, k, float(r), "multi-head") for r in recs]
                else:
                    grid += [(s, strat, int(round(f * total)), float(r), "multi-head")
                             for f in k_fractions for r in recovery_epochs]
            if single_head_arch:
                grid.append((s, "none", 0, 0.0, "single-head"))
        for s, strat, k, rec, arch in grid:
            heads = n_layers if arch == "single-head" else total
            variant = f"{model}-1head" if arch == "single-head" else model
            removed = [] if arch == "single-head" else _removed(rng, strat, k, score_of[s])
            p = base_accuracy + seed_eff[s] + effect(model, strat, k / total, rec, arch) + rng.normal(0, trial_sd)
            p = float(np.clip(p, 0.01, 0.99))
            key = f"{variant}__{strat}__k{k}__r{rec:g}__s{s}"
            if predictions:
                u = st.norm.cdf(rho * z + np.sqrt(1 - rho**2) * rng.normal(size=n_eval))
                correct = u < p
                pred = np.where(correct, labels, 1 - labels)
                preds[key] = pd.DataFrame({"example_id": np.arange(n_eval), "label": labels, "pred": pred,
                                           "correct": correct, "prob": rng.uniform(0.5, 1.0, n_eval)})
                acc = float(correct.mean())
                tp = np.sum((pred == 1) & (labels == 1))
                f1 = float(2 * tp / max(1, np.sum(pred == 1) + np.sum(labels == 1)))
            else:
                acc, f1 = p, p - 0.01
            # Built by the same schema as a real trial's row (trials/schema.py).
            rows.append(result_row(
                model=model, arch=arch, variant=variant, strategy=strat, k=k, k_fraction=k / total,
                per_layer=False, seed=int(s), recovery_epochs=rec, accuracy=acc, f1=f1,
                loss=float(-np.log(max(acc, 1e-3))), n_eval=n_eval, heads_total=heads,
                heads_kept=heads - len(removed), heads_removed=json.dumps(removed), trial_key=key,
                k_requested=json.dumps(k), stage="A" if strat == "none" and rec == 0 else "B"))
    importance = pd.concat(imps, ignore_index=True)[IMPORTANCE_COLUMNS]
    return SyntheticSweep(results=pd.DataFrame(rows), importance=importance, predictions=preds)


def write_sweep(path, sweep: SyntheticSweep, *, predictions: bool = True, importance: bool = True,
                spec: bool = True, name: str = "synthetic") -> Path:
    """Lay a SyntheticSweep out as a sweep directory (trials/layout.py's names)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    r = sweep.results
    r.to_parquet(path / layout.RESULTS, index=False)
    write_csv(path / layout.RESULTS_CSV, r)
    if importance and len(sweep.importance):
        sweep.importance.to_parquet(path / layout.IMPORTANCE, index=False)
    if predictions and sweep.predictions:
        (path / layout.PREDICTIONS).mkdir(exist_ok=True)
        for key, df in sweep.predictions.items():
            df.to_parquet(path / layout.predictions_file(key), index=False)
    if spec:
        ks = sorted({float(x) for x in r["k_fraction"]} - {0.0})
        write_text(path / layout.SPEC, "\n".join([
            f"name: {name}", f"models: {json.dumps([{'name': m} for m in sorted(r['model'].unique())])}",
            f"strategies: {json.dumps(sorted(r['strategy'].unique()))}", f"k: {json.dumps(ks)}",
            f"seeds: {json.dumps(sorted(int(s) for s in r['seed'].unique()))}", ""]))
    return path


def make_sweep_dir(path, seed: int = 0, **kwargs) -> Path:
    """A complete synthetic sweep directory in one call (kwargs go to synthetic_sweep)."""
    write_opts = {k: kwargs.pop(k) for k in ("importance", "spec", "name") if k in kwargs}
    sweep = synthetic_sweep(np.random.default_rng(seed), **kwargs)
    return write_sweep(path, sweep, predictions=kwargs.get("predictions", True), **write_opts)
