"""One compact live progress display for a sweep, read from the sweep directory itself.

    stage A  ██████████░░░░░░  12/20 done   2 running   0 failed
    stage B  ███░░░░░░░░░░░░░  40/340 done  2 running   0 failed      elapsed 0:42  eta 1:55

On a terminal it redraws in place (rich); otherwise (CI, ``| tee``) it prints a plain line when the
counts change, at most every ``plain_every_s`` seconds, and a last line at the end. The counts
come from the trials' own files (``Store.walk``: one listing per refresh), so they are the same
truth ``headsweep status`` reads, and trials finished by an earlier run count as done.

When no trial has started or finished for ``stall_s`` seconds while trials wait to start, it prints
one line (and again after each further ``stall_s``) naming what the waiting trials need and what
the cluster has, in total and free (``ray.cluster_resources`` / ``available_resources``): a lost
worker or an autoscaler that cannot launch would otherwise look like a quiet sweep.
"""
from __future__ import annotations

import sys
import threading
import time

from headsweep.trials import layout

STAGES = (("stage A", "stage_a"), ("stage B", "stage_b"))


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def count(files: dict[str, float], stages: dict[str, list[str]], since: float) -> dict:
    """Per stage: done / running / failed / total, and this run's finished trials' durations.

    ``files``: ``Store.walk(trials)`` (relative path -> mtime). A trial is done when its result
    exists; failed when its last attempt's error is newer than its status; running when this run
    (mtime >= ``since``) started it; pending otherwise."""
    out = {}
    for stage, keys in stages.items():
        c = {"done": 0, "running": 0, "failed": 0, "total": len(keys), "durations": []}
        for k in keys:
            result, status, error = (files.get(layout.trial_file(k, n)) for n in
                                     (layout.RESULT, layout.STATUS, layout.ERROR))
            if result is not None:
                c["done"] += 1
                if status is not None and status >= since:
                    c["durations"].append(max(0.0, result - status))
            elif error is not None and (status is None or error >= status):
                c["failed"] += 1
            elif status is not None and status >= since:
                c["running"] += 1
        out[stage] = c
    return out


def eta(counts: dict, elapsed: float) -> float | None:
    """Seconds left: the remaining trials' expected work (each stage's mean duration in this run)
    over the parallelism seen so far (busy trial-seconds per wall-second). None until known."""
    busy, left = 0.0, 0.0
    for c in counts.values():
        remaining = c["total"] - c["done"] - c["failed"]
        if remaining and not c["durations"]:
            return None
        mean = sum(c["durations"]) / len(c["durations"]) if c["durations"] else 0.0
        busy += sum(c["durations"])
        left += remaining * mean
    if left == 0:
        return 0.0
    if busy <= 0 or elapsed <= 0:
        return None
    return left / max(busy / elapsed, 1e-9)


def _ray_resources() -> tuple[dict, dict]:
    import ray
    return ray.cluster_resources(), ray.available_resources()


def _fmt_resources(r: dict) -> str:
    shown = {k: v for k, v in r.items() if k in ("CPU", "GPU", "cpu", "gpu") or k.startswith("accelerator_type")}
    return "{" + ", ".join(f"{k.upper() if k in ('cpu', 'gpu') else k}: {v:g}" for k, v in sorted(shown.items())) + "}"


def waiting(files: dict[str, float], plan, since: float) -> dict[str, int]:
    """Trials that could start now but have not (per resources key): stage A without a result or
    an attempt of this run; stage B likewise, once its checkpoint's result exists."""
    def started(k):
        status = files.get(layout.trial_file(k, layout.STATUS))
        return files.get(layout.trial_file(k, layout.RESULT)) is not None or (status is not None and status >= since)
    out: dict[str, int] = {}
    for s in plan.stage_a:
        if not started(s.key):
            out["finetune"] = out.get("finetune", 0) + 1
    for s in plan.stage_b:
        if not started(s.key) and files.get(layout.trial_file(s.finetune.key, layout.RESULT)) is not None:
            need = "finetune" if s.recovery_epochs else "prune"
            out[need] = out.get(need, 0) + 1
    return out


