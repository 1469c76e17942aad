"""Offline validation of the Ray cluster launcher file ``cluster.yaml``.

``ray up`` does, in order (ray/autoscaler/_private/commands.py::_bootstrap_config):
  1. ``prepare_config``  - merge the AWS defaults.yaml shipped with Ray, merge
     setup commands, check docker settings, fill per-type min/max workers.
     Pure Python, no network.
  2. ``fillout_available_node_types_resources`` - asks the EC2 API
     (DescribeInstanceTypes) for CPUs/GPUs of each instance type.  NETWORK.
  3. ``validate_config`` - Ray's JSON schema (ray-schema.json) plus Ray's own
     cross-field checks.  No network.
  4. ``bootstrap_aws`` - IAM, key pairs, VPC subnets, security groups.  NETWORK.

These tests run 1 and 3 (with sockets blocked to prove they stay offline), the
schema on the file as written, the EC2 ``RunInstances`` request model from
botocore's bundled service data (when botocore is installed), and the
project's own checks.  Step 2 is made unnecessary by declaring ``resources``
on every node type, which the project checks require anyway.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import importlib.util
import json
import re
import shlex
import socket
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "cluster.yaml"
TOKEN_FILE = "~/.ray/auth_token"   # Ray's default token path (`ray get-auth-token --generate` writes it)

# Per-trial requests of the default sweep (docs/design.md, sweep file `resources`).
# configs/sst2.yaml, when present, is checked too (see trial_requests()).
DEFAULT_TRIAL_RESOURCES = {
    "finetune": {"cpu": 2, "gpu": 1},
    "prune": {"cpu": 1, "gpu": 0.25},
}

# (vCPUs, NVIDIA GPUs) of instance types a user is likely to pick.  Ray learns
# GPU counts only from the EC2 API during `ray up`, so offline the project keeps
# this table: a worker on a known type must not advertise more than it has.
KNOWN_INSTANCE_TYPES = {
    "m5.large": (2, 0), "m5.xlarge": (4, 0), "m5.2xlarge": (8, 0),
    "g4dn.xlarge": (4, 1), "g4dn.2xlarge": (8, 1), "g4dn.12xlarge": (48, 4),
    "g5.xlarge": (4, 1), "g5.2xlarge": (8, 1), "g5.4xlarge": (16, 1),
    "g5.8xlarge": (32, 1), "g5.12xlarge": (48, 4), "g5.48xlarge": (192, 8),
    "g6.xlarge": (4, 1), "g6.2xlarge": (8, 1), "g6.12xlarge": (48, 4),
    "g6e.xlarge": (4, 1), "g6e.12xlarge": (48, 4),
    "p3.2xlarge": (8, 1), "p3.8xlarge": (32, 4),
    "p4d.24xlarge": (96, 8), "p5.48xlarge": (192, 8),
}

SECRET_PATTERNS = {
    "AWS access key id": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "aws_secret_access_key": r"(?i)aws_secret_access_key",
    "aws_session_token": r"(?i)aws_session_token",
    "aws_credentials (provider credentials block)": r"(?i)\baws_credentials\b",
    "password": r"(?i)passw(?:or)?d",
    "private key block": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "Hugging Face token": r"\bhf_[A-Za-z0-9]{30,}\b",
    "GitHub token": r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",
}


# --------------------------------------------------------------------------- helpers


def load_config(path: Path = CLUSTER_YAML) -> dict:
    with open(path) as f:
        config = yaml.safe_load(f)  # what `ray up` uses
    assert isinstance(config, dict), f"{path} is not a YAML mapping"
    return config


@functools.lru_cache(maxsize=1)
def ray_schema() -> dict:
    spec = importlib.util.find_spec("ray")  # locates ray without importing it
    assert spec is not None and spec.submodule_search_locations, "ray is not installed"
    path = Path(spec.submodule_search_locations[0]) / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


def _dotted(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def schema_errors(config: dict) -> list[str]:
    """Every violation of Ray's own cluster schema, as 'dotted.key: message'."""
    schema = ray_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return sorted(f"{_dotted(e.absolute_path)}: {e.message}" for e in validator.iter_errors(config))


