"""Cluster mode on Ray's own autoscaler (fake multi-node provider), storage on S3 (moto).

The recipe of docs/cluster.md, "Try the cluster path on your laptop": a head with CPU 0 started by
``RAY_FAKE_CLUSTER=1 ray start --head --num-cpus=0 --autoscaling-config=...``, one worker type
that the autoscaler scales from 0 to 2 one-CPU nodes, and the sweep submitted exactly as the docs
say (``ray job submit --working-dir . -- headsweep run FILE --storage s3://...``) from the
repository root. ``headsweep status`` and ``headsweep analyze`` then run from outside the cluster.

Each test starts and stops its own cluster and S3 server (fixtures with ``finally``) and fails if
any process of its cluster is left. The node-loss test uses ``LostNodeProvider`` (Ray's fake
provider, plus: a worker whose raylet died is terminated and replaced, as on a cloud; the stock
one keeps it for ever and the sweep hangs). On this one machine all nodes share a disk, so the
trial cache (HEADSWEEP_CACHE) is shared too: stage B's first download of each checkpoint comes
from S3, a retry may find it in the cache. About 2 + 2.5 minutes on 2 cores; the second is
marked ``slow`` (the default suite, .ci/run included, still runs it). Counts are by hand, independent of orchestrator.grid: the
sweep (tests/orchestrator/cluster/sweep.yaml) has 2 seeds -> 2 fine-tunes (one row each, strategy
none), and per seed top@2 K + random@2 K x 5 draws = 12 stage-B trials: 26 rows in all.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))
from fake_cluster import FAKE_NODE_PREFIX, SWEEP_YAML, FakeCluster  # noqa: E402

HEAD_NODE_ID = FAKE_NODE_PREFIX + "00000"   # the fake provider's head; workers count up from 00001
N_A, N_B = 2, 2 * (2 + 2 * 5)
SWEEP = "cluster-local"                      # sweep.yaml's name
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3():
    """This test's own S3 API on 127.0.0.1 (moto) with a bucket ``sweeps``: the storage URI."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] (dev extra) not installed")
    import logging

    import boto3
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    import urllib.request
    srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    srv.start()
    host, port = srv.get_host_and_port()
    # moto keeps its buckets per process, not per server: start from none, leave none
    reset = urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST")
    try:
        urllib.request.urlopen(reset, timeout=30).close()
        boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket="sweeps")
        yield f"s3://sweeps/runs?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    finally:
        urllib.request.urlopen(reset, timeout=30).close()
        srv.stop()


def _cluster(tmp_path, **kw):
    """A fresh fake autoscaling cluster; stopped (every process it started) when the test ends.
    Its nodes get S3 credentials from the environment, as a real worker gets them from its
    instance profile, and a trial cache of their own (not ~/.cache)."""
    pytest.importorskip("aiohttp", reason="the Ray Jobs API needs ray[default]")
    c = FakeCluster(tmp_path, extra_env=dict(CREDS, HEADSWEEP_CACHE=str(tmp_path / "node-cache")), **kw)
    try:
        c.start()
        yield c
    finally:
        left = c.stop()
        assert not left, f"processes of the cluster left behind: {left}"


@pytest.fixture
def cluster(tmp_path):
    yield from _cluster(tmp_path)


@pytest.fixture
def lossy_cluster(tmp_path):
    """The same, where a worker node whose raylet dies is gone (and replaced), as on a cloud."""
    yield from _cluster(tmp_path, lost_nodes_end=True)


