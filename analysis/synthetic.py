"""Synthetic sweeps with planted effects, for tests, demos and the orchestrator's tests.

    from headsweep.analysis.synthetic import make_sweep_dir
    make_sweep_dir("/tmp/fake-sweep", seed=0)          # a full sweep directory
    analysis.analyze("/tmp/fake-sweep")

The generative model is small but has the structure real sweeps have:
  metric = base + seed effect (shared by all trials of a model and seed, which is why pairing by
           seed helps) + planted strategy effect (x the criterion's quality) + trial noise
  per example: correct_i = U_i < accuracy, with U_i = Phi(rho z_i + sqrt(1-rho^2) e_i); z_i is a
           per-example difficulty shared by all trials of a model, so trials agree on easy and
           hard examples like real models do, and P(correct) is exactly the trial's accuracy.
Rows are built with trials.schema.result_row, with every column a real trial writes that the
analysis reads: metric, importance_method (oracle for layer-single-head keep: best), draw
(random_draws), layer (layer-single-head, each-head), head (each-head), step and spec_key
(iterative, a row at every grid K), arch_init, config (so head correspondence can be read),
extra_evals, attn_params_kept / params_pruned / speedup; spec.yaml with analysis.margin.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as st

from headsweep.trials import layout
from headsweep.trials.schema import CLASSIC_STRATEGIES, IMPORTANCE_COLUMNS, result_row

from .conditions import ORACLE
from .equivalence import DEFAULT_MARGIN
from .load import write_csv, write_text

DEFAULT_MODELS = {"gpt2": (4, 4), "distilbert": (3, 4)}  # label -> (layers, heads per layer)
HUB_NAMES = {"gpt2": "gpt2", "distilbert": "distilbert-base-uncased"}


def default_effect(model: str, strategy: str, k_fraction: float, recovery_epochs: float, arch: str) -> float:
    """Planted metric change: top hurts a lot, bottom barely, random in between; recovery
    fine-tuning shrinks the damage."""
    if arch == "single-head":
        return -0.10
    drop = {"none": 0.0, "top": -0.6 * k_fraction, "bottom": -0.02 * k_fraction, "random": -0.25 * k_fraction,
            "iterative": -0.015 * k_fraction, "single-head": -0.15, "layer-single-head": -0.03,
            "each-head": 0.0}.get(strategy, 0.0)
    return drop / (1.0 + recovery_epochs)


def null_effect(*_args) -> float:
    """No strategy changes anything: every comparison is a true null."""
    return 0.0


@dataclass
class SyntheticSweep:
    results: pd.DataFrame
    importance: pd.DataFrame
    predictions: dict = field(default_factory=dict)  # trial_key -> DataFrame


def _importance(rng, model: str, n_layers: int, n_heads: int, seeds, methods) -> tuple[pd.DataFrame, np.ndarray]:
    """The importance table, and the true importance mu [layers, heads] every seed's scores scatter
    around (the each-head damage and the oracle's best head follow it)."""
    mu = rng.gamma(2.0, 1.0, size=(n_layers, n_heads))
    mu[0, 0] = 30.0    # planted: always among the most important heads (even per-layer normalised)
    mu[-1, -1] = 0.02  # planted: always among the least important
    rows = []
    for s in seeds:
        base = mu * np.exp(rng.normal(0, 0.25, size=mu.shape))
        for i, method in enumerate(methods):
            raw = base if i == 0 else base * np.exp(rng.normal(0, 0.35, size=mu.shape))   # criteria correlate
            norm = raw / np.linalg.norm(raw, axis=1, keepdims=True)
            for layer in range(n_layers):
                for head in range(n_heads):
                    rows.append({"model": model, "seed": int(s), "method": method, "normalization": "layer_l2",
                                 "layer": layer, "head": head,
                                 "score": float(norm[layer, head]), "score_raw": float(raw[layer, head])})
    return pd.DataFrame(rows, columns=IMPORTANCE_COLUMNS), mu


def iterative_ks(grid, total: int, step: float) -> list[int]:
    """The K of iterative's rows: steps of at most round(step * total) heads (at least 1) that stop
    at every grid K, then two further steps past the largest (as the trial side writes them)."""
    size = max(1, int(round(step * total)))
    out, cur = [], 0
    for g in sorted(set(grid)):
        while cur < g:
            cur = min(cur + size, g)
            out.append(cur)
    for _ in range(2):
        if cur < total:
            cur = min(cur + size, total)
            out.append(cur)
    return out


def _removed(rng, strategy: str, k: int, scores: np.ndarray, layer: int = -1) -> list:
    n_layers, n_heads = scores.shape
    order = np.argsort(-scores, axis=None, kind="stable")  # most important first
    pairs = [divmod(int(i), n_heads) for i in order]
    if strategy == "top":
        out = pairs[:k]
    elif strategy in ("bottom", "iterative"):
        out = pairs[len(pairs) - k:]
    elif strategy == "random":
        out = [pairs[i] for i in rng.choice(len(pairs), size=k, replace=False)]
    elif strategy == "single-head":
        keep = scores.argmax(axis=1)
        out = [(l, h) for l in range(n_layers) for h in range(n_heads) if h != keep[l]]
    elif strategy == "layer-single-head":
        keep = int(scores[layer].argmax())
        out = [(layer, h) for h in range(n_heads) if h != keep]
    elif strategy == "each-head":
        out = [divmod(k, n_heads)]   # k here is the head's flat index
    else:
        out = []
    return sorted([int(l), int(h)] for l, h in out)


def _grid(strategies, k_fractions, recovery_epochs, total, n_layers, n_heads, methods, draws, single_head_arch,
          baseline_per_recovery, iterative_step=0.1, oracle=True):
    """(strategy, k, recovery, arch, method, draw, layer, step) for one model and seed. each-head:
    k is the head's flat index until the row is built (k = 1 there); iterative: step 1, 2, ..."""
    out = []
    grid_k = [int(round(f * total)) for f in k_fractions]
    for strat in strategies:
        if strat == "none":
            recs = recovery_epochs if baseline_per_recovery else (0.0,)
            out += [(strat, 0, float(r), "multi-head", "", -1, -1, -1) for r in recs]
        elif strat == "single-head":
            out += [(strat, total - n_layers, float(r), "multi-head", m, -1, -1, -1) for r in recovery_epochs
                    for m in methods]
        elif strat == "layer-single-head":   # keep: ranked per criterion, and keep: best (the oracle)
            out += [(strat, n_heads - 1, float(r), "multi-head", m, -1, layer, -1) for r in recovery_epochs
                    for m in methods + ((ORACLE,) if oracle else ()) for layer in range(n_layers)]
        elif strat == "each-head":
            out += [(strat, i, float(r), "multi-head", "", -1, i // n_heads, -1) for r in recovery_epochs
                    for i in range(total)]
        elif strat == "random":
            out += [(strat, k, float(r), "multi-head", "", d, -1, -1) for k in grid_k
                    for r in recovery_epochs for d in range(draws)]
        elif strat == "iterative":
            out += [(strat, k, float(r), "multi-head", m, -1, -1, i + 1) for r in recovery_epochs for m in methods
                    for i, k in enumerate(iterative_ks(grid_k, total, iterative_step))]
        else:
            out += [(strat, k, float(r), "multi-head", m, -1, -1, -1) for k in grid_k
                    for r in recovery_epochs for m in methods]
    if single_head_arch:
        out.append(("none", 0, 0.0, "single-head", "", -1, -1, -1))
    return out


def _metric_values(metric: str, p: float, correct, labels, pred) -> dict:
    acc = float(correct.mean()) if correct is not None else p
    vals = {"accuracy": acc, "loss": float(-np.log(max(acc, 1e-3)))}
    if pred is not None:
        tp = np.sum((pred == 1) & (labels == 1))
        vals["f1"] = float(2 * tp / max(1, np.sum(pred == 1) + np.sum(labels == 1)))
    else:
        vals["f1"] = p - 0.01
    vals["mcc"] = float(np.clip(2 * acc - 1, -1, 1))      # a binary task with balanced errors
    if metric in ("pearson", "spearman"):
        vals[metric] = float(np.clip(2 * p - 1, -1, 1))
    return vals


def synthetic_sweep(rng: np.random.Generator, *, models: dict | None = None, strategies=CLASSIC_STRATEGIES,
                    k_fractions=(0.25, 0.5), seeds=(0, 1, 2, 3, 4), recovery_epochs=(0,),
                    single_head_arch: bool = True, effect=default_effect, base_accuracy: float = 0.85,
                    seed_sd: float = 0.01, trial_sd: float = 0.005, n_eval: int = 300,
                    difficulty_corr: float = 0.7, predictions: bool = True, metric: str = "accuracy",
                    methods=("gradient",), method_quality: dict | None = None, random_draws: int = 1,
                    draw_sd: float = 0.01, arch_init: str = "pretrained", model_names: dict | None = None,
                    baseline_per_recovery: bool = True, task: str = "synthetic", extra_evals: bool = False,
                    efficiency: bool = False, iterative_step: float = 0.1, oracle: bool = True,
                    head_effect: float = 0.05) -> SyntheticSweep:
    """Generate results (+ importance, + per-example predictions) with planted effects.

    method_quality scales the planted top-K effect per criterion (1 = as planted); model_names
    gives each label's models[].name (default: hub ids, whose weights every seed shares).
    iterative: a row at every grid K and two further steps (``iterative_step``); its first step
    removes bottom-K's heads and copies bottom's row (identical by construction). layer-single-head
    with ``oracle``: also rows with importance_method "oracle" (keep: best), which keep the truly
    best head and lose half as much. each-head: every head alone, damage ``head_effect`` x its true
    importance / the largest (plus ``effect``'s value for each-head)."""
    models = DEFAULT_MODELS if models is None else models
    names = {**{m: HUB_NAMES.get(m, m) for m in models}, **(model_names or {})}
    quality = {m: 1.0 for m in methods} | (method_quality or {})
    rows, imps, preds = [], [], {}
    rho = difficulty_corr
    for model, (n_layers, n_heads) in models.items():
        total = n_layers * n_heads
        imp, mu = _importance(rng, model, n_layers, n_heads, seeds, methods)
        imps.append(imp)
        z = rng.normal(size=n_eval)   # per-example difficulty, shared by all trials of this model
        labels = rng.integers(0, 2, size=n_eval)
        seed_eff = {s: rng.normal(0, seed_sd) for s in seeds}
        score_of = {(s, m): g.sort_values(["layer", "head"])["score"].to_numpy().reshape(n_layers, n_heads)
                    for (s, m), g in imp.groupby(["seed", "method"])}
        grid = _grid(strategies, k_fractions, recovery_epochs, total, n_layers, n_heads, methods, random_draws,
                     single_head_arch, baseline_per_recovery, iterative_step, oracle)
        for s in seeds:
            made = {}   # (strategy, k, rec, method) -> (p, predictions, key) of this seed
            for strat, k, rec, arch, method, draw, layer, step in grid:
                heads = n_layers if arch == "single-head" else total
                variant = f"{model}-1head" if arch == "single-head" else model
                head = -1
                if strat == "each-head":
                    layer, head, flat = k // n_heads, k % n_heads, k
                    k = 1
                ranking = mu if method == ORACLE else score_of[(s, method or methods[0])]
                removed = ([] if arch == "single-head" else [[layer, head]] if strat == "each-head"
                           else _removed(rng, strat, k, ranking, layer))
                eff = effect(model, strat, k / total, rec, arch)
                if strat == "top":
                    eff *= quality.get(method, 1.0)
                if strat == "layer-single-head":
                    eff *= (layer + 1) / n_layers * (0.5 if method == ORACLE else 1.0)
                if strat == "each-head":
                    eff -= head_effect * mu.flat[flat] / mu.max()
                noise = rng.normal(0, trial_sd) + (rng.normal(0, draw_sd) if strat == "random" and random_draws > 1
                                                   else 0.0)
                p = float(np.clip(base_accuracy + seed_eff[s] + eff + noise, 0.01, 0.99))
                spec_key = f"{variant}__{strat}__k{k}__r{rec:g}__s{s}__{method}__l{layer}__h{head}__d{draw}"
                if strat == "iterative":
                    spec_key = f"{variant}__iterative__r{rec:g}__s{s}__{method}"
                key = spec_key if strat != "iterative" else f"{spec_key}__k{k}"
                same = made.get(("bottom", k, rec, method)) if strat == "iterative" and step == 1 else None
                correct = pred = None
                if same is not None:   # iterative's first step is bottom-K: the same heads, the same model
                    p = same[0]
                    if same[1] is not None:
                        preds[key] = same[1]
                        correct, pred = same[1]["correct"].to_numpy(), same[1]["pred"].to_numpy()
                elif predictions:
                    u = st.norm.cdf(rho * z + np.sqrt(1 - rho**2) * rng.normal(size=n_eval))
                    correct = u < p
                    pred = np.where(correct, labels, 1 - labels)
                    preds[key] = pd.DataFrame({"example_id": np.arange(n_eval), "label": labels, "pred": pred,
                                               "correct": correct, "prob": rng.uniform(0.5, 1.0, n_eval)})
                made[(strat, k, rec, method)] = (p, preds.get(key) if predictions else None)
                vals = _metric_values(metric, p, correct, labels, pred)
                cfg = {"model": {"name": names[model], "label": model, "tokenizer": None,
                                 "single_head": arch_init if arch == "single-head" else None, "scratch": False},
                       "data": {"source": task}, "seed": int(s)}
                extra = {}
                if extra_evals:
                    extra["extra_evals"] = json.dumps({"validation_mismatched": {
                        metric: float(np.clip(vals.get(metric, p) - 0.01 + rng.normal(0, 0.005), 0, 1))}})
                if efficiency and arch != "single-head":
                    per_head = 4 * 64 * 16
                    extra.update(attn_params_kept=(heads - len(removed)) * per_head, params_total=100_000,
                                 params_pruned=100_000 - len(removed) * per_head,
                                 speedup=float(1 + 0.6 * len(removed) / total + rng.normal(0, 0.02)))
                # Built by the same schema as a real trial's row (trials/schema.py).
                rows.append(result_row(
                    model=model, arch=arch, variant=variant, strategy=strat, k=k, k_fraction=k / total,
                    per_layer=False, seed=int(s), recovery_epochs=rec, n_eval=n_eval, heads_total=heads,
                    heads_kept=heads - len(removed), heads_removed=json.dumps(removed), trial_key=key,
                    spec_key=spec_key, k_requested=json.dumps(k), stage="A" if strat == "none" and rec == 0 else "B",
                    metric=metric, importance_method=method or methods[0],
                    draw=draw if strat == "random" else None, layer=layer if layer >= 0 else None,
                    head=head if head >= 0 else None, step=step if step > 0 else None,
                    arch_init=arch_init if arch == "single-head" else "", config=json.dumps(cfg),
                    eval_split="validation", **{m: vals[m] for m in ("accuracy", "f1", "mcc", "loss")},
                    **({metric: vals[metric]} if metric in ("pearson", "spearman") else {}), **extra))
    importance = pd.concat(imps, ignore_index=True)[IMPORTANCE_COLUMNS]
    return SyntheticSweep(results=pd.DataFrame(rows), importance=importance, predictions=preds)


def write_sweep(path, sweep: SyntheticSweep, *, predictions: bool = True, importance: bool = True,
                spec: bool = True, name: str = "synthetic", task: str = "synthetic",
                margin: float | None = DEFAULT_MARGIN) -> Path:
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
        names = {m: json.loads(c)["model"]["name"] for m, c in zip(r["model"], r["config"]) if isinstance(c, str)}
        models = [{"name": names.get(m, HUB_NAMES.get(m, m)), "label": m} for m in sorted(r["model"].unique())]
        write_text(path / layout.SPEC, "\n".join([
            f"name: {name}", f"models: {json.dumps(models)}", f"data: {json.dumps({'source': task})}",
            f"finetune: {json.dumps({'epochs': 3, 'lr': 2e-5})}",
            f"strategies: {json.dumps(sorted(r['strategy'].unique()))}", f"k: {json.dumps(ks)}",
            f"seeds: {json.dumps(sorted(int(s) for s in r['seed'].unique()))}",
            *([f"analysis: {json.dumps({'margin': margin})}"] if margin is not None else []), ""]))
    return path


def make_sweep_dir(path, seed: int = 0, **kwargs) -> Path:
    """A complete synthetic sweep directory in one call (kwargs go to synthetic_sweep)."""
    write_opts = {k: kwargs.pop(k) for k in ("importance", "spec", "name", "margin") if k in kwargs}
    sweep = synthetic_sweep(np.random.default_rng(seed), **kwargs)
    return write_sweep(path, sweep, predictions=kwargs.get("predictions", True), task=kwargs.get("task", "synthetic"),
                       **write_opts)
