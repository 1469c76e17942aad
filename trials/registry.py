"""One small registry class for every extension point: architectures, strategies, importance
methods, metrics, presets (lm-evaluation-harness style).

    STRATEGIES = Registry("strategy", key="strategies")

    @STRATEGIES.register("top")
    def top(scores, k, ...): ...

    STRATEGIES["tpo"]   # UserError: strategies: unknown strategy; available: ...; did you mean 'top'? (got 'tpo')

Registering a name twice is a programming error and raises at import time. Validation reads the
names from the registries, so a new entry is accepted by the sweep file without further edits.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from headsweep.trials.errors import UserError


class Registry(Mapping):
    def __init__(self, kind: str, *, key: str | None = None):
        self.kind = kind              # what an entry is, in messages ("strategy")
        self.key = key or kind        # the sweep-file key that names entries ("strategies")
        self._entries: dict[str, Any] = {}

    def register(self, *names: str) -> Callable:
        """Decorator: register the function or class (classes: one instance) under ``names``."""
        def deco(obj):
            value = obj() if isinstance(obj, type) else obj
            for name in names:
                self.add(name, value)
            return obj
        return deco

    def add(self, name: str, value: Any) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = value

    def error(self, name, key: str | None = None) -> UserError:
        """The one-line error for an unknown name: what is available, and the closest match."""
        close = difflib.get_close_matches(str(name), list(self._entries), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return UserError(key or self.key, name,
                         f"unknown {self.kind}; available: {', '.join(sorted(self._entries))}{hint}")

    def lookup(self, name, key: str | None = None):
        if name not in self._entries:
            raise self.error(name, key)
        return self._entries[name]

    def __getitem__(self, name):
        return self.lookup(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
