"""The progress display: counts from the trials' files, an ETA, plain lines when not a terminal."""
import io
import time
from types import SimpleNamespace

from headsweep.orchestrator.progress import Progress, count, eta
from headsweep.orchestrator.storage import Store
from headsweep.trials import layout


def _plan(a, b):
    return SimpleNamespace(stage_a=[SimpleNamespace(key=k) for k in a], stage_b=[SimpleNamespace(key=k) for k in b])


def _files(**trials):
    """name -> {file: mtime} for layout.trial_file paths."""
    out = {}
    for key, files in trials.items():
        for name, mtime in files.items():
            out[layout.trial_file(key, name)] = mtime
    return out


def test_counts_follow_the_files():
    since = 100.0
    files = _files(a0={layout.STATUS: 101, layout.RESULT: 111},             # done in this run
                   a1={layout.STATUS: 50, layout.RESULT: 60},               # done by an earlier run
                   a2={layout.STATUS: 102},                                 # running now
                   a3={layout.STATUS: 40},                                  # interrupted earlier: pending
                   b0={layout.STATUS: 103, layout.ERROR: 104},              # last attempt failed
                   b1={layout.STATUS: 105, layout.ERROR: 104})              # failed once, retried: running
    c = count(files, {"stage_a": ["a0", "a1", "a2", "a3"], "stage_b": ["b0", "b1", "b2"]}, since)
    assert {k: c["stage_a"][k] for k in ("done", "running", "failed", "total")} == \
        {"done": 2, "running": 1, "failed": 0, "total": 4}
    assert c["stage_a"]["durations"] == [10]          # only this run's trials time the ETA
    assert {k: c["stage_b"][k] for k in ("done", "running", "failed", "total")} == \
        {"done": 0, "running": 1, "failed": 1, "total": 3}


def test_eta_from_this_runs_durations_and_parallelism():
    # 2 trials of 10 s each done in 10 s of wall time (2 at once); 4 left -> 20 s
    c = {"stage_a": {"done": 2, "failed": 0, "total": 6, "durations": [10.0, 10.0]}}
    assert eta(c, 10.0) == 20.0
    assert eta({"stage_b": {"done": 0, "failed": 0, "total": 3, "durations": []}}, 5.0) is None  # unknown yet
    assert eta({"stage_b": {"done": 3, "failed": 0, "total": 3, "durations": [1.0]}}, 5.0) == 0.0


def test_plain_lines_when_not_a_terminal(tmp_path):
    store = Store(tmp_path)
    store.write_json(layout.status_file("a0"), {"attempt": 1})
    out = io.StringIO()            # not a terminal: no cursor movement, no redraws
    p = Progress(store, _plan(["a0"], ["b0", "b1"]), "run", out=out, interval_s=0.05, plain_every_s=0.0)
    p.start()
    time.sleep(0.3)
    store.write_json(layout.result_file("a0"), {"rows": []})
    time.sleep(0.3)
    p.stop()
    lines = out.getvalue().splitlines()
    assert lines and all(line.startswith("headsweep: [") for line in lines)
    assert "\x1b[" not in out.getvalue()
    assert "stage A 0/1 done, 1 running" in lines[0] and "stage B 0/2 done" in lines[0]
    assert "stage A 1/1 done, 0 running" in lines[-1]
    # ~12 refreshes, two different counts: a line only when the counts change, plus the last
    assert 2 <= len(lines) <= 3


def test_a_terminal_gets_the_live_display(tmp_path):
    class Tty(io.StringIO):
        def isatty(self):
            return True
    store = Store(tmp_path)
    out = Tty()
    p = Progress(store, _plan(["a0"], []), "run", out=out, interval_s=0.05)
    p.start()
    time.sleep(0.3)
    p.stop()
    text = out.getvalue()
    assert "stage A" in text and "0/1 done" in text and "░" in text and "headsweep: [" not in text
