"""Experiment tracking through Ray Tune's own logger callbacks: MLflow, TensorBoard, W&B.

``tracking: {mlflow: URI | true, tensorboard: true, wandb: {project: ...}}`` in the sweep file
(``orchestrator.sweep.TrackingSpec``). Every tracker gets one run per trial, named as Tune names
the trial, with the trial's spec as flat parameters (``model.name``, ``train.lr``, ...) and the
metrics it reports (accuracy, f1, loss, k, heads_kept). The callbacks run in the driver.

- MLflow ``true``: a file store in the sweep directory (``SWEEP_DIR/mlruns``), embedded, no
  server. MLflow 3 keeps that backend in maintenance mode and refuses it unless
  ``MLFLOW_ALLOW_FILE_STORE=true``, which is set for it here (an explicit URI, e.g. a database
  ``sqlite:///mlflow.db`` or a server ``http://...``, is used as given). For an object-store
  sweep (s3://) the store is kept on the driver's disk and copied into ``SWEEP_DIR/mlruns`` when
  each stage ends: MLflow's file store cannot write to S3 itself.
- TensorBoard: Tune's event files, beside each trial in ``SWEEP_DIR/ray/<run>/<stage>/<trial>/``;
  the spec goes in as hparams. ``tensorboard --logdir SWEEP_DIR/ray``.
- W&B: only when installed and configured (an API key, ``wandb login``, or ``WANDB_MODE=offline``).
"""
from __future__ import annotations

import hashlib
import importlib.util
import netrc
import os
from pathlib import Path

from headsweep.orchestrator.readers import Problems
from headsweep.orchestrator.storage import Store
from headsweep.orchestrator.sweep import TrackingSpec
from headsweep.trials import layout
from headsweep.trials.spec import to_dict

# tracker -> (module that must be importable, what to pip install)
NEEDS = {"mlflow": ("mlflow", "mlflow"), "tensorboard": ("tensorboardX", "tensorboardX"),
         "wandb": ("wandb", "wandb")}
ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"
# The driver-side copy of an object-store sweep's MLflow file store.
STAGING = Path(os.environ.get("HEADSWEEP_CACHE", Path.home() / ".cache" / "headsweep")) / layout.MLRUNS


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


def wandb_configured(options: dict) -> bool:
    """An API key (option, file, environment, ``wandb login``'s netrc entry) or an offline mode."""
    if options.get("api_key") or options.get("api_key_file") or os.environ.get("WANDB_API_KEY"):
        return True
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check(spec: TrackingSpec, p: Problems) -> None:
    """A tracker asked for but not installed (or W&B not configured): one line each, before
    anything is launched."""
    for name in asked(spec):
        module, pip = NEEDS[name]
        if importlib.util.find_spec(module) is None:
            value = (spec.mlflow or True) if name == "mlflow" else (spec.wandb or True) if name == "wandb" else True
            p.add(f"tracking.{name}", value, f"{module} is not installed; pip install {pip}, or remove the key")
        elif name == "wandb" and not wandb_configured(spec.wandb or {}):
            p.add("tracking.wandb", spec.wandb or True, "W&B is not configured; run `wandb login`, set "
                  "WANDB_API_KEY, or WANDB_MODE=offline")


def mlflow_uri(spec: TrackingSpec, store: Store) -> tuple[str, Path | None]:
    """(tracking URI, local store to copy into the sweep directory afterwards, or None)."""
    if spec.mlflow:
        return spec.mlflow, None
    os.environ.setdefault(ALLOW_FILE_STORE, "true")   # the documented opt-in to MLflow's file store
    if store.local is not None:
        return (store.local / layout.MLRUNS).as_uri(), None
    local = STAGING / hashlib.sha256(store.root.encode()).hexdigest()[:16]
    return local.as_uri(), local


def callbacks(spec: TrackingSpec, store: Store, experiment: str, params: dict[str, dict]) -> list:
    """Tune callbacks for the trackers asked for. ``params``: trial key -> that trial's flat spec,
    logged as the run's parameters (Tune's own config holds only the key)."""
    out = []
    if spec.mlflow is not None:
        out += _mlflow(spec, store, experiment, params)
    if spec.tensorboard:
        out.append(_tensorboard(params))
    if spec.wandb is not None:
        from ray.air.integrations.wandb import WandbLoggerCallback
        out.append(WandbLoggerCallback(**{"project": experiment, **spec.wandb}))
    return out


def _mlflow(spec: TrackingSpec, store: Store, experiment: str, params: dict) -> list:
    from mlflow.tracking import MlflowClient
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune import Callback
    uri, staged = mlflow_uri(spec, store)
    # Created here, in the thread that builds the Tuners: stage A's and stage B's callbacks set up
    # concurrently (stage B runs beside A) and would both try to create it.
    client = MlflowClient(uri)
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment)

    class SpecParams(MLflowLoggerCallback):
        def log_trial_start(self, trial):
            super().log_trial_start(trial)
            flat = params.get(trial.config.get("key"), {})
            self.mlflow_util.log_params(run_id=self._trial_runs[trial],
                                        params_to_log={k: _param(v) for k, v in flat.items()})

    out = [SpecParams(tracking_uri=uri, experiment_name=experiment, save_artifact=False)]
    if staged is not None:
        class Upload(Callback):
            def on_experiment_end(self, trials, **info):
                if staged.is_dir():
                    _upload_tree(store, staged, layout.MLRUNS)
        out.append(Upload())
    return out


def _upload_tree(store: Store, local: Path, rel: str) -> None:
    """Copy a local directory into the sweep directory, keeping the local one (put_dir moves)."""
    for path in sorted(local.rglob("*")):
        if path.is_file():
            store.write_bytes(f"{rel}/{path.relative_to(local).as_posix()}", path.read_bytes())


def _param(v):
    """MLflow and TensorBoard take scalars; lists, tuples and None as their text."""
    return v if isinstance(v, (str, bool, int, float)) else str(v)


def _tensorboard(params: dict):
    from ray.tune.logger import TBXLoggerCallback

    class SpecHparams(TBXLoggerCallback):
        """Tune's TensorBoard logger with the trial's spec as hparams (Tune would log only the
        key, and for stage B's searcher-made trials nothing)."""

        def log_trial_end(self, trial, failed: bool = False):
            if trial in self._trial_writer and self._trial_result.get(trial) and not trial.evaluated_params:
                self._try_log_hparams(trial, {k: v for k, v in self._trial_result[trial].items()
                                              if isinstance(v, (int, float)) and not isinstance(v, bool)})
            super().log_trial_end(trial, failed)

        def _try_log_hparams(self, trial, result):
            from tensorboardX.summary import hparams
            key = trial.config.get("key")
            flat = {"key": key, **{k: _param(v) for k, v in params.get(key, {}).items()}}
            for tag in hparams(hparam_dict=flat, metric_dict=result):
                self._trial_writer[trial].file_writer.add_summary(tag)

    return SpecHparams()
