"""A trial's outputs: its results rows (trials/schema.py), its importance table, and the files
(names: trials/layout.py) ``trials.run`` writes."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from headsweep.trials import atomic, layout, provenance
from headsweep.trials.importance import normalization, ranking_scores
from headsweep.trials.schema import METRIC_COLUMNS, TRIAL_IMPORTANCE_COLUMNS, result_row
from headsweep.trials.spec import PruneSpec, row_key, to_dict


def make_row(spec, heads, removed, metrics: dict, extra: dict, discriminator: str | None = None) -> dict:
    """The results row of a trial, or of one of its rows (``discriminator``: "layer3", "step2"):
    ``heads`` is the model's HeadLayout in the trial's unit and ``removed`` its (layer, unit)
    pairs (k counts units; heads_* count query heads), ``metrics`` what ``train.evaluate``
    returned."""
    ft = spec.finetune if isinstance(spec, PruneSpec) else spec
    total = heads.total
    query = heads.query_heads_of(removed)
    key = spec.key if discriminator is None else row_key(spec, discriminator)
    return result_row(
        model=ft.model.label, arch=ft.model.arch, variant=ft.model.variant, arch_init=ft.model.init,
        strategy=getattr(spec, "strategy", "none"),
        k=len(removed), k_fraction=len(removed) / total,
        k_requested=json.dumps(getattr(spec, "k", 0)),
        per_layer=bool(getattr(spec, "per_layer", False)),
        seed=ft.seed, recovery_epochs=float(getattr(spec, "recovery_epochs", 0)),
        **{k: metrics.get(k) for k in METRIC_COLUMNS}, n_eval=metrics["n_eval"],
        metric=ft.metric, eval_split=ft.data.eval,
        heads_total=heads.query_total, heads_kept=heads.query_total - len(query),
        heads_removed=json.dumps([list(h) for h in query]),
        groups_removed=json.dumps([list(g) for g in heads.groups_removed(query)]), unit=heads.unit,
        trial_key=key, spec_key=spec.key, stage_a_key=ft.key, stage=spec.stage,
        eval_seconds=metrics.get("eval_seconds", 0.0),
        config=json.dumps(to_dict(spec), sort_keys=True),
        **provenance.info(), **extra,
    )


def extra_evals_json(evals: dict[str, dict]) -> str:
    """``{split: {metric: value}}`` of the further evaluations (metrics, loss, n_eval)."""
    keep = (*METRIC_COLUMNS, "n_eval")
    return json.dumps({split: {k: m[k] for k in keep if m.get(k) is not None} for split, m in evals.items()},
                      sort_keys=True)


def importance_frame(raw: torch.Tensor, method: str, normalize: str = "auto") -> pd.DataFrame:
    """One trial's importance table (TRIAL_IMPORTANCE_COLUMNS) for one method: ``score_raw`` as
    the method gives it, ``score`` the ranking score, in the ``normalization`` the method is
    ranked in (``importance.normalize``; auto: the method's own) and signed so that higher = more
    important for every method (entropy's scores are negative)."""
    how = normalization(method, normalize)
    score = ranking_scores(raw, method, how)
    n_layers, n_heads = raw.shape
    return pd.DataFrame({
        "method": method, "normalization": how,
        "layer": [l for l in range(n_layers) for _ in range(n_heads)],
        "head": [h for _ in range(n_layers) for h in range(n_heads)],
        "score": score.reshape(-1).numpy(), "score_raw": raw.reshape(-1).numpy(),
    })[TRIAL_IMPORTANCE_COLUMNS]


def load_scores(checkpoint_dir: Path, method: str | None = None, normalize: str = "auto") -> torch.Tensor:
    """[n_layers, n_heads] ranking scores (higher = more important) of ``method`` (default: the
    only or first one) saved beside the checkpoint, in the normalisation ``normalize`` resolves
    to for it: the saved ``score`` where it was saved in that form, else ``score_raw`` put in it."""
    imp = pd.read_parquet(Path(checkpoint_dir) / layout.CKPT_IMPORTANCE)
    method = method or (imp["method"].iloc[0] if "method" in imp.columns else "gradient")
    if "method" in imp.columns:
        imp = imp[imp["method"] == method]
        if imp.empty:
            raise ValueError(f"{checkpoint_dir} has no importance scores of method {method!r}")
    how = normalization(method, normalize)
    saved = "normalization" in imp.columns and (imp["normalization"] == how).all()
    grid = imp.pivot(index="layer", columns="head", values="score" if saved else "score_raw")
    scores = torch.tensor(grid.sort_index().sort_index(axis=1).to_numpy(dtype="float64", copy=True))
    return scores if saved else ranking_scores(scores, method, how)       # [n_layers, n_heads]


def write_outputs(out_dir: Path, rows_and_predictions: list[tuple[dict, pd.DataFrame]]) -> list[dict]:
    """Each row's predictions, then ``result.json`` last (its presence means the trial is done)."""
    for row, preds in rows_and_predictions:
        atomic.write_parquet(Path(out_dir) / layout.predictions_file(row["trial_key"]), preds)
    rows = [row for row, _ in rows_and_predictions]
    atomic.write_json(Path(out_dir) / layout.RESULT, {"rows": rows})
    return rows