class Progress:
    def __init__(self, store, plan, run_id: str, out=sys.stdout, interval_s: float | None = None,
                 plain_every_s: float = 15.0, stall_s: float = 600.0, cluster=_ray_resources):
        self.store, self.out, self.plain_every_s = store, out, plain_every_s
        self.plan, self.stall_s, self.cluster = plan, stall_s, cluster
        self._activity, self._last_stall_line, self._marks = None, 0.0, None
        self.stages = {"stage_a": [s.key for s in plan.stage_a], "stage_b": [s.key for s in plan.stage_b]}
        self.interval_s = interval_s or (1.0 if store.local is not None else 10.0)
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.since = time.time() - 1.0  # the store's clock may round mtimes down
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = None
        self._last_line, self._last_print = None, 0.0

    # -- what is shown
    def snapshot(self) -> dict:
        try:
            files = self.store.walk(layout.TRIALS)
        except OSError:
            files = {}
        self._check_stall(files)
        return count(files, self.stages, self.since)

    def _check_stall(self, files: dict[str, float]) -> None:
        """One line when nothing started or finished for ``stall_s`` while trials wait to start."""
        now = time.monotonic()
        marks = tuple(sorted((p, t) for p, t in files.items() if p.endswith(("/" + layout.STATUS, "/" + layout.RESULT))
                             and t >= self.since))
        if marks != self._marks or self._activity is None:
            self._marks, self._activity = marks, now
            return
        if now - self._activity < self.stall_s or now - self._last_stall_line < self.stall_s:
            return
        wait = waiting(files, self.plan, self.since)
        if not wait:
            return
        need = "; ".join(f"{n} need {_fmt_resources(self.plan.sweep.resources[k].as_ray())} each" for k, n in wait.items())
        try:
            total, free = self.cluster()
            has = f"the cluster has {_fmt_resources(total)} in all, {_fmt_resources(free)} free"
        except Exception as e:  # the cluster itself may be the problem
            has = f"the cluster's resources are unknown ({type(e).__name__})"
        print(f"headsweep: no trial started or finished for {_fmt(now - self._activity)}; {sum(wait.values())} "
              f"trials wait to start ({need}); {has}", file=self.out, flush=True)
        self._last_stall_line = now

    def lines(self, counts: dict) -> list[str]:
        elapsed = time.monotonic() - self._t0
        out = []
        for label, stage in STAGES:
            c = counts[stage]
            if not c["total"]:
                continue
            out.append(f"{label}  {_bar(c['done'], c['total'])}  {c['done']}/{c['total']} done  "
                       f"{c['running']} running  {c['failed']} failed")
        out.append(f"elapsed {_fmt(elapsed)}  eta {_fmt(eta(counts, elapsed))}")
        return out

    def plain(self, counts: dict) -> str:
        parts = [f"{label} {c['done']}/{c['total']} done, {c['running']} running, {c['failed']} failed"
                 for label, stage in STAGES if (c := counts[stage])["total"]]
        elapsed = time.monotonic() - self._t0
        return f"headsweep: [{_fmt(elapsed)}] " + " | ".join(parts) + f" | eta {_fmt(eta(counts, elapsed))}"

    # -- the loop
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="headsweep-progress")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if not self.tty:
            self._print_plain(self.snapshot(), force=True)

    def _loop(self) -> None:
        if self.tty:
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text
            console = Console(file=self.out)
            with Live(Text("\n".join(self.lines(self.snapshot()))), console=console, refresh_per_second=2,
                      transient=False) as live:
                while not self._stop.wait(self.interval_s):
                    live.update(Text("\n".join(self.lines(self.snapshot()))))
                live.update(Text("\n".join(self.lines(self.snapshot()))))
            return
        while not self._stop.wait(self.interval_s):
            self._print_plain(self.snapshot())

    def _print_plain(self, counts: dict, force: bool = False) -> None:
        key = tuple((c["done"], c["running"], c["failed"]) for c in counts.values())
        now = time.monotonic()
        if force or (key != self._last_line and now - self._last_print >= self.plain_every_s):
            print(self.plain(counts), file=self.out, flush=True)
            self._last_line, self._last_print = key, now


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = int(round(width * done / total)) if total else width
    return "█" * filled + "░" * (width - filled)