def outside_env() -> dict:
    """A user's machine: AWS credentials, no Ray address, no token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTEST_"))}
    return dict(env, **CREDS, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def submit(c: FakeCluster, storage: str, *, faults: str = "", wait: bool = True, working_dir: bool = True):
    """The documented command, from the repository root. The entrypoint runs in a shell on the
    head; a fault rule (tests only) goes in front of it as an environment variable.

    ``working_dir=False`` submits without ``--working-dir .`` (headsweep is installed in the
    environment, the sweep file is given by absolute path). The node-loss test needs it: the fake
    nodes share one session directory, so a replacement node unpacking the working dir deletes
    the copy the job's driver runs in (FileNotFoundError from os.getcwd(), seen in 2 of 4 runs); a
    real node unpacks only its own copy (docs/cluster.md)."""
    sweep = str(SWEEP_YAML.relative_to(REPO)) if working_dir else str(SWEEP_YAML)
    entry = ["headsweep", "run", sweep, "--storage", storage, "--no-analysis"]
    if faults:
        entry = ["env", f"HEADSWEEP_FAULT={faults}"] + entry
    cmd = ["ray", "job", "submit"] + (["--working-dir", "."] if working_dir else []) + ["--"] + entry
    deadline = time.monotonic() + 90
    while True:   # the head's job agent registers a few seconds after `ray start` returns
        p = subprocess.Popen(cmd, cwd=REPO, env=c.client_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        if not wait:
            return p
        out, _ = p.communicate(timeout=600)
        if "No available agent" not in out or time.monotonic() > deadline:
            return p.returncode, out
        time.sleep(2)


def store(storage: str):
    from headsweep.orchestrator.storage import Store, join
    return Store(join(storage, SWEEP))


def results(st) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(st.read_bytes("results.parquet")))


def worker_ids(c: FakeCluster) -> dict[str, dict]:
    """Nodes the autoscaler launched (alive or dead by now), by id."""
    return {n["node_id"]: n for n in c.nodes() if n["node_id"] != HEAD_NODE_ID}


def check_complete(st, c: FakeCluster, out: str) -> pd.DataFrame:
    from headsweep.trials import layout
    df = results(st)
    assert len(df) == N_A + N_B, out[-3000:]
    assert df["trial_key"].is_unique
    assert (df["stage"] == "A").sum() == N_A and (df["stage"] == "B").sum() == N_B
    workers = worker_ids(c)
    assert workers and all(w.startswith(FAKE_NODE_PREFIX) for w in workers), workers
    assert all(float(n["resources_total"].get("CPU", 0)) == 1 for n in workers.values())
    # the autoscaler (not anyone else) launched them: its log says so
    # (a node it stops before it registers is in its log but not in the GCS's list)
    assert c.launched() >= len(workers), [ln for ln in c.logs("monitor.log", tail=None).splitlines() if "Launch" in ln]
    # every row and every trial's status.json: a worker node, never the head
    assert set(df["node_id"]) <= set(workers), (set(df["node_id"]), set(workers))
    for key in df["trial_key"]:
        status = st.read_json(layout.status_file(key))
        assert status["node_id"] in workers and status["node_id"] != HEAD_NODE_ID, status
        assert status["host"]
        assert st.exists(layout.predictions_file(key))
    return df


# ---------------------------------------------------------------------------- the happy path

def test_sweep_on_the_local_autoscaler(cluster, s3, tmp_path):
    c = cluster
    head = {n["node_id"]: n for n in c.nodes()}
    assert list(head) == [HEAD_NODE_ID] and "CPU" not in head[HEAD_NODE_ID]["resources_total"]

    # Token authentication: a client without RAY_AUTH_MODE=token sends no token and is refused.
    no_token = {k: v for k, v in c.client_env().items() if k != "RAY_AUTH_MODE"}
    refused = subprocess.run(["ray", "job", "list"], env=no_token, cwd=REPO, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode != 0 and "auth" in (refused.stdout + refused.stderr).lower()

    t0 = time.monotonic()
    rc, out = submit(c, s3)
    assert rc == 0, out[-4000:] + c.logs("monitor.*")
    assert f"{N_A + N_B} of {N_A + N_B} trials done" in out, out[-3000:]
    st = store(s3)
    check_complete(st, c, out)
    print(f"sweep on the cluster: {time.monotonic() - t0:.0f} s, workers {sorted(w[-5:] for w in worker_ids(c))}")

    # from outside the cluster: a user's machine with AWS credentials, no Ray
    env, uri = outside_env(), st.uri()
    status = subprocess.run([sys.executable, "-m", "headsweep", "status", uri, "--json"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    got = json.loads(status.stdout)["stages"]
    assert got["stage_a"]["done"] == N_A and got["stage_b"]["done"] == N_B
    local = tmp_path / "copy"
    an = subprocess.run([sys.executable, "-m", "headsweep", "analyze", uri, "--to", str(local), "--no-execute"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert an.returncode == 0, an.stderr[-2000:]
    assert (local / "analysis" / "report.md").exists()
    assert len(pd.read_parquet(local / "results.parquet")) == N_A + N_B


# ---------------------------------------------------------------------------- a node lost

def wait_running(st, key: str, attempt: int, job: subprocess.Popen, timeout: float = 240) -> dict:
    """status.json of ``key`` once its attempt ``attempt`` (or a later one) is running on a node."""
    from headsweep.trials import layout
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, job.stdout.read()[-3000:]
        if st.exists(layout.status_file(key)):
            s = st.read_json(layout.status_file(key))
            if s.get("state") == "running" and s.get("attempt", 0) >= attempt and s.get("node_id"):
                return s
        time.sleep(0.3)
    raise AssertionError(f"trial {key} attempt {attempt} never ran")


@pytest.mark.slow
def test_a_worker_node_lost_in_stage_a_and_in_stage_b(lossy_cluster, s3, tmp_path):
    """SIGKILL the raylet of the node running a fine-tune, then of the node running a stage-B
    trial: Ray retries both elsewhere, the sweep completes, nothing is missing or duplicated."""
    from headsweep.orchestrator.plan import plan_file
    c = lossy_cluster
    pl = plan_file(SWEEP_YAML, storage=str(tmp_path / "plan-only"))
    a_key = next(s.key for s in pl.stage_a if s.seed == 0)
    b_key = next(s.key for s in pl.stage_b if s.strategy == "top" and s.seed == 1)
    # the two victims wait a few seconds after status.json says where they run: the kill window
    faults = f"A:sleep8:{a_key};B:sleep8:{b_key}"
    job = submit(c, s3, faults=faults, wait=False, working_dir=False)
    try:
        st = store(s3)
        killed = {}
        for key in (a_key, b_key):
            attempt = 1
            while key not in killed:
                s = wait_running(st, key, attempt, job)
                assert s["node_id"] != HEAD_NODE_ID
                pid = c.raylets().get(s["node_id"])
                if pid is None:   # that node is gone already (e.g. the autoscaler stopped it): next attempt
                    attempt = s["attempt"] + 1
                    continue
                os.kill(pid, signal.SIGKILL)
                killed[key] = (s["node_id"], s["attempt"])
        out, _ = job.communicate(timeout=400)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 0, out[-4000:] + c.logs("monitor.*")
    df = check_complete(st, c, out)
    for key, (node, attempt) in killed.items():
        row = df[df["trial_key"] == key].iloc[0]
        assert row["attempt"] > attempt and row["node_id"] != node, (key, row["attempt"], row["node_id"], node)
    dead = {n for n, info in worker_ids(c).items() if info["state"] == "DEAD"}
    assert {node for node, _ in killed.values()} <= dead
    print(f"killed {sorted(v[0][-5:] for v in killed.values())}; workers {sorted(w[-5:] for w in worker_ids(c))}")
