"""Read one sweep directory, or several, into tidy tables.

The sweep directory is the contract with the orchestrator (trials/layout.py): the results table,
importance.parquet and predictions/<trial_key>.parquet. Partial sweeps load on purpose (a
researcher looks at a sweep while it runs), with a note for whatever was left out. Input that
cannot be analysed raises ``trials.errors.UserError`` (one line, the CLI exits 2) before anything
is written: no sweep there, a results table without a required column, predictions for only some
of the trials, sweeps that cannot be combined (analysis/combine.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from headsweep.trials import atomic, layout
from headsweep.trials.errors import UserError
from headsweep.trials.schema import (CONDITION, CORRECTNESS_METRICS, IMPORTANCE_COLUMNS, METRIC_COLUMNS, METRIC_RANGES,
                           PREDICTION_COLUMNS)

REQUIRED = ["model", "strategy", "seed"]   # plus the sweep's metric column
# Strategies whose heads do not depend on an importance criterion: their rows serve every method.
METHOD_FREE = ("none", "random", "each-head")
# Strategies whose rows name one layer (layer-single-head) or one head (each-head: layer and head).
LAYER_STRATEGIES = ("layer-single-head", "each-head")


@dataclass
class Sweep:
    """One sweep or several combined: tidy tables plus a lazy, cached loader for predictions."""

    paths: list
    name: str
    results: pd.DataFrame
    importance: pd.DataFrame | None
    metric: str = "accuracy"
    notes: list[str] = field(default_factory=list)
    specs: list = field(default_factory=list)       # spec.yaml of each sweep (or None)
    _pred_dir: dict = field(default_factory=dict, repr=False)   # trial_key -> its sweep directory
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def path(self) -> Path:
        return self.paths[0]

    @property
    def has_predictions(self) -> bool:
        return any(_has_predictions(p) for p in self.paths)

    def predictions(self, trial_key) -> pd.DataFrame | None:
        """Per-example predictions of one results row, or None when there are none. Read on first
        use and cached: the per-example tests touch only the files they compare."""
        if trial_key is None or (isinstance(trial_key, float) and np.isnan(trial_key)):
            return None
        key = str(trial_key)
        if key not in self._cache:
            root = self._pred_dir.get(key, self.path)
            self._cache[key] = read_predictions(Path(root) / layout.predictions_file(key))
        return self._cache[key]

    __call__ = predictions  # a Sweep can be passed wherever a loader is expected


def _has_predictions(path: Path) -> bool:
    d = Path(path) / layout.PREDICTIONS
    return d.is_dir() and any(d.glob("*.parquet"))


def load(sweep_dirs) -> Sweep:
    """Load one sweep directory or a list of them (combined by analysis.combine)."""
    dirs = [sweep_dirs] if isinstance(sweep_dirs, (str, Path)) else list(sweep_dirs)
    if not dirs:
        raise UserError("sweep_dir", "", "give at least one sweep directory")
    sweeps = [load_one(d) for d in dirs]
    if len(sweeps) == 1:
        return sweeps[0]
    from .combine import combine

    return combine(sweeps)


def load_one(sweep_dir) -> Sweep:
    path = Path(sweep_dir).expanduser().resolve()
    if not path.is_dir():
        raise UserError("sweep_dir", str(sweep_dir), "no such directory")
    notes: list[str] = []
    spec = read_spec(path)
    raw = read_results(path)
    results, more = clean_results(raw, task=task_of(spec, raw))
    notes += more
    metric = sweep_metric(results)
    importance = None
    imp_path = path / layout.IMPORTANCE
    if imp_path.exists():
        importance, more = clean_importance(pd.read_parquet(imp_path))
        notes += more
        if importance is not None:
            importance["task"] = results["task"].iloc[0] if len(results) else ""
    else:
        notes.append(f"no {layout.IMPORTANCE}: importance heatmaps and rank stability skipped")
    name = str((spec or {}).get("name") or path.name)
    results["sweep"] = name
    sweep = Sweep(paths=[path], name=name, results=results, importance=importance, metric=metric, notes=notes,
                  specs=[spec], _pred_dir={str(k): path for k in results["trial_key"]})
    if not sweep.has_predictions and metric in CORRECTNESS_METRICS:
        notes.append(f"no {layout.PREDICTIONS}/ directory: per-example tests skipped")
    check_predictions(sweep)
    return sweep


def read_spec(path: Path) -> dict | None:
    """spec.yaml as a dict, or None when absent or unreadable (a half-written spec must not stop
    the analysis)."""
    spec = path / layout.SPEC
    if not spec.exists():
        return None
    try:
        import yaml

        out = yaml.safe_load(spec.read_text())
        return out if isinstance(out, dict) else None
    except Exception:
        return None


def task_of(spec: dict | None, raw: pd.DataFrame) -> str:
    """The task a sweep evaluates: its data.source (spec.yaml, else a row's resolved config)."""
    data = (spec or {}).get("data")
    if isinstance(data, dict) and data.get("source"):
        return str(data["source"])
    cfg = first_config(raw)
    return str((cfg.get("data") or {}).get("source") or "")


def first_config(raw: pd.DataFrame) -> dict:
    if "config" not in raw.columns:
        return {}
    for text in raw["config"].dropna():
        try:
            cfg = json.loads(text)
        except (TypeError, ValueError):
            continue
        if isinstance(cfg, dict):
            return cfg
    return {}


def read_results(path: Path) -> pd.DataFrame:
    """results.parquet, falling back to results.csv (same content by contract)."""
    pq, csv = path / layout.RESULTS, path / layout.RESULTS_CSV
    if pq.exists():
        try:
            return pd.read_parquet(pq)
        except Exception as err:
            if not csv.exists():
                raise UserError(layout.RESULTS, str(pq), f"cannot be read ({type(err).__name__})") from err
    if csv.exists():
        try:
            return pd.read_csv(csv)
        except Exception as err:
            raise UserError(layout.RESULTS_CSV, str(csv), f"cannot be read ({type(err).__name__})") from err
    raise UserError("sweep_dir", str(path), f"no {layout.RESULTS} or {layout.RESULTS_CSV} here: is it a sweep "
                                            "directory, and has the sweep evaluated any trial yet?")


def read_predictions(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    df = pd.read_parquet(path)
    if "correct" not in df.columns:
        df["correct"] = df["pred"] == df["label"]
    return df[["example_id", "correct"] + [c for c in PREDICTION_COLUMNS if c in df.columns and c not in
                                           ("example_id", "correct")]]


def check_predictions(sweep: Sweep) -> None:
    """Predictions for some trials but not others would silently bias the per-example tests
    (they would compare different subsets of seeds): refuse, naming one missing key."""
    if sweep.metric not in CORRECTNESS_METRICS or not sweep.has_predictions or sweep.results.empty:
        return
    missing = [k for k in sweep.results["trial_key"].astype(str)
               if not (Path(sweep._pred_dir.get(k, sweep.path)) / layout.predictions_file(k)).exists()]
    if missing:
        raise UserError(layout.PREDICTIONS, missing[0],
                        f"predictions missing for {len(missing)} of {len(sweep.results)} trials (first missing key "
                        "shown); re-run or resume the sweep so every trial writes them, or remove the folder to "
                        "analyse without per-example tests")


def sweep_metric(results: pd.DataFrame) -> str:
    if "metric" in results.columns and len(results):
        return str(results["metric"].iloc[0])
    return "accuracy"


def clean_results(raw: pd.DataFrame, task: str = "") -> tuple[pd.DataFrame, list[str]]:
    """Normalise a raw results table; returns (results, notes). Pure function.

    Raises UserError when a required column is missing. Drops rows whose primary metric is NaN
    (errored trials), fills columns older or partial tables lack, and fixes dtypes so grouping
    keys compare equal. Random-K draws stay separate rows (``draw``); analysis averages them
    within a seed (compare.collapse_draws)."""
    notes: list[str] = []
    df = raw.copy()
    missing = [c for c in REQUIRED if c not in df.columns]
    metrics = df["metric"].dropna().astype(str).unique() if "metric" in df.columns else np.array([])
    if len(metrics) > 1:
        raise UserError("metric", ", ".join(sorted(metrics)), "one sweep has one primary metric")
    metric = metrics[0] if len(metrics) else "accuracy"
    if metric not in METRIC_RANGES:
        raise UserError("metric", metric, f"unknown metric (known: {', '.join(METRIC_RANGES)})")
    if metric not in df.columns:
        missing.append(metric)
    if missing:
        raise UserError("results", ", ".join(missing), "the results table lacks required column(s)")
    df["metric"] = metric
    df[metric] = pd.to_numeric(df[metric], errors="coerce").astype(float)
    nan = df[metric].isna()
    if nan.any():
        notes.append(f"dropped {int(nan.sum())} trial(s) with a NaN {metric} (errored trials)")
        df = df[~nan].copy()
    defaults = {"arch": "multi-head", "arch_init": "", "recovery_epochs": 0.0, "per_layer": False, "k": 0,
                "trial_key": None, "importance_method": "gradient", "draw": np.nan, "layer": np.nan,
                "head": np.nan, "k_fraction": np.nan, "extra_evals": "{}"}
    for col, value in defaults.items():
        if col not in df.columns:
            df[col] = value
    if "variant" not in df.columns:
        df["variant"] = np.where(df["arch"] == "single-head", df["model"].astype(str) + "-1head",
                                 df["model"].astype(str))
    df["task"] = task if "task" not in df.columns else df["task"].fillna(task).astype(str)
    for col in ("model", "variant", "arch", "strategy"):
        df[col] = df[col].astype(str)
    df["arch_init"] = df["arch_init"].fillna("").astype(str)
    df["importance_method"] = df["importance_method"].fillna("gradient").astype(str)
    df["seed"] = df["seed"].astype(int)
    df["k"] = pd.to_numeric(df["k"], errors="coerce").fillna(0).astype(int)
    df["recovery_epochs"] = pd.to_numeric(df["recovery_epochs"], errors="coerce").fillna(0.0).astype(float)
    df["per_layer"] = df["per_layer"].fillna(False).astype(bool)
    df["draw"] = pd.to_numeric(df["draw"], errors="coerce").fillna(-1).astype(int)
    df["layer"] = pd.to_numeric(df["layer"], errors="coerce").fillna(-1).astype(int)
    df["head"] = pd.to_numeric(df["head"], errors="coerce").fillna(-1).astype(int)
    # Normalise what has no meaning for a strategy, so rows pair up across sweeps and methods:
    # per_layer without a K choice, the importance criterion where heads are not ranked, the layer
    # outside layer-single-head and each-head, the head outside each-head.
    df.loc[df["strategy"].isin(["none", "single-head", *LAYER_STRATEGIES]), "per_layer"] = False
    df.loc[df["strategy"] == "none", "k"] = 0
    df.loc[df["strategy"].isin(METHOD_FREE) | (df["arch"] == "single-head"), "importance_method"] = ""
    df.loc[~df["strategy"].isin(LAYER_STRATEGIES), "layer"] = -1
    df.loc[df["strategy"] != "each-head", "head"] = -1
    df.loc[df["strategy"] != "random", "draw"] = -1
    df["k_fraction"] = pd.to_numeric(df["k_fraction"], errors="coerce").astype(float)
    if df["k_fraction"].isna().any():
        if "heads_total" in df.columns:
            df["k_fraction"] = df["k_fraction"].fillna(df["k"] / pd.to_numeric(df["heads_total"], errors="coerce"))
        if df["k_fraction"].isna().any():
            notes.append("k_fraction missing and heads_total unknown for some rows: K shown as a head count there")
            df["k_fraction"] = df["k_fraction"].fillna(df["k"].astype(float))
    df.loc[df["strategy"] == "none", "k_fraction"] = 0.0
    for col in METRIC_COLUMNS:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    if "trial_key" in df.columns and df["trial_key"].isna().all():
        df["trial_key"] = None
    # A resumed sweep can evaluate the same trial twice; keep the latest row.
    dup = df.duplicated(CONDITION + ["seed", "draw"], keep="last")
    if dup.any():
        notes.append(f"dropped {int(dup.sum())} duplicate trial row(s) (same condition, seed and draw), kept the last")
        df = df[~dup]
    df = df.sort_values(["task", "model", "arch", "arch_init", "importance_method", "strategy", "per_layer", "k",
                         "layer", "head", "recovery_epochs", "seed", "draw"])
    return df.reset_index(drop=True), notes


def clean_importance(raw: pd.DataFrame) -> tuple[pd.DataFrame | None, list[str]]:
    """Normalise an importance table (model, seed, method, layer, head, score, score_raw)."""
    notes: list[str] = []
    missing = [c for c in IMPORTANCE_COLUMNS if c not in raw.columns
               and c not in ("score_raw", "method", "normalization")]
    if missing:
        return None, [f"{layout.IMPORTANCE} lacks column(s) {', '.join(missing)}: importance analysis skipped"]
    df = raw.copy()
    if "method" not in df.columns:  # sweeps from before importance methods were a choice
        df["method"] = "gradient"
    if "score_raw" not in df.columns:
        df["score_raw"] = df["score"]
    df["model"] = df["model"].astype(str)
    df["method"] = df["method"].fillna("gradient").astype(str)
    for col in ("seed", "layer", "head"):
        df[col] = df[col].astype(int)
    nan = df["score"].isna()
    if nan.any():
        notes.append(f"dropped {int(nan.sum())} importance row(s) with a NaN score")
        df = df[~nan]
    if df.empty:
        return None, notes + ["importance table is empty: importance analysis skipped"]
    return df.sort_values(["model", "method", "seed", "layer", "head"]).reset_index(drop=True), notes


# --- outputs: atomic, so a reader (or a crashed run) never sees half a file ----------

write_text = atomic.write_text


def write_csv(path, df: pd.DataFrame) -> Path:
    return atomic.atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def write_figure(path, fig, dpi: int = 150) -> Path:
    """Write ``fig`` in the format its suffix names (png at ``dpi``, or pdf)."""
    fmt = Path(path).suffix.lstrip(".")
    return atomic.atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))
