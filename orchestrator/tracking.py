"""Experiment tracking through Ray Tune's own logger callbacks: MLflow, TensorBoard, W&B.

``tracking: {mlflow: URI | true, tensorboard: true, wandb: {project: ...}}`` in the sweep file
(``orchestrator.sweep.TrackingSpec``). MLflow defaults to a file store in the sweep directory
(embedded, no server); TensorBoard event files land beside each trial in ``SWEEP_DIR/ray/``.
"""
from __future__ import annotations

import importlib.util

from orchestrator.readers import Problems
from orchestrator.storage import Store
from orchestrator.sweep import TrackingSpec
from trials import layout
from trials.spec import to_dict

# tracker -> (module that must be importable, pip name)
NEEDS = {"mlflow": ("mlflow", "mlflow"), "tensorboard": ("tensorboardX", "tensorboardX"),
         "wandb": ("wandb", "wandb")}


def flat_params(spec) -> dict:
    """A trial spec as flat ``a.b.c: value`` parameters (what trackers show per run)."""
    out = {}

    def walk(prefix, v):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else k, x)
        else:
            out[prefix] = v
    walk("", to_dict(spec))
    return out


def asked(spec: TrackingSpec) -> list[str]:
    return [name for name, on in (("mlflow", spec.mlflow is not None), ("tensorboard", spec.tensorboard),
                                  ("wandb", spec.wandb is not None)) if on]


def check(spec: TrackingSpec, p: Problems) -> None:
    """A tracker asked for but not installed: one line, before anything is launched."""
    for name in asked(spec):
        module, pip = NEEDS[name]
        if importlib.util.find_spec(module) is None:
            p.add(f"tracking.{name}", True, f"{module} is not installed; pip install {pip}, or remove the key")


def callbacks(spec: TrackingSpec, store: Store, experiment: str, params: dict[str, dict]) -> list:
    """Tune callbacks for the trackers asked for. ``params``: trial key -> that trial's flat spec,
    logged as the run's parameters (Tune's own config holds only the key)."""
    out = []
    if spec.mlflow is not None:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        class SpecParams(MLflowLoggerCallback):
            def log_trial_start(self, trial):
                super().log_trial_start(trial)
                run_id = self._trial_runs[trial]
                self.mlflow_util.log_params(run_id=run_id, params_to_log=params.get(trial.config["key"], {}))

        uri = spec.mlflow or f"file://{store.path(layout.MLRUNS)}"
        out.append(SpecParams(tracking_uri=uri, experiment_name=experiment, save_artifact=False))
    if spec.tensorboard:
        from ray.tune.logger import TBXLoggerCallback
        out.append(TBXLoggerCallback())
    if spec.wandb is not None:
        from ray.air.integrations.wandb import WandbLoggerCallback
        out.append(WandbLoggerCallback(**{"project": experiment, **spec.wandb}))
    return out
