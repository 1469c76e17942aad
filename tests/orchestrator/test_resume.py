"""A killed sweep always resumes to completion (issue 16): SIGKILL the driver at a point, run ONE
``headsweep resume``, and every row is there once, equal to an uninterrupted run, with no result
written before the kill rewritten. bench/kill_anywhere.py runs 20+ points; these are a few.

Before the sweep directory became the truth, a resume after a kill in stage A, or early in stage
B, restored a Tune experiment with no state, ran one trial, exited 1 saying "resume again", and
every later resume ran nothing.
"""
import subprocess
import sys

import pytest

from headsweep.trials import layout

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def raw(kill):
    """One fine-tune and its four stage-B trials: every stage, seconds per run."""
    return kill.smaller(seeds=[0], k=[0.5], strategies=["none", "top", "bottom", "random", "single-head"])


@pytest.fixture(scope="module")
def reference(kill, raw, tmp_path_factory):
    work = tmp_path_factory.mktemp("reference")
    return kill.reference_run(work, str(work / "sweeps"), raw=raw), work


def _assert_resumed(outcome):
    assert outcome.ok, "; ".join(outcome.problems)


def test_kill_in_stage_a_before_any_checkpoint(kill, raw, reference, tmp_path):
    ref, _ = reference
    o = kill.run_point("stage_a_before_checkpoint", tmp_path, str(tmp_path / "sweeps"), ref, raw=raw)
    _assert_resumed(o)
    # what status says about a killed driver: gone, nothing runs, and the exact resume command
    assert "driver gone: pid" in o.status_after_kill and "no longer runs" in o.status_after_kill
    assert f"continue with: headsweep resume {tmp_path / 'sweeps' / 'kill'}" in o.status_after_kill


def test_kill_in_stage_b_then_kill_the_resume_too(kill, raw, reference, tmp_path):
    ref, _ = reference
    _assert_resumed(kill.run_point("stage_b_early", tmp_path, str(tmp_path / "sweeps"), ref, double=True,
                                   raw=raw))


def test_kill_while_the_tables_are_published(kill, raw, reference, tmp_path):
    ref, _ = reference
    _assert_resumed(kill.run_point("publishing_tables", tmp_path, str(tmp_path / "sweeps"), ref, raw=raw))


def test_kill_in_stage_b_on_object_storage(kill, raw, reference, tmp_path, bucket, s3_creds):
    ref, _ = reference
    storage = f"{bucket.split('?')[0]}-kill?{bucket.split('?')[1]}"
    o = kill.run_point("stage_b_early", tmp_path, storage, ref, raw=raw,
                       extra_env={**s3_creds, "HEADSWEEP_CACHE": str(tmp_path / "cache")})
    _assert_resumed(o)


def test_resuming_a_complete_sweep_does_nothing(kill, reference):
    """Exit 0, says so, starts no Ray (no new Tune run folder) and rewrites no result."""
    _, work = reference
    sweep_dir = work / "sweeps" / "kill"
    runs = sorted((sweep_dir / layout.RAY).iterdir())
    before = {p: p.read_bytes() for p in sweep_dir.glob(f"{layout.TRIALS}/*/{layout.RESULT}")}
    done = subprocess.run([sys.executable, "-m", "headsweep", "resume", str(sweep_dir), "--no-analysis"],
                          cwd=work, env=kill.env_for(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "nothing to run" in done.stdout and "resume" not in done.stderr
    assert sorted((sweep_dir / layout.RAY).iterdir()) == runs
    assert {p: p.read_bytes() for p in before} == before
