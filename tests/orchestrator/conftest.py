"""Fixtures of the orchestrator tests: the small sweep, Ray, and the bad-input harness.

Helpers are shared through these fixtures, never imported from another test module.
"""
import copy
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

# A sweep small enough for CI: one tiny model, synthetic data, a fine-tune of a few seconds.
SMALL = {
    "name": "small",
    "models": [{"name": "preset:tiny-distilbert", "label": "tiny"}],
    "data": {"source": "synthetic", "synthetic_size": 240, "max_length": 32},
    "importance": {"examples": 48},
    "finetune": {"epochs": 1, "lr": 1.0e-3, "batch_size": 32},
    "strategies": ["none", "top", "random", "single-head"],
    "k": [0.25],
    "seeds": [0, 1],
    "single_head_arch": {"init": "pretrained"},
    "resources": {"finetune": {"cpu": 1, "gpu": 0}, "prune": {"cpu": 1, "gpu": 0}},
    "random_draws": 1,        # one random-K draw: the draws have their own tests (test_grid.py)
}
# Independently of orchestrator.grid: 2 variants x 2 seeds fine-tunes; per (multi-head model,
# seed): top@K, random@K, single-head.
SMALL_STAGE_A = 2 * 2
SMALL_STAGE_B = 2 * 3
LINE = re.compile(r"^error: [^:\s][^:]*: .+ \(got .+\)$")  # error: <key>: <problem> (got <value>)


@pytest.fixture
def small_raw():
    return copy.deepcopy(SMALL)


@pytest.fixture(scope="session")
def small_template():
    """The small sweep for module- and session-scoped fixtures (copy it before changing it)."""
    return copy.deepcopy(SMALL)


@pytest.fixture(scope="session")
def small_counts():
    """(stage-A fine-tunes, stage-B trials) of the small sweep, counted by hand."""
    return SMALL_STAGE_A, SMALL_STAGE_B


@pytest.fixture
def write_sweep(tmp_path):
    def write(raw, name="sweep.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw))
        return path
    return write


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the in-process sweeps of the session (the CLI reuses it)."""
    import ray
    ray.init(num_cpus=2, num_gpus=0, log_to_driver=False, logging_level="ERROR", include_dashboard=False)
    yield
    ray.shutdown()


# ---------------------------------------------------------------------------- bad input

@pytest.fixture
def offline_and_no_ray(monkeypatch):
    """Validation must never start Ray, and must not depend on the network."""
    import ray

    from headsweep.orchestrator import driver
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    was_running = ray.is_initialized()  # a session fixture of another module may have started it
    started = []

    def refuse(*a, **kw):
        started.append((a, kw))
        raise AssertionError("Ray was started while refusing bad input")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(driver, "start_ray", refuse)
    yield
    assert not started, "Ray was started"
    assert ray.is_initialized() == was_running
    if not was_running:
        assert not ray.is_initialized()


def _base(tmp_path) -> dict:
    raw = copy.deepcopy(SMALL)
    raw["storage"] = str(tmp_path / "out")
    return raw


def _write(tmp_path, raw, name="sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return path


def _run_cli(argv, capsys):
    from headsweep.orchestrator import cli
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if "error:" in ln]


def _assert_refused(rc, out, err, expected, *, tmp_path=None, exact_format=True):
    """rc 2; one ``error:`` line per expected problem, each naming its key and value (all the
    substrings of its tuple, lines in order); no traceback; nothing written to storage."""
    text = out + err
    assert "Traceback" not in text, text
    assert rc == 2, text
    lines = _error_lines(err)
    assert len(lines) == len(expected), f"expected {len(expected)} error lines, got:\n{err}"
    for line, parts in zip(lines, expected):
        for part in parts:
            assert part in line, f"{part!r} not in {line!r}"
        if exact_format:
            assert LINE.match(line), f"not 'error: key: problem (got value)': {line!r}"
    assert "ok:" not in out
    if tmp_path is not None:
        assert not (tmp_path / "out").exists(), "a sweep directory was created"


HARNESS = SimpleNamespace(base=_base, write=_write, run_cli=_run_cli, error_lines=_error_lines,
                          assert_refused=_assert_refused, LINE=LINE)


@pytest.fixture(scope="session")
def harness():
    """The bad-input harness: ``base(tmp)`` (the small sweep, storage under tmp), ``write(tmp, raw)``,
    ``run_cli(argv, capsys)``, ``error_lines(err)``, ``assert_refused(rc, out, err, expected)``."""
    return HARNESS


# ---------------------------------------------------------------------------- object storage

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_creds():
    return dict(CREDS)


@pytest.fixture(scope="module")
def bucket():
    """An S3 API on 127.0.0.1 (moto) with a bucket ``sweeps``; yields a storage URI under it."""
    import logging
    import os

    moto_server = pytest.importorskip("moto.server", reason="moto[server] (dev extra) not installed")
    import boto3
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    srv.start()
    host, port = srv.get_host_and_port()
    old = {k: os.environ.get(k) for k in CREDS}
    os.environ.update(CREDS)
    boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="sweeps")
    yield f"s3://sweeps/runs?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    for k, v in old.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    srv.stop()


# ---------------------------------------------------------------------------- killing drivers

@pytest.fixture(scope="session")
def kill():
    """bench/kill_anywhere.py as a module: run a sweep, SIGKILL its driver at a point, resume once,
    check (the default suite runs a few points; the script runs 20+)."""
    import importlib.util
    path = Path(__file__).resolve().parents[2] / "bench" / "kill_anywhere.py"
    spec = importlib.util.spec_from_file_location("kill_anywhere", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
