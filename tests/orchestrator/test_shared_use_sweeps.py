"""Safe under shared use (issue 23), with real sweeps: two drivers started together, damaged files
recomputed, a fine-tune kept for its retry, and an object-store sweep whose credential is never
written, whose remote analysis never touches a local sweep of the same name, and whose workers'
checkpoint cache is keyed by sweep and checked. The findings that need no sweep are in
test_shared_use.py.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from headsweep.orchestrator.storage import Store, join
from headsweep.trials import layout

pytestmark = pytest.mark.integration

SECRET = "hs23SecretAccessKeyThatMustNeverBeWritten"


def _env(**extra) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("HEADSWEEP_FAULT", None)
    return env | extra


def _headsweep(args, cwd, env, timeout=600):
    return subprocess.run([sys.executable, "-m", "headsweep", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _tiny(small_template, name: str) -> dict:
    raw = copy.deepcopy(small_template)
    raw.update(name=name, seeds=[0], strategies=["none", "top"], single_head_arch=False)
    return raw


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- 1. two drivers at once

@pytest.fixture(scope="module")
def together(small_template, tmp_path_factory):
    """Two `headsweep run` of one sweep file on one directory, started at the same moment."""
    import yaml
    work = tmp_path_factory.mktemp("together")
    path = work / "sweep.yaml"
    path.write_text(yaml.safe_dump(_tiny(small_template, "together")))
    env = _env(HEADSWEEP_FAULT="A:sleep5")   # the fine-tune waits: the drivers overlap for certain
    args = [sys.executable, "-m", "headsweep", "run", str(path), "--storage", str(work / "sweeps"), "--no-analysis",
            "--cpus", "2"]
    procs = [subprocess.Popen(args, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    return {"work": work, "path": path, "sweep_dir": work / "sweeps" / "together",
            "runs": [(p.pid, p.returncode, o, e) for p, (o, e) in zip(procs, outs)]}


def test_two_drivers_started_together_one_runs_the_other_exits_2_naming_it(together):
    runs = sorted(together["runs"], key=lambda r: r[1])
    (winner, rc0, out0, err0), (loser, rc2, out2, err2) = runs
    assert (rc0, rc2) == (0, 2), [r[1:] for r in runs]
    errors = [ln for ln in err2.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "another driver runs this sweep" in errors[0] and f"pid {winner} " in errors[0], err2
    assert "Traceback" not in err0 + err2 and "took over" not in err0 + err2
    sweep_dir = together["sweep_dir"]
    df = pd.read_parquet(sweep_dir / layout.RESULTS)
    grid = json.loads((sweep_dir / layout.GRID).read_text())
    keys = [t["key"] for stage in ("stage_a", "stage_b") for t in grid[stage]]
    assert sorted(df["trial_key"]) == sorted(keys) and (df["attempt"] == 1).all()
    # every trial computed once: one attempt each, by the winner's run
    statuses = [json.loads((sweep_dir / layout.status_file(k)).read_text()) for k in keys]
    assert {s["attempt"] for s in statuses} == {1}
    assert {s["run"].rsplit("-", 1)[1] for s in statuses} == {str(winner)}   # run ids end in the driver's pid
    # checkpoints are named by the stage-A key; the lease is gone with its driver
    assert sorted(os.listdir(sweep_dir / layout.CHECKPOINTS)) == sorted(t["key"] for t in grid["stage_a"])
    assert not (sweep_dir / layout.LEASE).exists()


# ---------------------------------------------------------------------------- 9. damaged files

def test_a_corrupt_result_and_an_empty_spec_are_quarantined_and_recomputed(together, tmp_path):
    """One corrupt result.json (or an empty spec.yaml) used to break every later run with a
    traceback; now each is moved to quarantine/ with one warning and the trial runs again."""
    sweep_dir = tmp_path / "sweeps" / "together"
    shutil.copytree(together["sweep_dir"], sweep_dir)
    grid = json.loads((sweep_dir / layout.GRID).read_text())
    b_key = grid["stage_b"][0]["key"]
    result = sweep_dir / layout.result_file(b_key)
    result.write_bytes(result.read_bytes()[:25])
    (sweep_dir / layout.SPEC).write_text("")
    run = _headsweep(["run", together["path"], "--storage", tmp_path / "sweeps", "--no-analysis", "--cpus", "2"],
                     tmp_path, _env())
    assert run.returncode == 0, run.stderr[-3000:]
    warnings = [ln for ln in run.stderr.splitlines() if "warning:" in ln]
    assert len(warnings) == 2, run.stderr
    assert any(f"{layout.SPEC} was unreadable" in w for w in warnings)
    assert any(f"{layout.result_file(b_key)} was unreadable" in w for w in warnings)
    assert len(os.listdir(sweep_dir / layout.QUARANTINE)) == 2 and "Traceback" not in run.stderr
    df = pd.read_parquet(sweep_dir / layout.RESULTS)
    assert len(df) == 2 and df["trial_key"].is_unique
    assert int(df.set_index("trial_key").loc[b_key, "attempt"]) == 2           # computed again
    a_key = grid["stage_a"][0]["key"]
    assert (sweep_dir / layout.result_file(a_key)).read_bytes() == \
        (together["sweep_dir"] / layout.result_file(a_key)).read_bytes()       # the rest untouched


# ---------------------------------------------------------------------------- 8. a fine-tune kept for its retry

def test_a_retry_after_the_fine_tune_starts_from_its_weights(small_template, tmp_path, monkeypatch):
    """A failure after finetune() (here injected right after the weights are kept) used to throw
    the fine-tune away; the retry now loads the kept weights and gives the same row."""
    import headsweep.trials.run as trial_run
    from headsweep.orchestrator import faults, worker
    from headsweep.orchestrator.plan import plan_file
    raw = _tiny(small_template, "retry")
    spec = plan_file(raw, storage=str(tmp_path)).stage_a[0]
    store = Store(tmp_path / "retry")
    with pytest.raises(faults.InjectedFault):
        worker.run_one(spec, store, "A@finetuned:crash-once")
    kept = store.local / layout.finetuned_dir(spec.key)
    assert (kept / layout.CKPT_TRAIN).exists() and not store.exists(layout.result_file(spec.key))
    real = trial_run.finetune
    monkeypatch.setattr(trial_run, "finetune", lambda *a, **k: pytest.fail("fine-tuned a second time"))
    rows = worker.run_one(spec, store, "A@finetuned:crash-once")
    monkeypatch.setattr(trial_run, "finetune", real)
    assert rows[0]["attempt"] == 2 and not kept.exists()       # the checkpoint holds the weights now
    ref = worker.run_one(spec, Store(tmp_path / "reference"))  # an uninterrupted run of the same trial
    timing = ("seconds", "per_s", "attempt", "host", "node_id")
    same = [c for c in ref[0] if not any(t in c for t in timing)]
    assert {c: rows[0][c] for c in same} == {c: ref[0][c] for c in same}
    imp = [pd.read_parquet(Store(tmp_path / d).local / layout.trial_file(spec.key, layout.TRIAL_IMPORTANCE))
           for d in ("retry", "reference")]
    pd.testing.assert_frame_equal(imp[0], imp[1])


# ---------------------------------------------------------------------------- 3, 5, 6. an object-store sweep

@pytest.fixture(scope="module")
def s3_sweep(bucket, s3_creds, small_template, tmp_path_factory):
    """A sweep on S3 (moto), run with a distinctive secret key in the environment, the way
    credentials are meant to be given."""
    import yaml
    work = tmp_path_factory.mktemp("s3sweep")
    path = work / "sweep.yaml"
    path.write_text(yaml.safe_dump(_tiny(small_template, "shared")))
    storage = f"{bucket.split('?')[0]}-shared?{bucket.split('?')[1]}"
    env = _env(**(s3_creds | {"AWS_SECRET_ACCESS_KEY": SECRET}), HEADSWEEP_CACHE=str(work / "cache"))
    run = _headsweep(["run", path, "--storage", storage, "--no-analysis", "--cpus", "2"], work, env)
    assert run.returncode == 0, run.stderr[-3000:]
    status = _headsweep(["status", join(storage, "shared"), "--json"], work, env, timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    return {"work": work, "env": env, "uri": join(storage, "shared"), "outputs": [run, status]}


def test_a_credential_never_appears_in_any_file_of_the_sweep_or_in_the_output(s3_sweep):
    store = Store(s3_sweep["uri"])
    files = store.walk("")
    assert layout.SPEC in files and any(f.startswith(layout.RAY + "/") for f in files)
    leaked = [f for f in files if SECRET.encode() in store.read_bytes(f)]
    assert not leaked, leaked
    for out in s3_sweep["outputs"]:
        assert SECRET not in out.stdout + out.stderr
    local = [p for p in Path(s3_sweep["work"]).rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not local, local


def test_remote_analyze_leaves_a_local_sweep_of_the_same_name_byte_identical(s3_sweep, tmp_path):
    from headsweep.analysis.synthetic import make_sweep_dir
    from headsweep.orchestrator.storage import root_digest
    local = make_sweep_dir(tmp_path / "sweeps" / "shared", seed=3, name="shared")   # ./sweeps/<name>
    before = _snapshot(local)
    cache = tmp_path / "cache"
    an = _headsweep(["analyze", s3_sweep["uri"], "--no-execute"], tmp_path, s3_sweep["env"] | {"HEADSWEEP_CACHE": str(cache)},
                    timeout=300)
    assert an.returncode == 0, an.stderr[-2000:]
    assert _snapshot(local) == before
    copy_dir = cache / "remote" / root_digest(Store(s3_sweep["uri"]).root) / "shared"
    assert (copy_dir / layout.REPORT).exists() and not (copy_dir / layout.CHECKPOINTS).exists()
    assert str(copy_dir) in an.stderr and SECRET not in an.stdout + an.stderr


def test_the_worker_cache_is_keyed_by_sweep_and_checked(s3_sweep, bucket, tmp_path, monkeypatch):
    """Two object-store sweeps with the same stage-A spec used to share ~/.cache/headsweep/
    checkpoints/<key>: the second sweep's stage B ran on the first one's fine-tune."""
    from headsweep.orchestrator.storage import root_digest
    from headsweep.orchestrator.worker import CHECKSUM, checkpoint_for
    from headsweep.trials.run import weights_digest
    monkeypatch.setenv("HEADSWEEP_CACHE", str(tmp_path / "cache"))
    a = Store(s3_sweep["uri"])
    grid = a.read_json(layout.GRID)
    key = grid["stage_a"][0]["key"]
    digest = a.read_json(layout.result_file(key))[CHECKSUM]
    # stage B of the sweep used a copy under its own (sweep, key) folder, which matched
    used = Path(s3_sweep["work"]) / "cache" / layout.CHECKPOINTS / root_digest(a.root) / key
    assert weights_digest(used) == digest
    # another sweep with a checkpoint under the same key
    b = Store(join(bucket, "other-sweep"))
    b.write_bytes(f"{layout.checkpoint_dir(key)}/config.json", b"{}")
    b.write_bytes(f"{layout.checkpoint_dir(key)}/model.safetensors", b"the other sweep's weights")
    tmp = tmp_path / "b"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"the other sweep's weights")
    b.write_json(layout.result_file(key), {"rows": [], CHECKSUM: weights_digest(tmp)})
    got_a, got_b = checkpoint_for(a, key), checkpoint_for(b, key)
    assert got_a != got_b and (got_b / "model.safetensors").read_bytes() == b"the other sweep's weights"
    assert weights_digest(got_a) == digest
    # a damaged cached copy is noticed and fetched again
    (got_a / "model.safetensors").write_bytes(b"damaged")
    assert weights_digest(checkpoint_for(a, key)) == digest
    # a stored checkpoint that does not match its result's digest is refused
    b.write_bytes(f"{layout.checkpoint_dir(key)}/model.safetensors", b"replaced")
    shutil.rmtree(got_b)
    with pytest.raises(RuntimeError, match="does not match the digest"):
        checkpoint_for(b, key)
