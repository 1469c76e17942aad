"""Read a sweep directory into tidy tables.

The sweep directory is the contract with the orchestrator (see docs/analysis.md):
results.parquet (or results.csv), importance.parquet, predictions/<trial_key>.parquet.
Everything here is forgiving on purpose: a sweep that is still running, crashed
trials, or a sweep without predictions/importance must still load, with a note
saying what was left out, because a researcher wants to look at partial results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from trials import atomic, layout
from trials.schema import CONDITION, IMPORTANCE_COLUMNS, METRIC_COLUMNS, PREDICTION_COLUMNS

REQUIRED = ["model", "strategy", "seed", "accuracy"]


@dataclass
class Sweep:
    """A loaded sweep: tidy tables plus a lazy, cached loader for predictions."""

    path: Path
    name: str
    results: pd.DataFrame
    importance: pd.DataFrame | None
    notes: list[str] = field(default_factory=list)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def predictions_dir(self) -> Path:
        return self.path / layout.PREDICTIONS

    @property
    def has_predictions(self) -> bool:
        return self.predictions_dir.is_dir() and any(self.predictions_dir.glob("*.parquet"))

    def predictions(self, trial_key) -> pd.DataFrame | None:
        """Per-example predictions of one trial, or None when the file is missing.

        Read on first use and cached: a big sweep has hundreds of these files and
        the per-example tests only touch the ones they compare.
        """
        if trial_key is None or (isinstance(trial_key, float) and np.isnan(trial_key)):
            return None
        key = str(trial_key)
        if key not in self._cache:
            self._cache[key] = read_predictions(self.path / layout.predictions_file(key))
        return self._cache[key]

    __call__ = predictions  # so a Sweep can be passed wherever a loader is expected


def load(sweep_dir) -> Sweep:
    """Load a sweep directory: cleaned results, importance (or None), lazy predictions."""
    path = Path(sweep_dir).expanduser().resolve()
    notes: list[str] = []
    raw = read_results(path)
    results, more = clean_results(raw)
    notes += more
    importance = None
    imp_path = path / layout.IMPORTANCE
    if imp_path.exists():
        importance, more = clean_importance(pd.read_parquet(imp_path))
        notes += more
    else:
        notes.append(f"no {layout.IMPORTANCE}: importance heatmaps and rank stability skipped")
    sweep = Sweep(path=path, name=sweep_name(path), results=results, importance=importance, notes=notes)
    if not sweep.has_predictions:
        notes.append(f"no {layout.PREDICTIONS}/ directory: per-example tests (McNemar, bootstrap) skipped")
    return sweep


def sweep_name(path: Path) -> str:
    """The spec's name if spec.yaml is readable, else the directory name."""
    spec = path / layout.SPEC
    if spec.exists():
        try:
            import yaml

            name = (yaml.safe_load(spec.read_text()) or {}).get("name")
            if name:
                return str(name)
        except Exception:  # a half-written spec must not stop the analysis
            pass
    return path.name


def read_results(path: Path) -> pd.DataFrame:
    """results.parquet, falling back to results.csv (same content by contract)."""
    pq, csv = path / layout.RESULTS, path / layout.RESULTS_CSV
    if pq.exists():
        try:
            return pd.read_parquet(pq)
        except Exception:
            if not csv.exists():
                raise
    if csv.exists():
        return pd.read_csv(csv)
    raise FileNotFoundError(f"{path}: no {layout.RESULTS} or {layout.RESULTS_CSV} (has the sweep evaluated any "
                            "trial yet?)")


