"""Experiment tracking through Ray Tune's callbacks (orchestrator/tracking.py).

A real Ray Tune experiment whose trainable reports what ``orchestrator.worker.trainable``
reports, with headsweep's callbacks; then MLflow's file store is read back with MLflow's own
client and the TensorBoard event files with TensorBoard's event reader. The expected parameters
are the trial specs flattened independently (pandas.json_normalize); the expected metrics are
computed from the trial key.
"""
import copy

import pandas as pd
import pytest

from headsweep.orchestrator import tracking
from headsweep.orchestrator.grid import stage_a
from headsweep.orchestrator.plan import read_sweep
from headsweep.orchestrator.storage import Store
from headsweep.orchestrator.sweep import TrackingSpec
from headsweep.trials import layout
from headsweep.trials.spec import to_dict

mlflow = pytest.importorskip("mlflow", reason="mlflow (dev extra) not installed")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="tensorboard (dev extra) not installed")


def metrics_of(key: str) -> dict:
    """What the fake trainable reports for a trial (a function of its key only)."""
    return {"accuracy": int(key[:2], 16) / 255, "f1": int(key[2:4], 16) / 255, "loss": int(key[4:6], 16) / 100,
            "k": 0, "heads_kept": 16}


def report_like_a_trial(config):
    from ray import tune
    tune.report(metrics_of(config["key"]) | {"trial_key": config["key"], "rows": 1})


def expected_params(spec) -> dict:
    flat = pd.json_normalize(to_dict(spec), sep=".").iloc[0].to_dict()
    return {k: str(v) for k, v in flat.items()}


@pytest.fixture(scope="module")
def tracked(ray_session, small_template, tmp_path_factory):
    """Two stage-A trials of the small sweep run through a Tuner with MLflow and TensorBoard on."""
    from ray import tune
    raw = copy.deepcopy(small_template)
    raw["single_head_arch"] = False
    specs = stage_a(read_sweep(raw))
    assert len(specs) == 2
    root = tmp_path_factory.mktemp("tracked") / "sweep"
    store = Store(root)
    params = {s.key: tracking.flat_params(s) for s in specs}
    cbs = tracking.callbacks(TrackingSpec(mlflow="", tensorboard=True), store, "tracked-exp", params)
    tune.Tuner(
        report_like_a_trial,
        param_space={"key": tune.grid_search([s.key for s in specs])},
        run_config=tune.RunConfig(name="stage_a", storage_path=str(root / layout.ray_run("run1")),
                                  callbacks=cbs, verbose=0),
    ).fit()
    return {"root": root, "specs": specs}


def test_mlflow_file_store_has_one_run_per_trial_with_spec_and_metrics(tracked):
    from mlflow.tracking import MlflowClient
    root, specs = tracked["root"], tracked["specs"]
    assert (root / layout.MLRUNS).is_dir(), "the file store is not in the sweep directory"
    client = MlflowClient((root / layout.MLRUNS).as_uri())
    exp = client.get_experiment_by_name("tracked-exp")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == len(specs)
    by_key = {r.data.params["key"]: r for r in runs}
    assert set(by_key) == {s.key for s in specs}
    for s in specs:
        run = by_key[s.key]
        want = expected_params(s)
        got = {k: v for k, v in run.data.params.items() if k != "key"}
        assert got == want
        assert run.data.params["model.name"] == "preset:tiny-distilbert"
        for name, value in metrics_of(s.key).items():
            assert run.data.metrics[name] == pytest.approx(value)
        assert run.info.status == "FINISHED"


def _events(root):
    files = sorted((root / layout.RAY).rglob("events.out.tfevents.*"))
    out = []
    for f in files:
        acc = event_accumulator.EventAccumulator(str(f), size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        out.append(acc)
    return files, out


def test_tensorboard_event_files_in_the_sweep_dir_with_metrics_and_spec(tracked):
    from tensorboard.plugins.hparams import plugin_data_pb2
    root, specs = tracked["root"], tracked["specs"]
    files, accs = _events(root)
    assert len(files) == len(specs), files
    seen = {}
    for acc in accs:
        content = acc.PluginTagToContent("hparams")
        start = [plugin_data_pb2.HParamsPluginData.FromString(c) for c in content.values()]
        hp = next(d.session_start_info.hparams for d in start if d.HasField("session_start_info"))
        key = hp["key"].string_value
        seen[key] = acc
        spec = next(s for s in specs if s.key == key)
        for name, value in expected_params(spec).items():
            field = hp[name]
            shown = field.string_value if field.HasField("string_value") else (
                str(field.bool_value) if field.HasField("bool_value") else field.number_value)
            if isinstance(shown, float):
                assert shown == pytest.approx(float(value)), name
            else:
                assert shown == value, name
        accuracy = acc.Scalars("ray/tune/accuracy")
        assert [e.value for e in accuracy] == [pytest.approx(metrics_of(key)["accuracy"], abs=1e-6)]
    assert set(seen) == {s.key for s in specs}


def test_object_store_sweep_stages_mlflow_locally(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "STAGING", tmp_path / "staging")
    store = Store("s3://bucket/sweeps/x?endpoint_override=127.0.0.1:1&scheme=http")
    uri, staged = tracking.mlflow_uri(TrackingSpec(mlflow=""), store)
    assert staged is not None and staged.parent == tmp_path / "staging" and uri == staged.as_uri()
    local_uri, none = tracking.mlflow_uri(TrackingSpec(mlflow=""), Store(tmp_path / "sweep"))
    assert none is None and local_uri == (tmp_path / "sweep" / layout.MLRUNS).as_uri()
    given, _ = tracking.mlflow_uri(TrackingSpec(mlflow="http://127.0.0.1:5000"), store)
    assert given == "http://127.0.0.1:5000"


# ---------------------------------------------------------------------------- asked for, not there

@pytest.mark.parametrize("tracker, section, module", [
    ("mlflow", {"mlflow": True}, "mlflow"),
    ("tensorboard", {"tensorboard": True}, "tensorboardX"),
    ("wandb", {"wandb": {"project": "heads"}}, "wandb"),
])
def test_missing_tracker_is_one_line_and_nothing_launched(tracker, section, module, harness, tmp_path,
                                                        capsys, monkeypatch, offline_and_no_ray):
    monkeypatch.setitem(tracking.NEEDS, tracker, (f"{module}_not_installed_here", module))
    raw = harness.base(tmp_path)
    raw["tracking"] = section
    path = harness.write(tmp_path, raw)
    for command in ("validate", "run", "plan"):
        rc, out, err = harness.run_cli([command, path], capsys)
        harness.assert_refused(rc, out, err, [(f"tracking.{tracker}", "not installed", f"pip install {module}")],
                               tmp_path=tmp_path)


def test_wandb_installed_but_not_configured_is_refused(harness, tmp_path, capsys, monkeypatch,
                                                       offline_and_no_ray):
    monkeypatch.setitem(tracking.NEEDS, "wandb", ("json", "wandb"))   # an importable stand-in
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    raw = harness.base(tmp_path)
    raw["tracking"] = {"wandb": {"project": "heads"}}
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, raw)], capsys)
    harness.assert_refused(rc, out, err, [("tracking.wandb", "not configured", "wandb login")], tmp_path=tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert tracking.wandb_configured({})
