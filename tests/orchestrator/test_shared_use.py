"""Safe under shared use (issue 23): one test (or more) per finding, none of which starts Ray.

The findings that need a real sweep (two drivers started together, a corrupt result recomputed,
a credential never written, a remote analysis beside a local sweep, a retry after the fine-tune)
are in test_shared_use_sweeps.py. docs/reliability.md lists which test holds which guarantee.
"""
from __future__ import annotations

import copy
import io
import json
import os
import time
from pathlib import Path

import pytest
import yaml

from headsweep.orchestrator.plan import Refused, plan_file, resume_plan
from headsweep.orchestrator.progress import Progress
from headsweep.orchestrator.results import publish_tables, trial_state
from headsweep.orchestrator.storage import Store, join
from headsweep.orchestrator.sweepdir import claim_directory
from headsweep.trials import layout

# What these tests exercise was added by issue 23: imported per test, so that on a checkout
# without it every test fails on its own assertion or import, not the whole module at once.


def _lease():
    from headsweep.orchestrator import lease
    return lease

SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYzz9Secret"


def _snapshot(root: Path) -> dict:
    """Every file under ``root``: its bytes and modification time."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _until(condition, timeout: float = 20.0) -> bool:
    """Poll ``condition`` (a heartbeat thread on a busy machine may be late) until true or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _planned(raw, tmp_path):
    return plan_file(copy.deepcopy(raw), storage=str(tmp_path / "out"))


# ---------------------------------------------------------------------------- 1. one driver per sweep

def test_a_second_driver_is_refused_and_changes_nothing(harness, small_raw, tmp_path, capsys, offline_and_no_ray):
    """Another driver holds the lease (here: a live Lease of another run): run and resume exit 2
    with one line naming it, and write or delete nothing: not its in-flight temporary files, not
    its lease (before the lease, driver.json was read only after Ray started and the second driver
    deleted every .*.tmp and the first one's driver.json)."""
    small_raw["storage"] = str(tmp_path / "out")
    path = harness.write(tmp_path, small_raw)
    pl = plan_file(path)
    holder = _lease().Lease(pl.store, "first-run").acquire()
    try:
        claim_directory(pl)
        inflight = [pl.store.local / ".spec.yaml.x1.tmp", pl.store.local / layout.TRIALS / "k" / ".result.json.x2.tmp"]
        for f in inflight:
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"half")
        before = _snapshot(pl.store.local)
        for argv in (["run", path], ["resume", pl.store.root]):
            rc, out, err = harness.run_cli(argv, capsys)
            lines = harness.error_lines(err)
            assert rc == 2 and len(lines) == 1, err
            assert "another driver runs this sweep: run first-run" in lines[0] and f"pid {os.getpid()}" in lines[0]
            assert harness.LINE.match(lines[0]) and "Traceback" not in err
            assert _snapshot(pl.store.local) == before
    finally:
        holder.release()
    assert not (pl.store.local / layout.LEASE).exists()


def test_lease_is_exclusive_and_released_only_by_its_holder(tmp_path):
    store = Store(tmp_path / "sweep")
    a = _lease().Lease(store, "a").acquire()
    with pytest.raises(_lease().Held, match="run a "):
        _lease().Lease(store, "b").acquire()
    b = _lease().Lease(store, "b")
    b._version = "not-the-lease"   # a driver that never held it cannot remove it
    b.release()
    assert _lease().read_lease(store)["run_id"] == "a"
    a.release()
    assert _lease().read_lease(store) is None
    with _lease().Lease(store, "c"):
        assert _lease().read_lease(store)["held"] and _lease().read_lease(store)["run_id"] == "c"


def test_lease_heartbeat_is_renewed_and_a_taken_lease_is_lost(tmp_path):
    store = Store(tmp_path / "sweep")
    lost = []
    a = _lease().Lease(store, "a", ttl_s=0.4, on_lost=lambda: lost.append(1)).acquire()
    first = _lease().read_lease(store)["heartbeat"]
    assert _until(lambda: _lease().read_lease(store)["heartbeat"] > first)     # the thread renews it
    # another driver takes it over (as after a heartbeat stalled for a whole TTL)
    store.write_json(layout.LEASE, {"run_id": "b", "host": "elsewhere", "pid": 1, "heartbeat": time.time(),
                                    "ttl_s": 60})
    assert _until(lambda: lost == [1]) and a.lost
    a.release()                                             # never removes the new holder's lease
    assert _lease().read_lease(store)["run_id"] == "b"


