"""Bad input through the CLI: machine resources, storage, CLI syntax and sweep directories.

Same standard as test_validate.py: exit 2, one ``error:`` line per problem naming the key and
the value, no traceback, Ray never started, nothing created.
"""
from __future__ import annotations

import os

import pytest

from headsweep.orchestrator import checks
from headsweep.orchestrator.readers import Problems
from headsweep.orchestrator.sweep import parse

pytestmark = pytest.mark.usefixtures("offline_and_no_ray")


def gpu_sweep(harness, tmp_path, gpu=1):
    raw = harness.base(tmp_path)
    raw["resources"]["finetune"]["gpu"] = gpu
    return harness.write(tmp_path, raw)


# ---------------------------------------------------------------------------- machine resources


def test_run_refuses_gpu_on_a_machine_without_one(harness, tmp_path, capsys):
    """--gpus 0 stands for "this machine has no GPU" whatever the test machine has."""
    rc, out, err = harness.run_cli(["run", gpu_sweep(harness, tmp_path), "--storage", tmp_path / "out", "--gpus", "0",
                            "--no-analysis"], capsys)
    harness.assert_refused(rc, out, err, [("resources.finetune.gpu:", "this machine has 0", "--gpus", "got 1)")],
                   tmp_path=tmp_path)


def test_run_refuses_gpu_when_none_visible(harness, tmp_path, capsys):
    import torch
    if torch.cuda.device_count():
        pytest.skip("this machine has a GPU")
    rc, out, err = harness.run_cli(["run", gpu_sweep(harness, tmp_path), "--storage", tmp_path / "out", "--no-analysis"], capsys)
    harness.assert_refused(rc, out, err, [("resources.finetune.gpu:", "this machine has 0", "got 1)")],
                   tmp_path=tmp_path)


def test_run_refuses_more_cpus_than_given(harness, tmp_path, capsys):
    raw = harness.base(tmp_path)
    raw["resources"]["prune"]["cpu"] = 4
    rc, out, err = harness.run_cli(["run", harness.write(tmp_path, raw), "--storage", tmp_path / "out", "--cpus", "2",
                            "--gpus", "0"], capsys)
    harness.assert_refused(rc, out, err, [("resources.prune.cpu:", "this machine has 2", "got 4)")], tmp_path=tmp_path)


def test_validate_does_not_check_the_machine(harness, tmp_path, capsys):
    rc, out, err = harness.run_cli(["validate", gpu_sweep(harness, tmp_path)], capsys)
    assert rc == 0, err
    assert "error:" not in err and out.startswith("ok: small:")
    assert not (tmp_path / "out").exists()


def test_gpu_request_is_only_a_note_on_a_cluster(harness, tmp_path):
    p = Problems()
    raw = harness.base(tmp_path)
    raw["resources"]["finetune"]["gpu"] = 1
    sweep = parse(raw, p)
    assert sweep is not None and not p
    checks.check_resources(sweep, p, cpus=2, gpus=0, cluster=True)
    assert not p and p.lines == []
    assert len(p.warnings) == 1
    assert p.warnings[0].startswith("resources.finetune.gpu:") and "autoscaler" in p.warnings[0]
    local = Problems()
    checks.check_resources(sweep, local, cpus=2, gpus=0, cluster=False)
    assert local.lines == [w.replace(" (relying on the autoscaler)", "") for w in p.warnings]


# ---------------------------------------------------------------------------- storage


def test_run_storage_under_a_file(harness, tmp_path, capsys):
    (tmp_path / "afile").write_text("x\n")
    target = tmp_path / "afile" / "sweeps"
    rc, out, err = harness.run_cli(["run", harness.write(tmp_path, harness.base(tmp_path)), "--storage", target, "--gpus", "0"], capsys)
    harness.assert_refused(rc, out, err, [("--storage:", "is a file", "afile/sweeps")], tmp_path=tmp_path)
    assert (tmp_path / "afile").read_text() == "x\n"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores directory permissions")
