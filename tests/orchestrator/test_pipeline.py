"""orchestrator.pipeline.ReadyFirst: stage-B trials are released only when their checkpoint
exists, never ahead of a fine-tune still waiting for a slot, and the searcher finishes once
stage A is over. Pure logic on a local store: no Ray cluster is started."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("ray.tune")

from headsweep.orchestrator.pipeline import ReadyFirst, ready_first  # noqa: E402
from headsweep.orchestrator.storage import Store  # noqa: E402
from headsweep.trials import layout  # noqa: E402

RUN = "run-1"
OVER = layout.stage_over_marker(RUN)
STATUS, RESULT, ERROR = layout.STATUS, layout.RESULT, layout.ERROR
from ray.tune.search import Searcher  # noqa: E402


def _specs():
    a = [SimpleNamespace(key=f"a{i}") for i in range(3)]
    b = [SimpleNamespace(key=f"b{i}{j}", finetune=a[i]) for i in range(2) for j in range(2)]  # a2: no B
    return a, b


def _mark(store, key, *names, run=RUN):
    for n in names:
        store.write_json(layout.trial_file(key, n), {"state": n, "run": run})


@pytest.fixture
def setup(tmp_path):
    a, b = _specs()
    store = Store(str(tmp_path))
    s = ReadyFirst(str(tmp_path), [(x.key, x.finetune.key) for x in b], [x.key for x in a], RUN, poll_s=0.0)
    return store, s


def test_nothing_is_released_before_checkpoints_exist(setup):
    store, s = setup
    assert s.suggest("t1") is None
    for k in ("a0", "a1", "a2"):
        _mark(store, k, STATUS)          # all fine-tunes running, none finished
    assert s.suggest("t2") is None


def test_released_in_grid_order_as_checkpoints_land(setup):
    store, s = setup
    for k in ("a0", "a1", "a2"):
        _mark(store, k, STATUS)
    _mark(store, "a1", RESULT)
    assert [s.suggest(f"t{i}") for i in range(3)] == [{"key": "b10"}, {"key": "b11"}, None]
    _mark(store, "a0", RESULT)
    assert [s.suggest(f"u{i}") for i in range(3)] == [{"key": "b00"}, {"key": "b01"}, Searcher.FINISHED]


def test_a_fine_tune_waiting_for_a_slot_goes_first(setup):
    store, s = setup
    _mark(store, "a0", STATUS, RESULT)
    _mark(store, "a1", STATUS)           # a2 has not started: it is waiting for a slot
    assert s.suggest("t1") is None
    _mark(store, "a2", STATUS)
    assert s.suggest("t2") == {"key": "b00"}


def test_finishes_when_stage_a_is_over_without_a_checkpoint(setup):
    store, s = setup
    _mark(store, "a0", STATUS, RESULT)
    _mark(store, "a1", STATUS, ERROR)  # a1 failed for good: b10, b11 are skipped
    _mark(store, "a2", STATUS)
    assert [s.suggest(f"t{i}") for i in range(3)] == [{"key": "b00"}, {"key": "b01"}, None]
    store.write_json(OVER, {"at": 0})
    assert s.suggest("t3") == Searcher.FINISHED


def test_a_fine_tune_started_by_an_earlier_run_still_waits(setup):
    """After a kill, status.json of an interrupted fine-tune remains; in the new run it waits for
    a slot again, so stage B must not go ahead of it."""
    store, s = setup
    _mark(store, "a0", STATUS, RESULT)
    _mark(store, "a1", STATUS)
    _mark(store, "a2", STATUS, run="an-earlier-run")
    assert s.suggest("t1") is None
    _mark(store, "a2", STATUS)
    assert s.suggest("t2") == {"key": "b00"}


def test_every_released_trial_may_be_pending_at_once(tmp_path):
    """Tune keeps one pending trial for a custom searcher unless a ConcurrencyLimiter says
    otherwise; the limiter must not limit anything itself."""
    from ray.tune.execution.tune_controller import _get_max_pending_trials
    a, b = _specs()
    gen = ready_first(str(tmp_path), b, a, RUN)
    assert _get_max_pending_trials(gen) == len(b)
    store = Store(str(tmp_path))
    for k in ("a0", "a1", "a2"):
        _mark(store, k, STATUS, RESULT)
    limiter = gen.searcher
    limiter.searcher.poll_s = 0.0
    assert [limiter.suggest(f"t{i}") for i in range(5)] == [{"key": x.key} for x in b] + [Searcher.FINISHED]


def test_a_resumed_run_releases_what_an_earlier_run_finished(tmp_path):
    """A resume whose fine-tunes all finished before: nothing of stage A runs in this run, and
    every stage-B trial is released at once."""
    a, b = _specs()
    store = Store(str(tmp_path))
    for k in ("a0", "a1", "a2"):
        _mark(store, k, STATUS, RESULT, run="an-earlier-run")
    s = ReadyFirst(str(tmp_path), [(x.key, x.finetune.key) for x in b], [], RUN, poll_s=0.0)
    assert [s.suggest(f"t{i}") for i in range(5)] == [{"key": x.key} for x in b] + [Searcher.FINISHED]