def test_two_leases_taken_at_once_one_wins(tmp_path):
    """Many threads race for one lease: exactly one holds it (link() is atomic)."""
    import threading
    store = Store(tmp_path / "sweep")
    won, refused = [], []

    def take(i):
        try:
            won.append(_lease().Lease(store, f"r{i}").acquire())
        except _lease().Held:
            refused.append(i)
    threads = [threading.Thread(target=take, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 15
    won[0].release()


def test_lease_on_s3_is_a_conditional_create(bucket, s3_creds, monkeypatch):
    """On S3 the lease is created with If-None-Match: * and renewed / taken over / removed with
    If-Match on its ETag (moto implements both)."""
    store = Store(join(bucket, "lease-s3"))
    backend = _lease().backend_for(store)
    assert type(backend).__name__ == "_S3Backend" and backend.atomic
    calls = []
    real_put = backend.client.put_object
    monkeypatch.setattr(backend.client, "put_object", lambda **kw: calls.append(sorted(k for k in kw if k.startswith("If")))
                        or real_put(**kw))
    assert backend.create(b"{}") is not None and backend.create(b"{}") is None   # the second create is refused
    assert calls == [["IfNoneMatch"], ["IfNoneMatch"]]
    data, etag = backend.read()
    assert backend.replace(b"{1}", "wrong-etag") is None and backend.replace(b"{1}", etag) is not None
    assert not backend.delete(etag) and backend.read()[0] == b"{1}"                 # stale ETag: kept
    assert backend.delete(backend.read()[1]) and backend.read() is None

    a = _lease().Lease(store, "a").acquire()
    with pytest.raises(_lease().Held, match="run a "):
        _lease().Lease(store, "b").acquire()
    a.release()
    stale = {"run_id": "old", "host": "gone-host", "pid": 7, "heartbeat": time.time() - 3600, "ttl_s": 120}
    store.write_json(layout.LEASE, stale)
    out = io.StringIO()
    b = _lease().Lease(store, "b", out=out).acquire()
    assert "took over the lease of run old (pid 7 on gone-host): no heartbeat" in out.getvalue()
    b.release()
    assert not store.exists(layout.LEASE)


# ---------------------------------------------------------------------------- 10. a stale lease

@pytest.mark.parametrize("stale, why", [
    ({"start_time": -5}, "the pid now belongs to another process"),      # a reused pid: this very process
    ({"pid": 2 ** 22 + 12345}, "no longer runs"),                         # a dead process
    ({"boot_id": "another-boot"}, "has rebooted since"),                  # after a reboot
    ({"host": "other-host", "heartbeat": time.time() - 1000}, "no heartbeat"),
])
def test_a_stale_lease_is_taken_over_and_said_so(tmp_path, stale, why):
    store = Store(tmp_path / "sweep")
    me = _lease().identity()
    old = {"run_id": "old-run", **me, "heartbeat": time.time(), "ttl_s": 120} | stale
    if "start_time" in stale:
        old["start_time"] = me["start_time"] + 12345
    store.write_json(layout.LEASE, old)
    held, said = _lease().judge(old)
    assert not held and why in said
    out = io.StringIO()
    new = _lease().Lease(store, "new-run", out=out).acquire()
    assert "took over the lease of run old-run" in out.getvalue() and why in out.getvalue()
    assert _lease().read_lease(store)["run_id"] == "new-run"
    new.release()


def test_status_says_a_driver_with_a_reused_pid_is_gone(harness, tmp_path, capsys, small_raw):
    """Before: a stale driver.json whose pid a new process had taken made status say "driver
    running" and resume say "stop it first"."""
    pl = _planned(small_raw, tmp_path)
    claim_directory(pl)
    me = _lease().identity()
    pl.store.write_json(layout.LEASE, {"run_id": "old", **me, "start_time": me["start_time"] + 99,
                                       "heartbeat": time.time(), "ttl_s": 120})
    rc, out, err = harness.run_cli(["status", pl.store.root], capsys)
    assert rc == 0 and "driver gone:" in out and "the pid now belongs to another process" in out
    assert "continue with: headsweep resume" in out


def test_a_fresh_lease_of_another_host_is_respected(tmp_path):
    store = Store(tmp_path / "sweep")
    store.write_json(layout.LEASE, {"run_id": "far", "host": "other-host", "pid": 1, "heartbeat": time.time(),
                                    "ttl_s": 120})
    with pytest.raises(_lease().Held, match=r"run far \(pid 1 on other-host\), pid 1 on other-host, heartbeat"):
        _lease().Lease(store, "me").acquire()


# ---------------------------------------------------------------------------- 2. names and paths

@pytest.mark.parametrize("models, key", [
    ([{"name": "preset:tiny-distilbert", "label": "a"}, {"name": "preset:tiny-bert", "label": "a-1head"}],
     "models[1].label"),
    ([{"name": "preset:tiny-distilbert", "label": "A"}, {"name": "preset:tiny-bert", "label": "a"}], "models[1].label"),
    ([{"name": "preset:tiny-distilbert", "label": "../../x"}], "models[0].label"),
    ([{"name": "preset:tiny-distilbert", "label": "a/b"}], "models[0].label"),
    ([{"name": "preset:tiny-distilbert", "label": ".."}], "models[0].label"),
    ([{"name": "preset:tiny-distilbert", "label": "modèle"}], "models[0].label"),
])
def test_labels_that_collide_or_leave_the_sweep_are_refused(harness, small_raw, tmp_path, capsys, models, key,
                                                            offline_and_no_ray):
    small_raw.update(models=models, storage=str(tmp_path / "out"))
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, small_raw)], capsys)
    harness.assert_refused(rc, out, err, [(key,)], tmp_path=tmp_path)


