"""Fault injection for testing (documented in docs/reliability.md), off unless the variable is set.

    HEADSWEEP_FAULT="<stage>:<mode>[:<match>]"[;...]

- stage: ``A`` or ``B``
- mode: ``crash-once`` (raise on a trial's first attempt only), ``crash`` (raise on every
  attempt), ``exit-once`` (kill the trial's worker process on its first attempt, like an OOM kill),
  ``sleep<S>`` (wait S seconds first: widens the window for killing a driver mid-stage)
- match: optional; a strategy name, ``k=<K>``, ``seed=<S>`` or a trial-key prefix. Empty = all.

"Once" is remembered with marker files in ``<sweep>/.faults/`` so retries in new processes see it.
The driver reads the variable and hands it to every trial, so it reaches Ray workers that were
started before it was set (and cluster workers).
"""
from __future__ import annotations

import os

from trials import layout

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


def maybe_inject(spec, store, rules: str) -> None:
    for rule in filter(None, (r.strip() for r in rules.split(";"))):
        stage, mode, *rest = rule.split(":") + [""]
        if stage != spec.stage or not _matches(rest[0] if rest else "", spec):
            continue
        if mode.startswith("sleep"):
            import time
            time.sleep(float(mode[5:] or 1))
        elif mode == "crash":
            raise InjectedFault(f"injected fault ({rule}) in trial {spec.key}")
        elif mode in ("crash-once", "exit-once"):
            marker = layout.fault_marker(spec.key, mode)
            if store.exists(marker):
                continue
            store.write_bytes(marker, b"1")
            if mode == "exit-once":
                os._exit(1)
            raise InjectedFault(f"injected fault ({rule}) in trial {spec.key}")
