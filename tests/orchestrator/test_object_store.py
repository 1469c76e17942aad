"""A whole sweep stored on S3 (a local moto server): stage B loads checkpoints from the bucket."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from headsweep.orchestrator.storage import Store, join, parent_and_name, root_digest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_uri_join_keeps_the_query_last():
    uri = "s3://b/p?endpoint_override=h:1&scheme=http"
    assert join(uri, "demo") == "s3://b/p/demo?endpoint_override=h:1&scheme=http"
    assert parent_and_name(join(uri, "demo")) == (uri, "demo")
    assert join("/tmp/x/", "a/b") == "/tmp/x/a/b"


def test_store_round_trip(bucket, tmp_path):
    store = Store(join(bucket, "unit"))
    store.write_json("trials/k/result.json", {"a": 1})
    assert store.exists("trials/k/result.json") and store.read_json("trials/k/result.json") == {"a": 1}
    assert store.listdir("trials") == ["k"]
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    store.put_dir(tmp_path / "ckpt", "checkpoints/k0")
    got = store.get_dir("checkpoints/k0", tmp_path / "cache" / "m0")
    assert (got / "config.json").read_text() == "{}"


def test_sweep_on_s3(bucket, s3_creds, small_raw, write_sweep, tmp_path, shadowing_cwd):
    small_raw.update(name="on-s3", seeds=[0], single_head_arch=False)
    env = dict(os.environ, HEADSWEEP_CACHE=str(tmp_path / "cache"), **s3_creds)
    # Run from a folder with the user's own trials/ and analysis/ packages: one import name.
    run = subprocess.run([sys.executable, "-m", "headsweep", "run", str(write_sweep(small_raw)),
                          "--storage", bucket, "--no-analysis", "--cpus", "2"],
                         cwd=shadowing_cwd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    store = Store(join(bucket, "on-s3"))
    df = pd.read_parquet(io.BytesIO(store.read_bytes("results.parquet")))
    assert len(df) == 1 + 3 and df["trial_key"].is_unique
    stage_a_key = df[df["stage"] == "A"]["trial_key"].iloc[0]
    assert store.exists(f"checkpoints/{stage_a_key}/model.safetensors")
    assert all(store.exists(f"predictions/{k}.parquet") for k in df["trial_key"])
    # stage B read the checkpoint from the bucket into the node's cache, keyed by (sweep, key)
    assert (tmp_path / "cache" / "checkpoints" / root_digest(store.root) / stage_a_key / "model.safetensors").exists()
    # Tune's experiment folders of the one driver run live in the bucket too (ray/<run_id>/<stage>)
    runs = store.listdir("ray")
    assert len(runs) == 1, runs
    assert store.exists(f"ray/{runs[0]}/stage_a") and store.exists(f"ray/{runs[0]}/stage_b")

    status = subprocess.run([sys.executable, "-m", "headsweep", "status", join(bucket, "on-s3"), "--json"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    assert json.loads(status.stdout)["stages"]["stage_b"]["done"] == 3

    local = tmp_path / "copy"
    an = subprocess.run([sys.executable, "-m", "headsweep", "analyze", join(bucket, "on-s3"), "--to",
                         str(local), "--no-execute"], cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=300)
    assert an.returncode == 0, an.stderr[-2000:]
    assert (local / "analysis" / "report.md").exists() and not (local / "checkpoints").exists()