def read_predictions(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    df = pd.read_parquet(path)
    if "correct" not in df.columns:
        df["correct"] = df["pred"] == df["label"]
    return df[["example_id", "correct"] + [c for c in PREDICTION_COLUMNS if c in df.columns and c not in
                                           ("example_id", "correct")]]


def clean_results(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Normalise a raw results table; returns (results, notes). Pure function.

    Drops rows with a NaN accuracy (errored trials), fills columns older or partial
    tables may lack, and fixes dtypes so grouping keys compare equal.
    """
    notes: list[str] = []
    df = raw.copy()
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"results table lacks required column(s): {', '.join(missing)}")
    nan = df["accuracy"].isna()
    if nan.any():
        notes.append(f"dropped {int(nan.sum())} trial(s) with a NaN accuracy (errored trials)")
        df = df[~nan]

    # Defaults for columns the contract marks as extras.
    if "arch" not in df.columns:
        df["arch"] = "multi-head"
    if "variant" not in df.columns:
        df["variant"] = np.where(df["arch"] == "single-head", df["model"].astype(str) + "-1head", df["model"].astype(str))
    if "recovery_epochs" not in df.columns:
        df["recovery_epochs"] = 0.0
    if "per_layer" not in df.columns:
        df["per_layer"] = False
    if "k" not in df.columns:
        df["k"] = 0
    if "trial_key" not in df.columns:
        df["trial_key"] = None
    for col in ("model", "variant", "arch", "strategy"):
        df[col] = df[col].astype(str)
    df["seed"] = df["seed"].astype(int)
    df["k"] = pd.to_numeric(df["k"], errors="coerce").fillna(0).astype(int)
    df["recovery_epochs"] = pd.to_numeric(df["recovery_epochs"], errors="coerce").fillna(0.0).astype(float)
    df["per_layer"] = df["per_layer"].fillna(False).astype(bool)
    # per_layer has no meaning without a K (baseline) or for single-head (one head
    # per layer by definition); normalising it lets these rows pair up across sweeps.
    df.loc[df["strategy"].isin(["none", "single-head"]), "per_layer"] = False
    df.loc[df["strategy"] == "none", "k"] = 0
    if "k_fraction" not in df.columns:
        df["k_fraction"] = np.nan
    df["k_fraction"] = pd.to_numeric(df["k_fraction"], errors="coerce").astype(float)
    if df["k_fraction"].isna().any():
        if "heads_total" in df.columns:
            df["k_fraction"] = df["k_fraction"].fillna(df["k"] / df["heads_total"].astype(float))
        if df["k_fraction"].isna().any():
            notes.append("k_fraction missing and heads_total unknown for some rows: K shown as a head count there")
            df["k_fraction"] = df["k_fraction"].fillna(df["k"].astype(float))
    for col in METRIC_COLUMNS:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)

    # A resumed sweep can evaluate the same trial twice; keep the latest row.
    dup = df.duplicated(CONDITION + ["seed"], keep="last")
    if dup.any():
        notes.append(f"dropped {int(dup.sum())} duplicate trial row(s) (same condition and seed), kept the last")
        df = df[~dup]
    df = df.sort_values(["model", "arch", "strategy", "per_layer", "k", "recovery_epochs", "seed"])
    return df.reset_index(drop=True), notes


def clean_importance(raw: pd.DataFrame) -> tuple[pd.DataFrame | None, list[str]]:
    """Normalise an importance table (model, seed, layer, head, score, score_raw)."""
    notes: list[str] = []
    missing = [c for c in IMPORTANCE_COLUMNS if c not in raw.columns and c not in ("score_raw", "method")]
    if missing:
        return None, [f"{layout.IMPORTANCE} lacks column(s) {', '.join(missing)}: importance analysis skipped"]
    df = raw.copy()
    if "method" not in df.columns:  # sweeps from before importance methods were a choice
        df["method"] = "gradient"
    if "score_raw" not in df.columns:
        df["score_raw"] = df["score"]
    df["model"] = df["model"].astype(str)
    for col in ("seed", "layer", "head"):
        df[col] = df[col].astype(int)
    nan = df["score"].isna()
    if nan.any():
        notes.append(f"dropped {int(nan.sum())} importance row(s) with a NaN score")
        df = df[~nan]
    if df.empty:
        return None, notes + ["importance table is empty: importance analysis skipped"]
    return df.sort_values(["model", "seed", "layer", "head"]).reset_index(drop=True), notes


# --- outputs: atomic, so a reader (or a crashed run) never sees half a file ----------

write_text = atomic.write_text


def write_csv(path, df: pd.DataFrame) -> Path:
    return atomic.atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def write_figure(path, fig, dpi: int = 110) -> Path:
    """Write ``fig`` in the format its suffix names (png, pdf)."""
    fmt = Path(path).suffix.lstrip(".")
    return atomic.atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))