@pytest.mark.parametrize("name", ["..", ".", "a/b", "x y"])
def test_unsafe_sweep_names_are_refused(harness, small_raw, tmp_path, capsys, name, offline_and_no_ray):
    small_raw.update(name=name, storage=str(tmp_path / "out"))
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, small_raw)], capsys)
    harness.assert_refused(rc, out, err, [("name",)], tmp_path=tmp_path)


def test_checkpoint_folders_are_named_by_content(small_raw, tmp_path):
    """Two models whose variants used to share checkpoints/a-1head__seed0 (labels a and a-1head)
    now get one folder per stage-A key."""
    from headsweep.orchestrator.grid import stage_a
    from headsweep.orchestrator.sweep import Sweep
    from headsweep.trials.spec import ModelSpec
    sweep = Sweep(models=(ModelSpec("preset:tiny-distilbert", "a"), ModelSpec("preset:tiny-bert", "a-1head")),
                  single_head_arch="pretrained", seeds=(0,))
    specs = stage_a(sweep)
    assert len({s.model.variant for s in specs}) == 3              # the old names collided
    assert len({layout.checkpoint_dir(s.key) for s in specs}) == 4


@pytest.mark.parametrize("rel", ["../x", "checkpoints/../../x", "/etc/passwd", "a/./../../b", ""])
def test_every_store_path_stays_inside_the_sweep_root(tmp_path, rel):
    from headsweep.orchestrator.storage import Outside as outside
    store = Store(tmp_path / "sweep")
    if rel == "":
        assert store.path(rel) == str(tmp_path / "sweep")
        return
    with pytest.raises(outside):
        store.write_bytes(rel, b"x")
    with pytest.raises(outside):
        store.exists(rel)
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------- 4. provenance

def _tsv(path: Path, n: int, seed: int = 0) -> None:
    words = ["good", "bad", "fine", "dull", "great", "weak", "superb", "boring"]
    rows = [f"{words[(i * 7 + seed) % 8]} {words[(i * 3) % 8]} film\t{(i * 7 + seed) % 8 % 2}" for i in range(n)]
    path.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")