def test_run_storage_read_only_directory(harness, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc, out, err = harness.run_cli(["run", harness.write(tmp_path, harness.base(tmp_path)), "--storage", ro / "sweeps",
                                "--gpus", "0"], capsys)
    finally:
        ro.chmod(0o700)
    harness.assert_refused(rc, out, err, [("--storage:", "cannot write", "ro/sweeps")], tmp_path=tmp_path)
    assert list(ro.iterdir()) == []


def test_run_storage_unsupported_scheme(harness, tmp_path, capsys):
    rc, out, err = harness.run_cli(["run", harness.write(tmp_path, harness.base(tmp_path)), "--storage", "ftp://x", "--gpus", "0"], capsys)
    harness.assert_refused(rc, out, err, [("--storage:", "scheme", "'ftp://x'")], tmp_path=tmp_path)


def test_run_bad_sweep_launches_nothing(harness, tmp_path, capsys):
    raw = harness.base(tmp_path)
    raw["finetune"]["lr"] = -1
    raw["modles"] = raw.pop("models")
    rc, out, err = harness.run_cli(["run", harness.write(tmp_path, raw), "--storage", tmp_path / "out", "--gpus", "0"], capsys)
    harness.assert_refused(rc, out, err, [("modles:", "did you mean 'models'"), ("finetune.lr:", "got -1)")],
                   tmp_path=tmp_path)


# ---------------------------------------------------------------------------- CLI syntax (argparse)

SYNTAX_CASES = [
    ("unknown-subcommand", ["bogus"], ("COMMAND:", "unknown command", "'bogus'")),
    ("no-subcommand", [], ("COMMAND:", "missing")),
    ("gpus-negative", ["run", "--gpus", "-1"], ("--gpus:", ">= 0", "'-1'")),
    ("cpus-not-a-number", ["run", "--cpus", "abc"], ("--cpus:", "number", "'abc'")),
    ("gpus-nan", ["resume", "somewhere", "--gpus", "nan"], ("--gpus:", "finite", "'nan'")),
    ("gpus-without-value", ["run", "--gpus"], ("--gpus:", "value")),
    ("validate-missing-argument", ["validate"], ("sweep:", "missing")),
    ("status-missing-argument", ["status"], ("sweep_dir:", "missing")),
    ("unknown-option", ["run", "x.yaml", "--fast"], ("--fast:", "unrecognized", "'--fast'")),
]


@pytest.mark.parametrize("argv,expected", [c[1:] for c in SYNTAX_CASES], ids=[c[0] for c in SYNTAX_CASES])
def test_cli_syntax(harness, tmp_path, capsys, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    rc, out, err = harness.run_cli(argv, capsys)
    harness.assert_refused(rc, out, err, [expected])
    assert err.splitlines()[0].startswith("usage: headsweep")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- not a sweep directory


def _empty_dir(tmp_path):
    d = tmp_path / "notasweep"
    d.mkdir()
    (d / "notes.txt").write_text("hello\n")
    return d


def _a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("hello\n")
    return f


@pytest.mark.parametrize("command", ["status", "resume", "analyze"])
@pytest.mark.parametrize("make", [_empty_dir, _a_file, lambda t: t / "missing"], ids=["dir", "file", "missing"])
def test_not_a_sweep_directory(harness, tmp_path, capsys, command, make):
    target = make(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    argv = [command, target] + (["--gpus", "0"] if command == "resume" else [])
    rc, out, err = harness.run_cli(argv, capsys)
    harness.assert_refused(rc, out, err, [("SWEEP_DIR:", "sweep directory", str(target.name))])
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


def test_help_is_exit_zero(harness, capsys):
    rc, out, err = harness.run_cli(["--help"], capsys)
    assert rc == 0 and "usage: headsweep" in out
    assert harness.error_lines(err) == []