def secret_findings(text: str) -> list[str]:
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for name, pattern in SECRET_PATTERNS.items():
            if re.search(pattern, line):
                found.append(f"line {lineno}: looks like a {name}")
    return found


def worker_types(config: dict) -> dict:
    head = config.get("head_node_type")
    return {k: v for k, v in config.get("available_node_types", {}).items() if k != head}


def trial_requests() -> dict:
    requests = copy.deepcopy(DEFAULT_TRIAL_RESOURCES)
    sst2 = REPO / "configs" / "sst2.yaml"
    if sst2.is_file():
        res = (yaml.safe_load(sst2.read_text()) or {}).get("resources") or {}
        for stage, req in res.items():
            if isinstance(req, dict):
                requests[f"configs/sst2.yaml:{stage}"] = {
                    "cpu": req.get("cpu", 1), "gpu": req.get("gpu", 0)}
    return requests


def ray_start_calls(commands) -> list[tuple[str, dict]]:
    """Parse every `ray start ...` in a list of shell commands with Ray's own
    click command.  Returns (where, params); unknown options raise ValueError."""
    import click
    from ray.scripts.scripts import start

    calls = []
    for i, cmd in enumerate(commands or []):
        for segment in re.split(r";|&&|\|\|", cmd):
            try:
                tokens = shlex.split(segment)
            except ValueError:  # a split inside quotes; only matters for `ray start`
                if "ray start" in segment:
                    raise ValueError(f"[{i}]: cannot parse {segment.strip()!r}") from None
                continue
            if tokens[:2] != ["ray", "start"]:
                continue
            try:
                ctx = start.make_context("start", tokens[2:])
            except click.ClickException as e:
                raise ValueError(f"[{i}]: {e.format_message()}") from None
            calls.append((f"[{i}]", ctx.params))
    return calls


