"""Faults injected through HEADSWEEP_FAULT (orchestrator/faults.py): nothing is lost or mixed."""
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from headsweep.orchestrator import cli, driver
from headsweep.orchestrator.plan import plan_file
from headsweep.orchestrator.storage import Store
from headsweep.trials import layout

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
TIMING = ("seconds", "per_s", "attempt")


def _results(sweep_dir) -> pd.DataFrame:
    return pd.read_parquet(Path(sweep_dir) / "results.parquet")


def test_trial_that_crashes_once_is_retried(small_raw, write_sweep, tmp_path, ray_session, monkeypatch):
    small_raw.update(name="crash-once", single_head_arch=False, seeds=[0])
    monkeypatch.setenv("HEADSWEEP_FAULT", "B:crash-once:top")
    assert cli.main(["run", str(write_sweep(small_raw)), "--storage", str(tmp_path), "--no-analysis"]) == 0
    df = _results(tmp_path / "crash-once")
    assert len(df) == 1 + 3 and df["trial_key"].is_unique
    top = df[df["strategy"] == "top"]
    assert list(top["attempt"]) == [2]                      # failed once, then succeeded
    assert (df[df["strategy"] != "top"]["attempt"] == 1).all()
    err = json.loads((tmp_path / "crash-once" / "trials" / top.trial_key.iloc[0] / "error.json").read_text())
    assert "InjectedFault" in err["error"] and err["attempt"] == 1


def test_worker_process_killed_once_is_retried(small_raw, write_sweep, tmp_path, ray_session, monkeypatch):
    small_raw.update(name="exit-once", single_head_arch=False, seeds=[0], strategies=["none", "random"])
    monkeypatch.setenv("HEADSWEEP_FAULT", "B:exit-once:random")
    assert cli.main(["run", str(write_sweep(small_raw)), "--storage", str(tmp_path), "--no-analysis"]) == 0
    df = _results(tmp_path / "exit-once")
    assert len(df) == 2 and list(df[df["strategy"] == "random"]["attempt"]) == [2]


def test_trial_that_keeps_failing_is_reported_and_blocks_nothing(small_raw, write_sweep, tmp_path,
                                                                  ray_session, monkeypatch, capsys):
    small_raw.update(name="always-fails", single_head_arch=False, seeds=[0, 1])
    monkeypatch.setenv("HEADSWEEP_FAULT", "B:crash:random")
    rc = cli.main(["run", str(write_sweep(small_raw)), "--storage", str(tmp_path)])  # with analysis
    assert rc == 1                                          # finished, but not everything succeeded
    sweep_dir = tmp_path / "always-fails"
    df = _results(sweep_dir)
    assert len(df) == 2 + 2 * 2 and "random" not in set(df["strategy"])
    assert (sweep_dir / "analysis" / "report.md").exists()  # the analysis still ran
    capsys.readouterr()
    assert cli.main(["status", str(sweep_dir), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["stages"]["stage_b"] == {"done": 4, "running": 0, "pending": 0, "errored": 2,
                                      "interrupted": 0, "skipped": 0}
    assert len(r["errors"]) == 2 and all("InjectedFault" in e["error"] for e in r["errors"])
    assert all("-random-" in e["trial"] for e in r["errors"])
    # the text form names the trial and its error too
    assert cli.main(["status", str(sweep_dir)]) == 0
    text = capsys.readouterr().out
    assert text.count("errored B-tiny-random") == 2 and "InjectedFault" in text


def test_same_sweep_twice_gives_identical_tables(small_raw, write_sweep, tmp_path, ray_session):
    small_raw.update(name="twice", seeds=[3])
    path = write_sweep(small_raw)
    for where in ("one", "two"):
        assert cli.main(["run", str(path), "--storage", str(tmp_path / where), "--no-analysis"]) == 0
    a, b = _results(tmp_path / "one" / "twice"), _results(tmp_path / "two" / "twice")
    keep = [c for c in a.columns if not any(t in c for t in TIMING)]
    pd.testing.assert_frame_equal(a[keep], b[keep])
    for key in a["trial_key"]:
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one/twice/predictions" / f"{key}.parquet"),
                                      pd.read_parquet(tmp_path / "two/twice/predictions" / f"{key}.parquet"))


def test_atomic_write_keeps_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    store = Store(tmp_path)
    rel = layout.result_file("x")
    store.write_json(rel, {"v": 1})
    real = Path.write_bytes

    def half_then_full_disk(self, data):
        real(self, data[: len(data) // 2])
        raise OSError("disk full")
    monkeypatch.setattr(Path, "write_bytes", half_then_full_disk)
    with pytest.raises(OSError):
        store.write_json(rel, {"v": 2})
    monkeypatch.undo()
    assert store.read_json(rel) == {"v": 1}
    assert os.listdir(tmp_path / layout.trial_dir("x")) == [layout.RESULT]   # no temporary debris


def test_safe_defaults(small_raw, tmp_path, monkeypatch):
    """safetensors only, trust_remote_code off, dashboard on loopback, README says so."""
    pl = plan_file(small_raw, storage=str(tmp_path))
    assert all(m.trust_remote_code is False for m in pl.sweep.models)
    assert all(s.model.trust_remote_code is False for s in pl.stage_a)
    seen = {}
    import ray
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    driver.start_ray(None, 2, 0)
    assert seen["dashboard_host"] == "127.0.0.1" and seen["address"] == "local"
    readme = (REPO / "README.md").read_text()
    for phrase in ("safetensors", "trust_remote_code", "127.0.0.1", "no secrets"):
        assert phrase in readme
