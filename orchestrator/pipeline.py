"""Stage B beside stage A: release each stage-B trial as soon as its stage-A checkpoint exists.

Stage B stays its own Ray Tune experiment (docs/design.md "Stages"), but its Tuner runs in a
driver thread while stage A's still runs, and its trials come from ``ReadyFirst`` instead of a
fixed grid. Without this, a stage-B slot waits for the slowest fine-tune: 3 fine-tunes on 2 slots
leave one slot idle for a whole fine-tune, and the hand-over between two Tuners costs seconds more
(bench/sweep_cost.py, BENCHMARKS.md).

Two rules keep this safe:
- a stage-B trial is released only when its checkpoint's ``result.json`` exists, so no trial ever
  waits inside a slot (which could starve a stage-A retry of resources);
- nothing is released while a fine-tune of this run has not started yet (no ``status.json``
  written by this run), so stage B never delays a fine-tune that is waiting for a slot; it only
  fills slots stage A leaves idle.
When the driver marks stage A as over (``layout.stage_over_marker``), trials whose checkpoint never
appeared (their fine-tune errored) are not released: the searcher finishes and the driver counts
them as skipped.

Nothing here is restored from Tune's own state: a resumed sweep starts a fresh searcher over the
trials that have no result yet (docs/reliability.md).
"""
from __future__ import annotations

import time

from ray.tune.search import ConcurrencyLimiter, SearchGenerator, Searcher

from headsweep.orchestrator.quarantine import read_json
from headsweep.orchestrator.storage import Store
from headsweep.trials import layout


class ReadyFirst(Searcher):
    """Suggests ``{"key": stage_b_key}`` in grid order, each once its checkpoint is ready.

    ``order``: (stage-B key, its stage-A key) for the stage-B trials of this run; ``stage_a``: the
    stage-A keys this run still runs (a fine-tune finished earlier is ready, not pending).
    """

    def __init__(self, sweep: str, order: list[tuple[str, str]], stage_a: list[str], run_id: str,
                 poll_s: float = 1.0):
        super().__init__(metric=None, mode=None)
        self.sweep, self.order, self.stage_a, self.run_id, self.poll_s = sweep, order, stage_a, run_id, poll_s
        self.given: set[str] = set()
        self._ready: set[str] = set()
        self._started: set[str] = set()
        self._checked = 0.0

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return True  # no limit: Ray's resources decide how many run at once

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def _started_now(self, store: Store, key: str) -> bool:
        status = read_json(store, layout.status_file(key), move_damaged=False) or {}
        return status.get("run") == self.run_id

    def _refresh(self) -> bool:
        """Re-read which checkpoints exist (at most every ``poll_s``: a store may be S3).
        Returns whether stage A is over."""
        store = Store(self.sweep)
        over = store.exists(layout.stage_over_marker(self.run_id))
        if time.monotonic() - self._checked >= self.poll_s or over:
            self._checked = time.monotonic()
            for _, a in self.order:
                if a not in self._ready and store.exists(layout.result_file(a)):
                    self._ready.add(a)
            for a in self.stage_a:
                if a not in self._started and (a in self._ready or self._started_now(store, a)):
                    self._started.add(a)
        return over

    def suggest(self, trial_id: str):
        left = [(b, a) for b, a in self.order if b not in self.given]
        if not left:
            return Searcher.FINISHED
        over = self._refresh()
        if not over and len(self._started) < len(self.stage_a):
            return None                      # a fine-tune still waits for a slot: it goes first
        for b, a in left:
            if a in self._ready:
                self.given.add(b)
                return {"key": b}
        return Searcher.FINISHED if over else None

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        pass


def ready_first(sweep: str, specs: list, stage_a: list, run_id: str) -> SearchGenerator:
    """The search algorithm for a stage-B Tuner. The searcher is wrapped in a no-op
    ConcurrencyLimiter only so that Tune keeps every released trial pending at once (its default
    for custom searchers is one pending trial, which would also show a cluster autoscaler one
    trial at a time)."""
    searcher = ReadyFirst(sweep, [(s.key, s.finetune.key) for s in specs], [s.key for s in stage_a], run_id)
    return SearchGenerator(ConcurrencyLimiter(searcher, max_concurrent=max(1, len(specs))))