@pytest.fixture
def tsv_sweep(small_raw, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _tsv(data / "train.tsv", 120)
    _tsv(data / "validation.tsv", 40, seed=1)
    small_raw.update(data={"source": str(data), "max_length": 32}, importance={"examples": 20},
                     storage=str(tmp_path / "out"), single_head_arch=False)
    return small_raw, data


def test_an_edited_data_file_is_refused_on_resume(harness, tsv_sweep, tmp_path, capsys, offline_and_no_ray):
    raw, data = tsv_sweep
    pl = plan_file(raw)
    claim_directory(pl)
    saved = yaml.safe_load((pl.store.local / layout.SPEC).read_text())["provenance"]
    assert len(saved["data"]["sha256"]) == 64 and saved["headsweep"]
    with open(data / "train.tsv", "a") as f:
        f.write("one more line\t1\n")
    before = _snapshot(pl.store.local)
    rc, out, err = harness.run_cli(["resume", pl.store.root], capsys)
    lines = harness.error_lines(err)
    assert rc == 2 and len(lines) == 1 and "the data files' contents changed" in lines[0], err
    assert "--allow-drift" in lines[0] and harness.LINE.match(lines[0])
    assert _snapshot(pl.store.local) == before                      # nothing written (the lease came and went)
    # --allow-drift: goes on, and says so in drift.json; the new contents become the record
    claim_directory(resume_plan(pl.store.root, None), allow_drift=True, run_id="r2", out=io.StringIO())
    drift = json.loads((pl.store.local / layout.DRIFT).read_text())["accepted"]
    assert drift[0]["run"] == "r2" and drift[0]["changes"][0]["what"] == "data.sha256"
    claim_directory(resume_plan(pl.store.root, None))              # no longer a change


def test_hub_revisions_and_code_are_recorded_and_compared(small_raw, tmp_path, monkeypatch):
    small_raw.update(models=[{"name": "gpt2"}], storage=str(tmp_path / "out"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    revs = {"gpt2": "a" * 40}
    from headsweep.orchestrator import provenance
    monkeypatch.setattr(provenance, "hub_revision", lambda repo, rev, kind: revs.get(repo))
    pl = _planned(small_raw, tmp_path)
    claim_directory(pl)
    rec = yaml.safe_load((pl.store.local / layout.SPEC).read_text())["provenance"]
    assert rec["models"]["gpt2"]["revision"] == "a" * 40
    revs["gpt2"] = None                                             # offline: not known, not compared
    claim_directory(pl)
    assert yaml.safe_load((pl.store.local / layout.SPEC).read_text())["provenance"] == rec   # kept
    revs["gpt2"] = "b" * 40                                         # the hub moved on
    with pytest.raises(Refused, match="model gpt2's hub revision changed"):
        claim_directory(pl)
    revs["gpt2"] = "a" * 40
    import headsweep.trials.provenance as tp
    monkeypatch.setattr(tp, "git_hash", lambda: "f" * 40)           # another commit of the code
    with pytest.raises(Refused, match=r"the code \(git commit\) changed"):
        claim_directory(pl)


def test_a_pinned_revision_is_in_the_key_and_an_unpinned_one_is_not(small_raw, tmp_path):
    base = _planned(small_raw, tmp_path)
    small_raw["models"][0]["revision"] = "v1.0"
    pinned = _planned(small_raw, tmp_path)
    assert pinned.sweep.models[0].revision == "v1.0"
    assert {s.key for s in pinned.stage_a}.isdisjoint({s.key for s in base.stage_a})
    # the key of an unpinned spec is what it was before revisions existed: asdict without them
    import dataclasses
    import hashlib
    spec = base.stage_a[0]
    d = dataclasses.asdict(spec)
    del d["model"]["revision"], d["data"]["revision"]
    assert spec.key == hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def test_resume_after_an_upgrade_that_adds_a_key(small_raw, tmp_path):
    """spec.yaml written by a version without some keys: the saved spec has their defaults filled
    in before comparing, so resume goes on (it used to be refused with advice to run resume)."""
    pl = _planned(small_raw, tmp_path)
    claim_directory(pl)
    spec_path = pl.store.local / layout.SPEC
    old = yaml.safe_load(spec_path.read_text())
    for key in ("save_pruned", "measure_speed", "provenance"):
        old.pop(key)
    for m in old["models"]:
        m.pop("revision")
    old["data"].pop("revision")
    spec_path.write_text(yaml.safe_dump(old, sort_keys=False))
    claim_directory(resume_plan(pl.store.root, None))
    claim_directory(_planned(small_raw, tmp_path))                  # the sweep file again, too


def test_a_different_sweep_is_refused_naming_what_differs(small_raw, tmp_path):
    claim_directory(_planned(small_raw, tmp_path))
    small_raw["seeds"] = [5]
    with pytest.raises(Refused, match=r"different sweep named 'small' \(it differs in: seeds\)"):
        claim_directory(_planned(small_raw, tmp_path))


def test_only_the_grids_trials_are_published(tmp_path):
    store = Store(tmp_path / "sweep")
    store.write_json(layout.GRID, {"stage_a": [{"key": "k1", "name": "A"}], "stage_b": []})
    for key in ("k1", "stale"):
        store.write_json(layout.result_file(key), {"rows": [{"trial_key": key, "model": "m", "stage": "A"}]})
    publish_tables(store)
    import pandas as pd
    assert list(pd.read_parquet(store.local / layout.RESULTS)["trial_key"]) == ["k1"]


# ---------------------------------------------------------------------------- 6. secrets

@pytest.mark.parametrize("change, key", [
    ({"storage": f"s3://AKIAEXAMPLE:{SECRET}@bucket/sweeps"}, "storage"),
    ({"storage": f"s3://bucket/sweeps?access_key=AKIA&secret_key={SECRET}"}, "storage"),
    ({"tracking": {"mlflow": f"https://user:{SECRET}@mlflow.example.com"}}, "tracking.mlflow"),
    ({"tracking": {"wandb": {"project": "p", "api_key": SECRET}}}, "tracking.wandb.api_key"),
])
def test_credentials_in_the_sweep_file_are_refused_and_never_printed(harness, small_raw, tmp_path, capsys, change,
                                                                     key, offline_and_no_ray):
    small_raw.update(storage=str(tmp_path / "out"))
    small_raw.update(change)
    for command in ("validate", "run"):
        rc, out, err = harness.run_cli([command, harness.write(tmp_path, small_raw)], capsys)
        harness.assert_refused(rc, out, err, [(key, "use the environment or a profile")], tmp_path=tmp_path)
        assert SECRET not in out + err
    assert not any(SECRET.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()
                   and p.name != "sweep.yaml")


@pytest.mark.parametrize("argv", [
    ["run", "SWEEP", "--storage", f"s3://KEY:{SECRET}@bucket/x"],
    ["status", f"s3://bucket/x?secret_key={SECRET}"],
    ["analyze", f"gs://KEY:{SECRET}@bucket/x"],
    ["resume", f"s3://bucket/x?session_token={SECRET}"],
])
def test_credentials_on_the_command_line_are_refused_and_never_printed(harness, small_raw, tmp_path, capsys, argv,
                                                                       offline_and_no_ray):
    path = harness.write(tmp_path, small_raw)
    rc, out, err = harness.run_cli([str(path) if a == "SWEEP" else a for a in argv], capsys)
    assert rc == 2 and "use the environment or a profile" in err and SECRET not in out + err, err
    assert len(harness.error_lines(err)) == 1 and "Traceback" not in err


def test_redact_hides_every_uri_secret():
    text = (f"s3://AK:{SECRET}@b/x and https://u:{SECRET}@h/p and s3://b/p?region=x&secret_key={SECRET}&scheme=http "
            f"and gs://{SECRET}@b")
    from headsweep.orchestrator.storage import redact
    shown = redact(text)
    assert SECRET not in shown and "region=x" in shown and "scheme=http" in shown and "https://u:***@h/p" in shown


# ---------------------------------------------------------------------------- 8. fail before spending

@pytest.mark.parametrize("change, key", [
    ({"data": {"source": "synthetic", "synthetic_size": 240, "max_length": 512}}, "data.max_length"),
    ({"finetune": {"batch_size": 320000}}, "finetune.batch_size"),
    ({"finetune": {"eval_batch_size": 10 ** 7}}, "finetune.eval_batch_size"),
    ({"importance": {"examples": 48, "batch_size": 10 ** 6}}, "importance.batch_size"),
])
def test_inputs_that_would_fail_after_the_fine_tune_are_refused_by_validate(harness, small_raw, tmp_path, capsys,
                                                                             change, key, offline_and_no_ray):
    """max_length 512 on a 256-position model passed validate and crashed every evaluation after
    the fine-tune (then Ray retried it twice)."""
    small_raw.update(storage=str(tmp_path / "out"), **change)
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, small_raw)], capsys)
    harness.assert_refused(rc, out, err, [(key,)], tmp_path=tmp_path)