def project_errors(config: dict) -> list[str]:
    """headsweep's own requirements, each message starting with the key it is about."""
    errors: list[str] = []
    head = config.get("head_node_type")
    node_types = config.get("available_node_types") or {}

    if config.get("cluster_name") != "headsweep":
        errors.append(f"cluster_name: {config.get('cluster_name')!r}, expected 'headsweep'")
    provider = config.get("provider") or {}
    if provider.get("type") != "aws" or not provider.get("region"):
        errors.append("provider: must be type aws with a region")
    for key in ("idle_timeout_minutes", "upscaling_speed"):
        if not isinstance(config.get(key), (int, float)) or config[key] <= 0:
            errors.append(f"{key}: must be set to a positive number, got {config.get(key)!r}")

    # Node types advertise whole units; only trials ask for fractions.
    for name, nt in node_types.items():
        for res, value in (nt.get("resources") or {}).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                errors.append(
                    f"available_node_types.{name}.resources.{res}: {value!r} is not a "
                    "whole non-negative number (node types advertise whole units)")

    # Head: CPU 0 so Tune never schedules a trial there; on-demand.
    if head not in node_types:
        errors.append(f"head_node_type: {head!r} is not in available_node_types")
    else:
        hres = node_types[head].get("resources") or {}
        if hres.get("CPU") != 0 or hres.get("GPU", 0) != 0:
            errors.append(f"available_node_types.{head}.resources.CPU: head must advertise "
                          f"CPU: 0 and no GPU so no trial lands on it, got {hres}")
        if "InstanceMarketOptions" in (node_types[head].get("node_config") or {}):
            errors.append(f"available_node_types.{head}.node_config.InstanceMarketOptions: "
                          "the head (driver, GCS) must be on-demand")

    # Workers: scale to zero; at least one GPU type that fits every trial.
    workers = worker_types(config)
    gpu_workers = {}
    for name, nt in workers.items():
        if nt.get("min_workers", 0) != 0:
            errors.append(f"available_node_types.{name}.min_workers: {nt['min_workers']!r}, "
                          "must be 0 (no idle GPUs between sweeps)")
        if nt.get("max_workers", config.get("max_workers", 0)) > config.get("max_workers", 0):
            errors.append(f"available_node_types.{name}.max_workers: exceeds global max_workers")
        gpus = (nt.get("resources") or {}).get("GPU")
        if isinstance(gpus, int) and not isinstance(gpus, bool) and gpus >= 1:
            gpu_workers[name] = nt
    if not gpu_workers:
        errors.append("available_node_types: no worker node type with an integer GPU resource >= 1")

    for name, nt in gpu_workers.items():
        res, node_config = nt["resources"], nt.get("node_config") or {}
        itype = node_config.get("InstanceType")
        if itype in KNOWN_INSTANCE_TYPES:
            vcpus, gpus = KNOWN_INSTANCE_TYPES[itype]
            if res["GPU"] != gpus:
                errors.append(f"available_node_types.{name}.resources.GPU: {res['GPU']} but "
                              f"{itype} has {gpus} GPU(s)")
            if res.get("CPU", vcpus) > vcpus:
                errors.append(f"available_node_types.{name}.resources.CPU: {res['CPU']} but "
                              f"{itype} has {vcpus} vCPUs")
        for stage, req in trial_requests().items():
            if res.get("CPU", 0) < req["cpu"] or res["GPU"] < req["gpu"]:
                errors.append(f"available_node_types.{name}.resources: {res} cannot fit one "
                              f"{stage} trial {req}")
        if (node_config.get("InstanceMarketOptions") or {}).get("MarketType") != "spot":
            errors.append(f"available_node_types.{name}.node_config.InstanceMarketOptions: "
                          "GPU workers should be spot (MarketType: spot)")
        profile = node_config.get("IamInstanceProfile") or {}
        if not (profile.get("Name") or profile.get("Arn")):
            errors.append(f"available_node_types.{name}.node_config.IamInstanceProfile: GPU "
                          "workers need an instance profile to write trials to S3")

    # Dashboard (and job API) only on the head's loopback; reached via SSH tunnel.
    for key in ("head_start_ray_commands", "worker_start_ray_commands",
                "setup_commands", "head_setup_commands", "worker_setup_commands"):
        try:
            calls = ray_start_calls(config.get(key))
        except ValueError as e:
            errors.append(f"{key}{e}")
            continue
        heads = [(w, p) for w, p in calls if p.get("head")]
        if key == "head_start_ray_commands" and len(heads) != 1:
            errors.append(f"{key}: expected exactly one `ray start --head`, found {len(heads)}")
        for where, params in calls:
            if params.get("head") and params.get("dashboard_host") != "127.0.0.1":
                errors.append(f"{key}{where}: --dashboard-host is "
                              f"{params.get('dashboard_host')!r}, must be 127.0.0.1")
        if key == "worker_start_ray_commands" and not any(p.get("address") for _, p in calls):
            errors.append(f"{key}: no `ray start --address=$RAY_HEAD_IP:6379`")

    # One pinned Ray version everywhere: image == pip pin == the local Ray.
    local_ray = importlib.metadata.version("ray")
    docker = config.get("docker") or {}
    images = {k: docker[k] for k in ("image", "head_image", "worker_image") if docker.get(k)}
    if not images:
        errors.append("docker.image: no Ray image configured")
    for key, image in images.items():
        m = re.fullmatch(r"rayproject/ray(?:-ml)?:(\d+\.\d+\.\d+)-py\d+(-\w+)?", image)
        if not m:
            errors.append(f"docker.{key}: {image!r} is not a pinned rayproject/ray image")
        elif m.group(1) != local_ray:
            errors.append(f"docker.{key}: {image!r} runs Ray {m.group(1)}, local Ray is {local_ray}")
    worker_image = docker.get("worker_image") or docker.get("image") or ""
    if not re.search(r"-(gpu|cu\d+)$", worker_image):
        errors.append(f"docker.image: {worker_image!r} is not a GPU (CUDA) image")

    # Token authentication on every node: each `ray start` runs with RAY_AUTH_MODE=token, and the
    # token file (never the token) is synced from the user's machine.
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for i, cmd in enumerate(config.get(key) or []):
            if "ray start" in cmd and not re.search(r"RAY_AUTH_MODE=token\b[^;]*;.*ray start|"
                                                    r"RAY_AUTH_MODE=token\s+ray start", cmd, re.S):
                errors.append(f"{key}[{i}]: `ray start` without RAY_AUTH_MODE=token (GCS and Ray Client "
                              "would accept anyone who reaches the head)")

    # The project is synced and installed (with the cloud extra) on every node.
    mounts = config.get("file_mounts") or {}
    if mounts.get(TOKEN_FILE) != TOKEN_FILE:
        errors.append(f"file_mounts: the Ray token file {TOKEN_FILE} is not synced to the nodes")
    repo_mounts = [r for r, l in mounts.items() if not str(l).startswith("~") and (REPO / l).resolve() == REPO]
    for remote, local in mounts.items():
        if str(local).startswith("~"):
            if local != TOKEN_FILE:  # files of the user's machine: only the token, which lives there
                errors.append(f"file_mounts.{remote}: {local!r} is outside the repository")
        elif not (REPO / local).exists():
            errors.append(f"file_mounts.{remote}: {local!r} does not exist (relative to the repo root)")
    if not repo_mounts:
        errors.append("file_mounts: the repository root ('.') is not synced to the nodes")
    setup = " ".join(config.get("setup_commands") or [])
    if not any(re.search(r"pip install .*" + re.escape(r.replace("~", "$HOME")) + r"\[cloud\]", setup)
               for r in repo_mounts):
        errors.append("setup_commands: no `pip install <synced repo>[cloud]`")
    pins = re.findall(r"ray\[[\w,]*\]==([\d.]+)", setup)
    if pins != [local_ray]:
        errors.append(f"setup_commands: Ray must be pinned once to {local_ray}, found {pins}")
    return errors


