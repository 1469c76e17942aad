"""Fault injection for testing (documented in docs/reliability.md), off unless the variable is set.

    HEADSWEEP_FAULT="<stage>:<mode>[:<match>]"[;...]

- stage: ``A`` or ``B``; ``A@finetuned`` fires once stage A's fine-tuned weights are kept (after
  fine-tuning, before evaluation and importance), to test that a retry starts from them
- mode: ``crash-once`` (raise on a trial's first attempt only), ``crash`` (raise on every
  attempt), ``exit-once`` (kill the trial's worker process on its first attempt, like an OOM kill),
  ``sleep<S>`` (wait S seconds first: widens the window for killing a driver mid-stage)
- match: optional; a strategy name, ``k=<K>``, ``seed=<S>`` or a trial-key prefix. Empty = all.

The driver has points of its own: ``driver:kill:<point>`` SIGKILLs the driver process itself when
it reaches ``<point>`` (``publish`` = between writing results.parquet and importance.parquet,
``stage_a`` = once stage A's Tuner has returned), as a lost head node would;
``driver:stop:stage_a`` stops the run there as a Ctrl+C would (stage B does not run).

"Once" is remembered with marker files in ``<sweep>/.faults/`` so retries in new processes see it.
The driver reads the variable and hands it to every trial, so it reaches Ray workers that were
started before it was set (and cluster workers).
"""
from __future__ import annotations

import os

from headsweep.trials import layout

ENV = "HEADSWEEP_FAULT"


class InjectedFault(RuntimeError):
    pass


def _matches(match: str, spec) -> bool:
    if not match:
        return True
    if match.startswith("k="):
        return str(getattr(spec, "k", 0)) == match[2:]
    if match.startswith("seed="):
        return str(spec.seed) == match[5:]
    return getattr(spec, "strategy", None) == match or spec.key.startswith(match)


def rules_from_env() -> str:
    return os.environ.get(ENV, "")


def maybe_inject(spec, store, rules: str, point: str = "start") -> None:
    """Apply the rules that match this trial at this point of it (``start``, or ``finetuned``)."""
    for rule in filter(None, (r.strip() for r in rules.split(";"))):
        where, mode, *rest = rule.split(":") + [""]
        stage, _, at = where.partition("@")
        if stage != spec.stage or (at or "start") != point or not _matches(rest[0] if rest else "", spec):
            continue
        if mode.startswith("sleep"):
            import time
            time.sleep(float(mode[5:] or 1))
        elif mode == "crash":
            raise InjectedFault(f"injected fault ({rule}) in trial {spec.key}")
        elif mode in ("crash-once", "exit-once"):
            marker = layout.fault_marker(spec.key, mode if point == "start" else f"{mode}-{point}")
            if store.exists(marker):
                continue
            store.write_bytes(marker, b"1")
            if mode == "exit-once":
                os._exit(1)
            raise InjectedFault(f"injected fault ({rule}) in trial {spec.key}")


def _driver_rule(mode: str, point: str) -> bool:
    for rule in filter(None, (r.strip() for r in rules_from_env().split(";"))):
        stage, m, *rest = rule.split(":") + [""]
        if stage == "driver" and m == mode and rest[0] == point:
            return True
    return False


def driver_point(point: str) -> None:
    """Called by the driver at named points; ``driver:kill:<point>`` kills it there (SIGKILL: no
    cleanup runs, exactly like a lost machine)."""
    if _driver_rule("kill", point):
        import signal
        os.kill(os.getpid(), signal.SIGKILL)


def stop_point(point: str) -> bool:
    """Whether ``driver:stop:<point>`` asks the driver to stop there (as a Ctrl+C would)."""
    return _driver_rule("stop", point)
