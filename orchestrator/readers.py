"""Typed readers for YAML sections: every problem becomes one line, ``key: problem (got value)``.

Generic pieces of the sweep-file parser: orchestrator/sweep.py holds the file's structure, the
dataclasses of trials/spec.py and orchestrator/sweep.py the defaults and rules of its keys.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import reprlib
from pathlib import Path
from typing import Any

import yaml

# Common names for keys that spelling similarity alone would not find.
ALIASES = {
    "learning_rate": "lr", "learningrate": "lr", "lr_rate": "lr", "num_epochs": "epochs",
    "num_train_epochs": "epochs", "n_epochs": "epochs", "epoch": "epochs", "bs": "batch_size",
    "batch": "batch_size", "train_batch_size": "batch_size", "fp16": "mixed_precision",
    "bf16": "mixed_precision", "precision": "mixed_precision", "model": "models",
    "strategy": "strategies", "seed": "seeds", "K": "k", "ks": "k", "head_counts": "k",
    "text": "text_column", "label": "label_column", "text_col": "text_column",
    "label_col": "label_column", "dataset": "source", "path": "source", "validation": "eval",
    "test": "eval", "gpus": "gpu", "cpus": "cpu", "num_gpus": "gpu", "num_cpus": "cpu",
    "output_dir": "storage", "out_dir": "storage", "recovery": "recovery_epochs",
}


class Problems:
    """Collects one-line problems; ``key: problem (got value)``."""

    def __init__(self):
        self.lines: list[str] = []
        self.warnings: list[str] = []

    def add(self, key: str, value: Any, problem: str) -> None:
        line = one_line(f"{key}: {problem} (got {shown(value)})")
        if line not in self.lines:  # the same problem found twice is still one problem
            self.lines.append(line)

    def warn(self, key: str, value: Any, problem: str) -> None:
        line = one_line(f"{key}: {problem} (got {shown(value)})")
        if line not in self.warnings:
            self.warnings.append(line)

    def __bool__(self):
        return bool(self.lines)


VALUE_CHARS = 200   # a value shown in a problem line is cut to about this many characters
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, VALUE_CHARS, VALUE_CHARS, 60
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = 8


def shown(value: Any) -> str:
    """A value as problem lines show it: its repr, bounded in depth, length and width (a huge or
    deeply nested value must not print megabytes), and any URI secret replaced by ``***``."""
    from headsweep.orchestrator.storage import redact
    text = value if isinstance(value, str) else None
    r = repr(text) if text is not None and len(text) <= VALUE_CHARS else _REPR.repr(value)
    r = redact(r)
    return r if len(r) <= VALUE_CHARS + 20 else r[:VALUE_CHARS] + "...'"


def one_line(text: str) -> str:
    """Problems come from many libraries; whatever they say is shown on one line."""
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


# ---------------------------------------------------------------------------- typed readers

def unknown_keys(d: dict, allowed, where: str, p: Problems) -> set[str]:
    """One line per unknown key, with the closest known key; returns the keys suggested (a
    misspelt key is one problem: the caller does not also report the intended key as missing)."""
    allowed = [a for a in allowed if not str(a).startswith("_")]
    suggested = set()
    for k in d:
        if k not in allowed:
            alias = ALIASES.get(str(k)) or ALIASES.get(str(k).lower())
            close = [alias] if alias in allowed else difflib.get_close_matches(
                str(k).lower(), list(allowed), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(allowed)}"
            if close:
                suggested.add(close[0])
            p.add(f"{where}{k}", d[k], f"unknown key{hint}")
    return suggested


def section(raw: dict, key: str, p: Problems) -> dict:
    v = raw.get(key, {})
    if v is None:
        return {}
    if not isinstance(v, dict):
        p.add(key, v, "must be a mapping")
        return {}
    return v


def number(key, v, p, *, integer=False, lo=None, hi=None, lo_open=False, hi_open=False, allow_none=False):
    """A number in range, or None after recording a problem. YAML reads ``2e-5`` as a string,
    so numeric strings are accepted for real-valued keys."""
    if v is None and allow_none:
        return None
    if isinstance(v, str) and not integer:
        try:
            v = float(v)
        except ValueError:
            pass
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok_type or (isinstance(v, float) and not math.isfinite(v)):
        p.add(key, v, "must be an integer" if integer else "must be a number")
        return None
    if lo is not None and (v <= lo if lo_open else v < lo):
        if hi is not None and lo_open and hi_open:
            p.add(key, v, f"must lie in ({lo}, {hi})")
        else:
            p.add(key, v, f"must be {'>' if lo_open else '>='} {lo}")
        return None
    if hi is not None and (v >= hi if hi_open else v > hi):
        if lo is not None and lo_open and hi_open:
            p.add(key, v, f"must lie in ({lo}, {hi})")
        else:
            p.add(key, v, f"must be {'<' if hi_open else '<='} {hi}")
        return None
    return v


def boolean(key, v, p):
    if not isinstance(v, bool):
        p.add(key, v, "must be true or false")
        return None
    return v


def string(key, v, p, choices=None):
    if not isinstance(v, str) or not v.strip():
        p.add(key, v, "must be a non-empty string")
        return None
    if choices and v not in choices:
        p.add(key, v, f"must be one of {', '.join(choices)}")
        return None
    return v


def names(key, v, p, choices=None) -> tuple[str, ...] | None:
    """One name or a list of distinct names, as a tuple (an empty list is an empty tuple);
    each one of ``choices`` if given."""
    values = [v] if isinstance(v, str) else v
    if not isinstance(values, list):
        p.add(key, v, "must be a name or a list of names")
        return None
    out = []
    for i, x in enumerate(values):
        k = f"{key}[{i}]" if isinstance(v, list) else key
        if not isinstance(x, str) or not x.strip():
            p.add(k, x, "must be a non-empty string")
            return None
        if choices and x not in choices:
            p.add(k, x, f"must be one of {', '.join(choices)}")
            return None
        if x in out:
            p.add(k, x, "listed twice")
            return None
        out.append(x)
    return tuple(out)


def read_fields(cls, section: dict, where: str, p: Problems, extra: tuple = ()) -> dict:
    """Read a sweep-file section into keyword arguments for the dataclass ``cls``.

    Each field's rule comes from its metadata (``trials.spec.num`` / ``flag`` / ``text``); keys
    the file leaves out keep the dataclass default. ``extra``: other keys the caller reads.
    """
    fields = [f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")]
    unknown_keys(section, [f.name for f in fields] + list(extra), f"{where}.", p)
    out = {}
    for f in fields:
        if f.name not in section:
            continue
        v, key = section[f.name], f"{where}.{f.name}"
        rule = {name: arg for name, arg in f.metadata.items() if name != "kind"}
        kind = f.metadata.get("kind", "str")
        if kind == "num":
            v = number(key, v, p, **rule)
        elif kind == "bool":
            v = boolean(key, v, p)
        elif kind == "names":
            v = names(key, v, p, choices=rule.get("choices"))
        elif v is None and rule.get("allow_none"):
            v = None
        else:
            v = string(key, v, p, choices=rule.get("choices"))
        if v is not None or rule.get("allow_none"):
            out[f.name] = v
    return out


def load_yaml(path: str | os.PathLike, p: Problems) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        p.add("(sweep file)", str(path), f"cannot read ({e.strerror or e})")
        return None
    except UnicodeDecodeError as e:
        p.add("(sweep file)", str(path), f"not a text (UTF-8) file: byte {e.start} cannot be decoded")
        return None
    try:
        raw = strict_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())[:VALUE_CHARS]
        p.add("(sweep file)", str(path), f"not valid YAML{where}: {problem}")
        return None
    if raw is None:
        p.add("(sweep file)", str(path), "is empty; expected a mapping of sweep keys (name:, models:, ...)")
    elif not isinstance(raw, dict):
        p.add("(sweep file)", str(path), f"must be a YAML mapping of sweep keys (name:, models:, ...), "
                                         f"not a {type(raw).__name__}")
    return raw


# ---------------------------------------------------------------------------- YAML without aliases

class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing anchors (``&a``) and aliases (``*a``) as it meets them: a
    sweep file needs neither, and an alias bomb (a few hundred bytes that expand to billions of
    nodes) is refused before anything is built or printed."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed in a sweep "
                                              "file; write the value out", event.start_mark)
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, "YAML anchors (&name) are not allowed in a sweep "
                                              "file; write the value out", event.start_mark)
        return super().compose_node(parent, index)


def strict_yaml(text: str | bytes) -> Any:
    """``yaml.safe_load`` without anchors and aliases (raises ``yaml.YAMLError`` on either)."""
    return yaml.load(text, Loader=_NoAliasLoader)


class NoAliasDumper(yaml.SafeDumper):
    """``yaml.safe_dump`` that writes a value seen twice out twice (never ``&id001`` / ``*id001``),
    so what headsweep writes (spec.yaml) reads back through ``strict_yaml``."""

    def ignore_aliases(self, data):
        return True
