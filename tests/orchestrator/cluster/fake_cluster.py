"""A local autoscaling Ray cluster for tests: Ray's own autoscaler and fake multi-node provider.

``FakeCluster`` runs the recipe of docs/cluster.md ("Try the cluster path on your laptop"):

    RAY_FAKE_CLUSTER=1 ray start --head --num-cpus=0 --autoscaling-config=autoscaler.yaml

with what a test on a shared machine needs on top, none of which changes what Ray does:

- its own ``--temp-dir`` (so ``ray.init()`` elsewhere on the machine never finds this cluster:
  Ray's address file lives in the temp dir), and a free port for everything the head binds
  (another Ray on the machine holds the defaults: its job agent then cannot start, and every
  submission answers "No available agent to submit job");
- token authentication on, with a token in the environment only (``RAY_AUTH_MODE=token``,
  ``RAY_AUTH_TOKEN``): the same mode a head gets on a machine that has ``~/.ray/auth_token``,
  without reading or writing that file;
- a marker in the environment of every process it starts (``HEADSWEEP_FAKE_CLUSTER=<id>``),
  which Ray passes on to the GCS, the monitor, every fake worker node's raylet and their workers.
  ``stop()`` ends exactly the processes that carry it: never ``ray stop``, which would end every
  Ray on the machine, other people's included.

``FakeCluster(..., lost_nodes_end=True)`` swaps in ``lost_node_provider.LostNodeProvider``: a
worker whose raylet died is terminated and replaced, as a cloud provider's lost instance is
(Ray's stock fake provider keeps such a node for ever).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
AUTOSCALER_YAML = HERE / "autoscaler.yaml"
SWEEP_YAML = HERE / "sweep.yaml"
MARKER = "HEADSWEEP_FAKE_CLUSTER"
# The fake provider names worker nodes by these ids (RAY_OVERRIDE_NODE_ID_FOR_TESTING), counting
# up from ...00001; a node with such an id was launched by the autoscaler, not by anyone else.
FAKE_NODE_PREFIX = "f" * 51


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def marked_pids(marker_value: str) -> list[int]:
    """Process ids whose environment carries ``MARKER=marker_value``."""
    needle = f"{MARKER}={marker_value}".encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if needle in env.split(b"\0"):
            out.append(int(entry))
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class FakeCluster:
    """Start with ``start()``, end with ``stop()`` (always, in a ``finally``)."""

    def __init__(self, workdir: Path, extra_env: dict[str, str] | None = None, lost_nodes_end: bool = False):
        """``lost_nodes_end``: use ``lost_node_provider.LostNodeProvider`` (a worker whose raylet
        died is terminated and replaced, as a cloud provider's lost instance is) instead of the
        stock fake provider, which keeps such a node for ever."""
        self.lost_nodes_end = lost_nodes_end
        # Unix socket paths must stay short (~100 bytes): the temp dir goes under /tmp.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="hs-ray-", dir="/tmp"))
        self.workdir = Path(workdir)
        self.id = secrets.token_hex(8)
        # Every port a head binds gets a free one: another Ray on this machine (a test's
        # ray.init(), someone's sweep) holds the defaults (6379, 8265, the agent's 52365, 10001).
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.ports = {"--dashboard-agent-listen-port": free_port(), "--ray-client-server-port": free_port(),
                      "--metrics-export-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
                      "--runtime-env-agent-port": free_port()}
        self.gcs_address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.config = self.workdir / "autoscaler.yaml"
        self.env = self._env(extra_env or {})

    def _env(self, extra: dict) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTEST_"))}
        env.update({
            MARKER: self.id,
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",   # the monitor's loop (default 5 s)
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "RAY_USAGE_STATS_ENABLED": "0",
            # the venv's `headsweep` and `ray` commands on every node (the job's shell too)
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        })
        if self.lost_nodes_end:   # the monitor imports the provider from here
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
        env.update(extra)
        return env

    def client_env(self) -> dict:
        """The environment of a client outside the cluster (``ray job submit``, ``ray status``):
        the token, but not the marker."""
        env = {k: v for k, v in self.env.items() if k not in (MARKER, "RAY_FAKE_CLUSTER")}
        env["RAY_ADDRESS"] = self.dashboard
        return env

    def start(self, timeout: float = 120) -> None:
        config = yaml.safe_load(AUTOSCALER_YAML.read_text())
        config["provider"]["gcs_address"] = self.gcs_address
        if self.lost_nodes_end:
            config["provider"].update(type="external", module="lost_node_provider.LostNodeProvider")
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))
        cmd = ["ray", "start", "--head", "--num-cpus=0", f"--autoscaling-config={self.config}",
               f"--port={self.gcs_port}", "--node-ip-address=127.0.0.1",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
               f"--temp-dir={self.temp_dir}", "--object-store-memory=100000000",
               "--disable-usage-stats", *(f"{k}={v}" for k, v in self.ports.items())]
        subprocess.run(cmd, env=self.env, cwd=self.workdir, check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    # ---------------------------------------------------------------- what the cluster is
    def nodes(self) -> list[dict]:
        """Every node the GCS knows (alive and dead), from the dashboard's state API."""
        out = subprocess.run(["ray", "list", "nodes", "--detail", "--format=json", "--limit=100",
                              f"--address={self.dashboard}"],
                             env=self.client_env(), capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        return json.loads(out.stdout)

    def raylets(self) -> dict[str, int]:
        """Fake worker node id -> its raylet's pid (the head's raylet is not in it)."""
        out = {}
        for pid in marked_pids(self.id):
            cmd = cmdline(pid).split(" ")
            if cmd[0].endswith("/raylet"):   # its node id is on its command line: --node_id=<hex>
                node = next((a.split("=", 1)[1] for a in cmd if a.startswith("--node_id=")), None)
                if node and node.startswith(FAKE_NODE_PREFIX) and node != FAKE_NODE_PREFIX + "00000":
                    out[node] = pid
        return out

    def kill_node(self, node_id: str) -> int:
        """SIGKILL a worker node's raylet, as a lost machine would: its workers die with it."""
        pid = self.raylets()[node_id]
        os.kill(pid, signal.SIGKILL)
        return pid

    def logs(self, pattern: str = "monitor.*", tail: int | None = 4000) -> str:
        """The session's log files matching ``pattern`` (the last ``tail`` characters of each)."""
        files = sorted(self.temp_dir.glob(f"session_*/logs/{pattern}"))
        return "\n".join(f"== {f.name}\n{f.read_text(errors='replace')[-(tail or 0):]}" for f in files)

    def launched(self) -> int:
        """Worker nodes the autoscaler says it launched (its monitor.log: "Launching N nodes")."""
        import re
        # (the monitor's logger may write a record more than once: count distinct lines)
        lines = set(re.findall(r".*Launching \d+ nodes, type ray\.worker\.cpu.*", self.logs("monitor.log", tail=None)))
        return sum(int(re.search(r"Launching (\d+) nodes", ln).group(1)) for ln in lines)

    # ---------------------------------------------------------------- stop
    def stop(self, grace: float = 5) -> list[int]:
        """End every process of this cluster; returns the pids that were still alive after it
        (empty when all went)."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
            pids = marked_pids(self.id)
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while marked_pids(self.id) and time.monotonic() < deadline:
                time.sleep(0.2)
        left = marked_pids(self.id)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left