def write_broken_copy(tmp_path: Path, mutate) -> Path:
    config = load_config()
    mutate(config)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Fail loudly if anything tries to reach AWS (or anywhere)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


def ray_prepare_and_validate(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


# --------------------------------------------------------------------------- the real file


def test_cluster_yaml_matches_ray_schema():
    config = load_config()
    assert config["cluster_name"] == "headsweep"
    assert schema_errors(config) == []


def test_ray_prepare_config_and_validate_config_offline(no_network):
    config = load_config()
    prepared = ray_prepare_and_validate(config)
    # Ray's merge ran: defaults filled, setup commands merged into the head's.
    assert prepared["cluster_synced_files"] == []
    assert prepared["head_setup_commands"][: len(config["setup_commands"])] == config["setup_commands"]
    assert prepared["available_node_types"][config["head_node_type"]]["max_workers"] == 0
    assert prepared["docker"]["image"] == config["docker"]["image"]


def test_project_checks_pass():
    assert project_errors(load_config()) == []


def test_gpu_worker_dashboard_and_scale_to_zero():
    # The headline requirements, spelled out (project_errors covers them too).
    config = load_config()
    workers = worker_types(config)
    gpu = {n: w for n, w in workers.items() if w["resources"].get("GPU", 0) >= 1}
    assert gpu, "no GPU worker type"
    assert all(type(w["resources"]["GPU"]) is int for w in gpu.values())
    assert all(w.get("min_workers", 0) == 0 for w in workers.values())
    head_calls = [p for _, p in ray_start_calls(config["head_start_ray_commands"]) if p["head"]]
    assert [p["dashboard_host"] for p in head_calls] == ["127.0.0.1"]


def test_no_secrets_in_cluster_yaml():
    text = CLUSTER_YAML.read_text()
    assert "provider" in text
    assert secret_findings(text) == []


def test_node_configs_are_valid_ec2_runinstances_requests():
    botocore_session = pytest.importorskip("botocore.session")
    from botocore.validate import ParamValidator

    run_instances = botocore_session.get_session().get_service_model("ec2").operation_model("RunInstances")
    shape = run_instances.input_shape
    for name, nt in load_config()["available_node_types"].items():
        request = {k: v for k, v in nt["node_config"].items() if k != "SubnetIds"}  # Ray-only key
        request.update(MinCount=1, MaxCount=1)  # Ray adds these
        report = ParamValidator().validate(request, shape)
        assert not report.has_errors(), f"{name}: {report.generate_report()}"
        assert request["InstanceType"] in shape.members["InstanceType"].enum, name
        market = request.get("InstanceMarketOptions", {}).get("MarketType")
        if market is not None:
            assert market in shape.members["InstanceMarketOptions"].members["MarketType"].enum


# --------------------------------------------------------------------------- broken copies


def test_unknown_top_level_key_fails_schema(tmp_path, no_network):
    path = write_broken_copy(tmp_path, lambda c: c.update(worker_count=3))
    broken = load_config(path)
    errors = schema_errors(broken)
    assert len(errors) == 1 and "worker_count" in errors[0], errors
    with pytest.raises(jsonschema.ValidationError, match="worker_count"):
        ray_prepare_and_validate(broken)


def test_fractional_gpu_on_node_type_fails(tmp_path, no_network):
    def half_gpu(c):
        c["available_node_types"]["ray.worker.gpu"]["resources"]["GPU"] = 0.5

    broken = load_config(write_broken_copy(tmp_path, half_gpu))
    # Ray's schema rejects it, naming the key ...
    errors = schema_errors(broken)
    assert errors == ["available_node_types.ray.worker.gpu.resources.GPU: 0.5 is not of type 'integer'"]
    with pytest.raises(jsonschema.ValidationError, match="0.5 is not of type 'integer'") as info:
        ray_prepare_and_validate(broken)
    assert list(info.value.absolute_path)[-2:] == ["resources", "GPU"]
    # ... and so does the project's own check, should a future schema relax it.
    assert any(e.startswith("available_node_types.ray.worker.gpu.resources.GPU: 0.5 ")
               for e in project_errors(broken)), project_errors(broken)


def _set(path, value):
    def mutate(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def _drop(path):
    def mutate(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return mutate


W, H = ("available_node_types", "ray.worker.gpu"), ("available_node_types", "ray.head.cpu")
HEAD_START = ("ulimit -n 65536; ray start --head --port=6379 --autoscaling-config="
              "~/ray_bootstrap_config.yaml --dashboard-host={}")


@pytest.mark.parametrize(
    "mutate, key",
    [
        (_set(W + ("min_workers",), 1), "available_node_types.ray.worker.gpu.min_workers"),
        (_set(W + ("resources",), {"CPU": 4}), "available_node_types: no worker node type"),
        (_set(W + ("resources",), {"CPU": 4, "GPU": 2}), "available_node_types.ray.worker.gpu.resources.GPU"),
        (_set(W + ("resources",), {"CPU": 1, "GPU": 1}), "available_node_types.ray.worker.gpu.resources"),
        (_drop(W + ("node_config", "InstanceMarketOptions")), "ray.worker.gpu.node_config.InstanceMarketOptions"),
        (_drop(W + ("node_config", "IamInstanceProfile")), "ray.worker.gpu.node_config.IamInstanceProfile"),
        (_set(H + ("resources",), {"CPU": 4}), "available_node_types.ray.head.cpu.resources.CPU"),
        (_set(("head_start_ray_commands",), ["ray stop", HEAD_START.format("0.0.0.0")]), "head_start_ray_commands[1]"),
        (_set(("head_start_ray_commands",), ["ray stop", HEAD_START.format("127.0.0.1").replace("dashboard-host", "dashbaord-host")]), "head_start_ray_commands[1]: No such option"),
        (_set(("docker", "image"), "rayproject/ray:2.9.0-py311-gpu"), "docker.image"),
        (_set(("docker", "image"), "rayproject/ray:latest-gpu"), "docker.image"),
        (_set(("setup_commands",), ["pip install -U headsweep"]), "setup_commands"),
        (_set(("file_mounts",), {"~/headsweep": "does-not-exist", TOKEN_FILE: TOKEN_FILE}), "file_mounts"),
        (_set(("file_mounts",), {"~/headsweep": "."}), "file_mounts: the Ray token file"),
        (_set(("head_start_ray_commands",), ["ray stop", HEAD_START.format("127.0.0.1")]),
         "head_start_ray_commands[1]: `ray start` without RAY_AUTH_MODE=token"),
        (_set(("worker_start_ray_commands",), ["ray stop", "ray start --address=$RAY_HEAD_IP:6379"]),
         "worker_start_ray_commands[1]: `ray start` without RAY_AUTH_MODE=token"),
    ],
    ids=["worker-min1", "no-gpu", "gpu-overclaim", "too-few-cpus", "on-demand", "no-iam",
         "head-cpus", "dashboard-public", "bad-option", "ray-mismatch", "unpinned", "no-install", "mount",
         "no-token-file", "head-without-token", "worker-without-token"],
)
def test_project_check_rejects_broken_copy(tmp_path, mutate, key):
    broken = load_config(write_broken_copy(tmp_path, mutate))
    errors = project_errors(broken)
    assert any(key in e for e in errors), errors


@pytest.mark.parametrize(
    "mutate",
    [
        _set(("provider", "aws_secret_access_key"), "x" * 40),
        _set(("provider", "aws_credentials"), {"aws_access_key_id": "AKIA" + "Q" * 16}),
        _set(("setup_commands",), ["export AWS_ACCESS_KEY_ID=" + "AKIA" + "Z" * 16]),
        _set(("docker", "run_options"), ["-e DB_PASSWORD=hunter2"]),
        _set(("worker_setup_commands",), ["export HF_TOKEN=hf_" + "a" * 34]),
        _set(("head_setup_commands",), ["echo '-----BEGIN RSA " + "PRIVATE KEY-----' > k"]),
    ],
    ids=["secret-key", "credentials-block", "access-key-id", "password", "hf-token", "private-key"],
)
def test_secret_scan_rejects_broken_copy(tmp_path, mutate):
    path = write_broken_copy(tmp_path, mutate)
    # Ray's schema lets all of these through (provider allows any key, commands are strings) ...
    assert schema_errors(load_config(path)) == []
    # ... the project's scan does not.
    assert secret_findings(path.read_text()), path.read_text()


def test_cluster_docs_agree_with_reliability_and_state_the_exposure():
    """docs/cluster.md said retries resume from checkpoints and that resume restores Tune's state
    (docs/reliability.md: neither), and that token authentication was off while the Jobs API "is
    protected"."""
    cluster = " ".join((REPO / "docs" / "cluster.md").read_text().split())
    reliability = " ".join((REPO / "docs" / "reliability.md").read_text().split())
    for wrong in ("resumes from the last checkpoint", "restores the Ray Tune experiments",
                  "runs **without** token authentication", "the Jobs API is protected"):
        assert wrong not in cluster, wrong
    assert "never `Tuner.restore`s" in reliability and "never restores Ray Tune's state" in cluster
    assert "RAY_AUTH_MODE=token" in cluster and "ray get-auth-token --generate" in cluster
    assert "plain text" in cluster   # what token authentication does not do, said plainly
