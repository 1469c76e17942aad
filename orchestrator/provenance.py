"""What a sweep's results were computed from, beside the trial keys: recorded in spec.yaml
(``provenance:``), compared by every run and resume (docs/reliability.md "Inputs that change").

A trial key hashes the spec, not what the spec points at. So the inputs a spec names are recorded
when a sweep directory is claimed, and checked again by every later run:

- ``data``: the SHA-256 of the local data files' contents (every split the sweep reads); for a hub
  dataset its revision (the pinned ``data.revision``, resolved to a commit when the hub is
  reachable);
- ``models``: each hub model's revision (``models[].revision``, or the hub's current commit);
- ``headsweep`` (the package version) and ``git_hash`` (the checkout's commit, ``+dirty`` if edited).

A value that cannot be known now (the hub is unreachable, not a git checkout) is not compared.
A change refuses the run with one line; ``--allow-drift`` runs anyway, records the change in
``drift.json`` and takes the new values as the record.
"""
from __future__ import annotations

import hashlib
import time

from headsweep.orchestrator.storage import Store
from headsweep.trials import layout


def _version() -> str | None:
    from importlib import metadata
    try:
        return metadata.version("headsweep")
    except metadata.PackageNotFoundError:
        return None


def data_digest(data) -> str:
    """SHA-256 over the local data files the splits read (names and contents, in path order)."""
    from headsweep.trials.data import local_files
    h = hashlib.sha256()
    for f in local_files(data):
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def hub_revision(repo: str, revision: str | None, kind: str) -> str | None:
    """The commit a hub model / dataset (at ``revision``, default the main branch) resolves to
    now; None when the hub cannot be reached (offline, no network)."""
    from headsweep.orchestrator.checks import hub_reachable
    if not hub_reachable():
        return None
    try:
        from huggingface_hub import HfApi
        info = (HfApi().model_info if kind == "model" else HfApi().dataset_info)(repo, revision=revision, timeout=10)
        return info.sha
    except Exception:  # unreachable, private, rate-limited: not known, so not compared
        return None


def _hub_dataset(source: str) -> str:
    from headsweep.trials.data import HUB_ALIASES
    repo = source.removeprefix("hub:").split(":")[0]
    for alias, target in HUB_ALIASES.items():
        if repo.startswith(alias):
            return target[0]
    return repo


def current(sweep) -> dict:
    """The provenance of ``sweep``'s inputs as they are now."""
    from headsweep.trials.data import SYNTHETIC_SOURCES, is_local_source
    from headsweep.trials.presets import PRESET_PREFIX
    from headsweep.trials.provenance import git_hash
    d = sweep.data
    if d.source in SYNTHETIC_SOURCES:
        data = {}
    elif is_local_source(d.source):
        data = {"sha256": data_digest(d)}
    else:
        data = {"revision": hub_revision(_hub_dataset(d.source), d.revision, "dataset")}
    models = {}
    for m in sweep.models:
        local = m.name.startswith((".", "/", "~")) or m.name.startswith(PRESET_PREFIX)
        models[m.label] = {} if local else {"revision": hub_revision(m.name, m.revision, "model")}
    g = git_hash()
    return {"headsweep": _version(), "git_hash": None if g == "unknown" else g, "data": data, "models": models}


def _flat(p: dict | None) -> dict:
    out = {}
    for k, v in (p or {}).items():
        if isinstance(v, dict):
            out |= {f"{k}.{kk}": vv for kk, vv in _flat(v).items()}
        else:
            out[k] = v
    return out


def changes(saved: dict | None, now: dict) -> list[tuple[str, object, object]]:
    """(what, recorded, now) for every input known both times and different."""
    old, new = _flat(saved), _flat(now)
    return [(k, old[k], new[k]) for k in sorted(new) if old.get(k) is not None and new[k] is not None
            and old[k] != new[k]]


def merged(saved: dict | None, now: dict) -> dict:
    """``now``, keeping a recorded value where it is unknown now (offline)."""
    out = {}
    for k, v in now.items():
        old = (saved or {}).get(k)
        if isinstance(v, dict):
            out[k] = merged(old if isinstance(old, dict) else {}, v)
        else:
            out[k] = v if v is not None else old
    return out


_WHAT = {"data.sha256": "the data files' contents", "data.revision": "the hub dataset's revision",
         "headsweep": "the headsweep version", "git_hash": "the code (git commit)"}


def drift_line(found: list[tuple[str, object, object]], root: str) -> str:
    """The one line that refuses a run whose inputs changed."""
    parts = []
    for k, old, new in found:
        what = _WHAT.get(k) or (f"model {k.split('.')[1]}'s hub revision" if k.startswith("models.") else k)
        parts.append(f"{what} changed ({str(old)[:12]} -> {str(new)[:12]})")
    return (f"SWEEP_DIR: the inputs changed since this sweep started: {'; '.join(parts)}; finished trials "
            "would mix with new ones: start a new sweep (another name), or pass --allow-drift to go on "
            f"anyway (recorded in {layout.DRIFT}) (got {root!r})")


def record_drift(store: Store, found: list, run_id: str | None) -> None:
    """Append the accepted changes to drift.json (``{"accepted": [...]}``)."""
    from headsweep.orchestrator.quarantine import read_json
    log = read_json(store, layout.DRIFT, need=("accepted",)) or {"accepted": []}
    log["accepted"].append({"at": time.time(), "run": run_id,
                            "changes": [{"what": k, "recorded": old, "now": new} for k, old, new in found]})
    store.write_json(layout.DRIFT, log)
