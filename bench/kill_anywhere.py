"""Kill the driver anywhere, resume once, and check that nothing was lost, doubled or rewritten.

    python bench/kill_anywhere.py [--points 24] [--seed 0] [--storage DIR]

Each kill point runs a small sweep as a real driver process (``python -m headsweep run``),
SIGKILLs that process (only the driver: its gcs and raylet die with it, as on a lost head node;
Ray's agents linger a minute or two and are cleaned up here) at the point, then runs ONE
``headsweep resume`` and checks:

- it exits 0;
- every row of the grid is in results.parquet exactly once;
- every non-timing column equals an uninterrupted run of the same sweep (identical on the CPU);
- every trial result written before the kill is byte-for-byte unchanged.

Points: stage A before any checkpoint and with some; stage B early and late; while the tables are
published (``driver:kill:publish``); during the analysis; a second kill during the resume itself;
and SIGKILL at random times over the whole run. The last line printed is "N of N kill points
resumed"; the one JSON line before it (as every bench) carries the details.

tests/orchestrator/test_resume.py runs a few of these points in the default suite through the
``kill`` fixture, which loads this module.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from headsweep.trials import layout
from headsweep.trials.schema import VARYING_COLUMNS

# One tiny model, one seed, a handful of stage-B trials: seconds per run, every stage present.
SWEEP = {
    "name": "kill",
    "models": [{"name": "preset:tiny-distilbert", "label": "tiny"}],
    "data": {"source": "synthetic", "synthetic_size": 240, "max_length": 32},
    "importance": {"examples": 48},
    "finetune": {"epochs": 1, "lr": 1.0e-3, "batch_size": 32},
    "strategies": ["none", "top", "bottom", "random", "single-head"],
    "k": [0.25, 0.5],
    "seeds": [0, 1],
    "single_head_arch": False,
    "resources": {"finetune": {"cpu": 1, "gpu": 0}, "prune": {"cpu": 1, "gpu": 0}},
}
# Besides the timing columns: what differs between two identical runs by construction.
IGNORED = set(VARYING_COLUMNS) | {"node_id", "host", "attempt"}


@dataclass
class Outcome:
    point: str
    ok: bool
    problems: list = field(default_factory=list)
    killed_after_s: float = 0.0
    seconds: float = 0.0
    status_after_kill: str = ""    # what `headsweep status` said right after the (first) kill
    resume_output: str = ""


# ---------------------------------------------------------------------------- running a driver

def env_for(extra: dict | None = None) -> dict:
    env = dict(os.environ,
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("HEADSWEEP_FAULT", None)
    env.update(extra or {})
    return env


def start(args: list[str], env: dict, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "headsweep", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def sweep_file(where: Path, raw: dict | None = None) -> Path:
    import yaml
    path = where / "kill.yaml"
    path.write_text(yaml.safe_dump(raw or SWEEP))
    return path


def smaller(**changes) -> dict:
    """The kill sweep with some keys changed (the default suite uses one seed, one K)."""
    return {**SWEEP, **changes}


def store_of(sweep_dir: str):
    from headsweep.orchestrator.storage import Store
    return Store(sweep_dir)


def finished_results(store) -> dict[str, bytes]:
    """trial key -> its result.json bytes, for every finished trial."""
    out = {}
    for key in store.listdir(layout.TRIALS):
        if store.exists(layout.result_file(key)):
            out[key] = store.read_bytes(layout.result_file(key))
    return out


def kill_driver(proc: subprocess.Popen, store) -> None:
    """SIGKILL the driver process alone, then end what its Ray session left running (Ray's agents
    exit on their own a minute or two later; the tests must not leave them behind)."""
    from headsweep.orchestrator.sweepdir import session_processes
    session = None
    try:
        if store.exists(layout.LEASE):
            session = store.read_json(layout.LEASE).get("ray_session")
    except (OSError, ValueError):
        pass
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if session:
        time.sleep(1.0)
        for pid, _ in session_processes(session):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def wait_until(proc: subprocess.Popen, condition, timeout: float = 600) -> bool:
    """Poll ``condition()`` until true (True) or the process ends first (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


# ---------------------------------------------------------------------------- the points

def grid_keys(store) -> tuple[list[str], list[str]]:
    if not store.exists(layout.GRID):
        return [], []
    g = store.read_json(layout.GRID)
    return [t["key"] for t in g["stage_a"]], [t["key"] for t in g["stage_b"]]


def count_done(store, keys) -> int:
    return sum(store.exists(layout.result_file(k)) for k in keys)


def point_condition(point: str, store):
    """(extra env for the run, condition that says "kill now") for a named point."""
    def a_started():
        a, _ = grid_keys(store)
        return bool(a) and any(store.exists(layout.status_file(k)) for k in a) and count_done(store, a) == 0

    def a_some():
        a, _ = grid_keys(store)
        return bool(a) and 0 < count_done(store, a) < len(a)

    def b_done(n):
        def cond():
            _, b = grid_keys(store)
            return bool(b) and count_done(store, b) >= (n if n > 0 else len(b) + n)
        return cond

    if point == "stage_a_before_checkpoint":
        return {"HEADSWEEP_FAULT": "A:sleep4"}, a_started
    if point == "stage_a_some_checkpoints":
        return {"HEADSWEEP_FAULT": "A:sleep6:seed=1"}, a_some
    if point == "stage_b_early":
        return {"HEADSWEEP_FAULT": "B:sleep1"}, b_done(1)
    if point == "stage_b_late":
        return {"HEADSWEEP_FAULT": "B:sleep1"}, b_done(-2)
    if point == "publishing_tables":
        return {"HEADSWEEP_FAULT": "driver:kill:publish"}, lambda: False
    if point == "analysis":
        return {}, lambda: store.exists(layout.STATS) or store.exists(layout.FIGURES)
    raise ValueError(point)


def run_point(point: str, workdir: Path, storage: str, reference, *, delay: float | None = None,
              double: bool = False, analysis: bool = False, extra_env: dict | None = None,
              raw: dict | None = None) -> Outcome:
    """One kill point end to end. ``delay``: SIGKILL after that many seconds instead of a named
    point. ``double``: kill the resume too (once one more trial finished), then resume again."""
    from headsweep.orchestrator.status import format_status, sweep_status
    t0 = time.time()
    path = sweep_file(workdir, raw)
    from headsweep.orchestrator.storage import join
    sweep_dir = join(storage, SWEEP["name"]) if "://" in storage else str(Path(storage) / SWEEP["name"])
    store = store_of(sweep_dir)
    if delay is not None:
        env_extra, cond = {"HEADSWEEP_FAULT": "B:sleep1"}, None
    else:
        env_extra, cond = point_condition(point, store)
    flags = [] if analysis or point == "analysis" else ["--no-analysis"]
    proc = start(["run", str(path), "--storage", storage, "--cpus", "2", *flags], env_for({**(extra_env or {}),
                                                                                       **env_extra}), workdir)
    if delay is not None:
        reached = wait_until(proc, lambda: time.time() - t0 >= delay)
    else:
        reached = wait_until(proc, cond)
    killed_after = time.time() - t0
    problems = []
    if point == "publishing_tables":
        proc.wait()
        reached = proc.returncode == -signal.SIGKILL
    if not reached and delay is None:
        problems.append(f"the run ended (rc {proc.returncode}) before reaching the kill point")
    kill_driver(proc, store)
    status = format_status(sweep_status(sweep_dir)) if store.exists(layout.GRID) else ""
    before = finished_results(store)
    if double:
        resume = start(["resume", sweep_dir, "--no-analysis", "--cpus", "2"], env_for({**(extra_env or {}),
                                                                                    "HEADSWEEP_FAULT": "B:sleep1"}),
                       workdir)
        n0 = len(before)
        wait_until(resume, lambda: len(finished_results(store)) > n0)
        kill_driver(resume, store)
        before = finished_results(store)
    final_flags = [] if point == "analysis" else ["--no-analysis"]
    done = subprocess.run([sys.executable, "-m", "headsweep", "resume", sweep_dir, "--cpus", "2",
                           *final_flags], cwd=workdir, env=env_for(extra_env), capture_output=True,
                          text=True, timeout=900)
    if done.returncode != 0:
        problems.append(f"resume exited {done.returncode}: {done.stderr.strip()[-300:]}")
    else:
        problems += check_sweep(store, reference, before)
        if point == "analysis" and not store.exists(layout.REPORT):
            problems.append("the resumed analysis wrote no report")
    return Outcome(point + (" (+ a kill of the resume)" if double else ""), not problems, problems,
                   round(killed_after, 1), round(time.time() - t0, 1), status, done.stdout + done.stderr)


def check_sweep(store, reference, before: dict[str, bytes]) -> list[str]:
    import io

    import pandas as pd
    problems = []
    a, b = grid_keys(store)
    missing = [k for k in a + b if not store.exists(layout.result_file(k))]
    if missing:
        problems.append(f"{len(missing)} trials have no result")
    df = pd.read_parquet(io.BytesIO(store.read_bytes(layout.RESULTS)))
    if not df["trial_key"].is_unique:
        problems.append("a row is in the results twice")
    if len(df) != len(reference):
        problems.append(f"{len(df)} rows, the uninterrupted run has {len(reference)}")
    else:
        cols = [c for c in reference.columns if c not in IGNORED]
        x = df.set_index("trial_key").sort_index()[[c for c in cols if c != "trial_key"]]
        y = reference.set_index("trial_key").sort_index()[[c for c in cols if c != "trial_key"]]
        try:
            pd.testing.assert_frame_equal(x, y, check_dtype=False)
        except AssertionError as e:
            problems.append("results differ from the uninterrupted run: " + " ".join(str(e).split())[:300])
    changed = [k for k, blob in before.items() if store.read_bytes(layout.result_file(k)) != blob]
    if changed:
        problems.append(f"{len(changed)} result files written before the kill were rewritten")
    return problems


def reference_run(workdir: Path, storage: str, extra_env: dict | None = None, raw: dict | None = None):
    """The uninterrupted run every kill point is compared with."""
    import io

    import pandas as pd
    path = sweep_file(workdir, raw)
    done = subprocess.run([sys.executable, "-m", "headsweep", "run", str(path), "--storage", storage,
                           "--cpus", "2", "--no-analysis"], cwd=workdir, env=env_for(extra_env),
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"the reference run failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    from headsweep.orchestrator.storage import join
    sweep_dir = join(storage, SWEEP["name"]) if "://" in storage else str(Path(storage) / SWEEP["name"])
    return pd.read_parquet(io.BytesIO(store_of(sweep_dir).read_bytes(layout.RESULTS)))


NAMED = ("stage_a_before_checkpoint", "stage_a_some_checkpoints", "stage_b_early", "stage_b_late",
         "publishing_tables", "analysis")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=24, help="kill points in all (>= 9: the named ones, "
                    "a double kill, and the rest at random times)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random kill times")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import finish, log
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="hs-kill-"))
    try:
        t_ref = time.time()
        reference = reference_run(work, str(work / "reference"))
        ref_s = time.time() - t_ref
        log(f"reference run: {len(reference)} rows in {ref_s:.0f} s")
        rng = random.Random(args.seed)
        plan = [(p, {}) for p in NAMED] + [("stage_b_early", {"double": True})]
        while len(plan) < args.points:
            plan.append(("random", {"delay": round(rng.uniform(2.0, ref_s), 1)}))
        outcomes = []
        for i, (point, kw) in enumerate(plan):
            d = work / f"p{i:02d}"
            d.mkdir()
            o = run_point(point, d, str(d / "sweeps"), reference, **kw)
            if "delay" in kw:
                o.point = f"SIGKILL at {kw['delay']} s"
            outcomes.append(o)
            log(f"{i + 1}/{len(plan)} {o.point}: {'resumed' if o.ok else 'FAILED: ' + '; '.join(o.problems)} "
                f"({o.seconds:.0f} s)")
            o.status_after_kill = o.resume_output = ""  # keep the JSON line short
            shutil.rmtree(d, ignore_errors=True)
        ok = sum(o.ok for o in outcomes)
        finish({"benchmark": "kill_anywhere", "points": len(outcomes), "resumed": ok,
                "reference_rows": len(reference), "reference_seconds": round(ref_s, 1),
                "outcomes": [o.__dict__ for o in outcomes]}, False, t_start)
        print(f"{ok} of {len(outcomes)} kill points resumed")
        return 0 if ok == len(outcomes) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