def test_the_position_limit_comes_from_the_config():
    from transformers import GPT2Config, RobertaConfig

    from headsweep.orchestrator.checks import model_heads, position_limit
    assert position_limit(GPT2Config(n_positions=300), "gpt2") == 300
    assert position_limit(RobertaConfig(max_position_embeddings=514), "roberta") == 512
    assert model_heads("preset:tiny-gpt2").max_positions == 256


# ---------------------------------------------------------------------------- 9. damaged files

def test_damaged_trial_files_are_quarantined_and_the_trial_counts_as_not_run(tmp_path):
    store = Store(tmp_path / "sweep")
    store.write_json(layout.GRID, {"stage_a": [{"key": "k1", "name": "A"}, {"key": "k2", "name": "A2"}],
                                   "stage_b": []})
    store.write_json(layout.result_file("k1"), {"rows": [{"trial_key": "k1", "model": "m", "stage": "A"}]})
    store.write_bytes(layout.result_file("k2"), b'{"rows": [{"trial_k')      # cut short
    store.write_bytes(layout.status_file("k2"), b"\x00\x00")
    store.write_bytes(layout.error_file("k2"), b"")
    assert trial_state(store, "k2") == ("pending", "")                      # a reader skips, never moves
    assert store.exists(layout.result_file("k2"))
    err = io.StringIO()
    import contextlib
    with contextlib.redirect_stderr(err):
        publish_tables(store)
    import pandas as pd
    assert list(pd.read_parquet(store.local / layout.RESULTS)["trial_key"]) == ["k1"]
    warning = [ln for ln in err.getvalue().splitlines() if ln]
    assert len(warning) == 1 and "trials/k2/result.json was unreadable" in warning[0], warning
    moved = list((store.local / layout.QUARANTINE).iterdir())
    assert len(moved) == 1 and moved[0].read_bytes() == b'{"rows": [{"trial_k'
    assert not store.exists(layout.result_file("k2"))


def test_an_unreadable_lease_is_quarantined_and_taken_over(tmp_path):
    store = Store(tmp_path / "sweep")
    store.write_bytes(layout.LEASE, b"\x00garbage")
    out = io.StringIO()
    with _lease().Lease(store, "new", out=out):
        assert "took over an unreadable lease" in out.getvalue()
        assert "moved to quarantine/" in out.getvalue()
    assert [p.read_bytes() for p in (store.local / layout.QUARANTINE).iterdir()] == [b"\x00garbage"]


def test_status_reads_damaged_files_without_a_traceback(harness, small_raw, tmp_path, capsys):
    pl = _planned(small_raw, tmp_path)
    claim_directory(pl)
    key = pl.stage_a[0].key
    pl.store.write_bytes(layout.status_file(key), b"{")
    pl.store.write_bytes(layout.error_file(key), b"[1,")
    pl.store.write_bytes(layout.LEASE, b"not json")
    rc, out, err = harness.run_cli(["status", pl.store.root], capsys)
    assert rc == 0 and "Traceback" not in err and "driver gone" in out


# ---------------------------------------------------------------------------- 11. the validator

def _alias_bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    text = "\n".join(lines) + "\nname: bomb\nmodels: [*i, *i, *i, *i, *i, *i, *i, *i]\n"
    return text + "#" * (568 - len(text) - 1) + "\n"


def test_a_yaml_alias_bomb_is_refused_in_under_a_second(harness, tmp_path, capsys, offline_and_no_ray):
    text = _alias_bomb()
    assert len(text.encode()) == 568
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    t0 = time.perf_counter()
    rc, out, err = harness.run_cli(["validate", path], capsys)
    assert time.perf_counter() - t0 < 1.0
    assert rc == 2 and len(err) < 1000 and "anchors (&name) are not allowed" in err, err[:500]
    assert len(harness.error_lines(err)) == 1


def test_saved_specs_have_no_aliases(small_raw, tmp_path):
    """spec.yaml is written without anchors (a value seen twice is written twice), so it reads back
    through the alias-refusing loader."""
    from headsweep.orchestrator.plan import read_sweep
    from headsweep.orchestrator.readers import NoAliasDumper, strict_yaml
    shared = ["x"]
    assert "&id" in yaml.safe_dump({"a": shared, "b": shared})       # what safe_dump would write
    assert "&" not in yaml.dump({"a": shared, "b": shared}, Dumper=NoAliasDumper)
    small_raw["tracking"] = {"wandb": {"project": "p", "tags": ["x"]}}
    text = read_sweep(small_raw).to_yaml()
    assert "&id" not in text and strict_yaml(text)["name"] == "small"


def test_a_huge_value_is_cut_in_the_error_line(harness, small_raw, tmp_path, capsys, offline_and_no_ray):
    small_raw.update(storage=str(tmp_path / "out"), name="x" * 100_000, seeds=[[[[list(range(1000))]]]])
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, small_raw)], capsys)
    lines = harness.error_lines(err)
    assert rc == 2 and len(lines) == 2 and all(len(ln) < 400 for ln in lines), [len(ln) for ln in lines]


def test_an_object_store_without_a_region_offline_is_one_line(harness, small_raw, tmp_path, capsys, monkeypatch,
                                                              offline_and_no_ray):
    """pyarrow looks an S3 bucket's region up over the network: offline that was a traceback and
    exit 1."""
    for k in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    small_raw["storage"] = "s3://headsweep-no-such-bucket-3f9a1c/sweeps"
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, small_raw)], capsys)
    lines = harness.error_lines(err)
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: storage: cannot open the object store"), err
    assert "Traceback" not in err


def test_validate_probes_the_bucket(harness, small_raw, tmp_path, capsys, bucket, s3_creds, offline_and_no_ray):
    query = bucket.split("?", 1)[1]
    small_raw["storage"] = f"s3://no-such-bucket/sweeps?{query}"
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, small_raw)], capsys)
    lines = harness.error_lines(err)
    assert rc == 2 and len(lines) == 1 and "error: storage: cannot use this bucket" in lines[0], err
    small_raw["storage"] = bucket
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, small_raw)], capsys)
    assert rc == 0, err


# ---------------------------------------------------------------------------- 13. a stalled sweep

class _Files:
    """A store whose trials/ listing the test sets (``Store.walk``'s answer)."""
    local = None

    def __init__(self, files):
        self.files = files

    def walk(self, rel):
        return dict(self.files)


def test_a_stall_is_reported_with_the_pending_resources_and_the_cluster(small_raw, tmp_path):
    pl = _planned(small_raw, tmp_path)
    since = time.time() - 1
    a0 = pl.stage_a[0].key
    files = {layout.trial_file(a0, layout.STATUS): since + 0.5}    # one fine-tune started; the rest wait
    out = io.StringIO()
    p = Progress(_Files(files), pl, "r", out=out, stall_s=0.3,
                 cluster=lambda: ({"CPU": 4.0, "GPU": 0.0}, {"CPU": 0.0, "GPU": 0.0}))
    p.since = since
    p.snapshot()
    assert out.getvalue() == ""
    time.sleep(0.35)
    p.snapshot()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("headsweep: no trial started or finished for 0:00")
    assert f"{len(pl.stage_a) - 1} trials wait to start ({len(pl.stage_a) - 1} need {{CPU: 1, GPU: 0}} each)" in lines[0]
    assert "the cluster has {CPU: 4, GPU: 0} in all, {CPU: 0, GPU: 0} free" in lines[0]
    p.snapshot()
    assert len(out.getvalue().splitlines()) == 1                     # once per stall period
    # activity resets the clock; nothing waiting, nothing said
    files[layout.trial_file(a0, layout.RESULT)] = time.time()
    p.snapshot()
    time.sleep(0.35)
    done = {layout.trial_file(s.key, layout.RESULT): time.time() for s in list(pl.stage_a) + list(pl.stage_b)}
    p2 = Progress(_Files(done), pl, "r", out=out, stall_s=0.0, cluster=lambda: ({}, {}))
    p2.snapshot(), p2.snapshot()
    assert len(out.getvalue().splitlines()) == 1
