"""The sweep directory's lease: one driver at a time (docs/reliability.md "One driver per sweep").

``SWEEP_DIR/lease.json`` is created atomically before a driver reads or writes anything else in
the directory, and removed by its holder when the run ends. It names the holder (run id, host, pid,
the host's boot id and the process's start time) and carries a heartbeat renewed by a thread.

- **Taken atomically.** Locally (and on NFS): the content is written to a private temporary file
  and hard-linked to ``lease.json`` (``link`` fails when the name exists; the classic NFS-safe
  exclusive create), or created with ``O_EXCL`` where links are not supported. On S3: a
  conditional ``PutObject`` (``If-None-Match: *``); renewals, takeovers and the release are
  conditional on the ETag the holder last wrote (``If-Match``). On GCS with google-cloud-storage
  installed: ``ifGenerationMatch=0``, then the generation. Elsewhere (GCS without it, HDFS) the
  create is check-then-write, which two drivers started within the same second can both pass:
  ``acquire`` says so.
- **A second driver is refused** (``Held``: one line naming the holder; exit 2), having written
  and deleted nothing.
- **A stale lease is taken over, and said so**: the heartbeat is older than the holder's TTL, or
  (same host, same boot) its process is gone or its pid now belongs to another process (another
  start time), or the host has rebooted since (another boot id). An unreadable lease is damaged:
  it is copied to ``quarantine/`` and taken over. A takeover is itself exclusive (a conditional
  write on object stores; locally an exclusive marker named after the stale lease's content).
- **Lost**: a holder whose renewal finds another driver's lease (it was taken over after the
  heartbeat stalled for a whole TTL) calls ``on_lost`` (the driver stops its run).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from headsweep.orchestrator.lease_stores import backend_for
from headsweep.orchestrator.storage import Store, redact
from headsweep.trials import layout

TTL_S = 120.0           # a heartbeat older than this (by the holder's own statement) is stale
RENEW_EVERY = 0.25      # of the TTL


class Held(Exception):
    """Another driver holds the lease; ``str()`` is the one line to print."""


# ---------------------------------------------------------------------------- who is this process

def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot, /proc/<pid>/stat field 22): with the boot
    id, it tells a live holder from a later process that reuses its pid."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def identity() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "boot_id": boot_id(),
            "start_time": start_time(os.getpid())}


def judge(lease: dict, now: float | None = None) -> tuple[bool, str]:
    """(held, why): whether the lease's holder is still alive, and how we know (or why not)."""
    now = time.time() if now is None else now
    host, pid = lease.get("host"), lease.get("pid")
    me = identity()
    if host == me["host"] and lease.get("boot_id") and me["boot_id"]:
        if lease["boot_id"] != me["boot_id"]:
            return False, f"{host} has rebooted since; pid {pid} no longer runs"
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False, f"pid {pid} on {host} no longer runs"
        except PermissionError:
            pass  # it exists (another user's process): compare the start time
        except (TypeError, ValueError, OSError):
            return False, f"pid {pid!r} on {host} is not a process"
        now_start = start_time(int(pid))
        if lease.get("start_time") is not None and now_start is not None and now_start != lease["start_time"]:
            return False, f"pid {pid} on {host} no longer runs (the pid now belongs to another process)"
        return True, f"pid {pid} on {host} runs"
    try:
        age = now - float(lease["heartbeat"])
        ttl = float(lease.get("ttl_s", TTL_S))
    except (KeyError, TypeError, ValueError):
        return False, "the lease has no heartbeat"
    if age > ttl:
        return False, f"no heartbeat from pid {pid} on {host} for {age:.0f} s (TTL {ttl:.0f} s)"
    return True, f"pid {pid} on {host}, heartbeat {max(age, 0):.0f} s ago"


def describe(lease: dict) -> str:
    return f"run {lease.get('run_id')} (pid {lease.get('pid')} on {lease.get('host')})"


# ---------------------------------------------------------------------------- the lease

def read_lease(store: Store) -> dict | None:
    """The lease as its holder wrote it, plus ``held`` / ``why`` (``judge``); ``{"damaged": ...}``
    when it cannot be read; None when there is none. Reads only."""
    try:
        cur = backend_for(store).read()
    except Exception as e:  # status must answer even when the store misbehaves
        return {"damaged": f"{type(e).__name__}: {redact(str(e))[:120]}", "held": False}
    if cur is None:
        return None
    try:
        lease = json.loads(cur[0])
        if not isinstance(lease, dict) or "run_id" not in lease:
            raise ValueError("not a lease")
    except (ValueError, UnicodeDecodeError) as e:
        return {"damaged": f"{type(e).__name__}", "held": False}
    held, why = judge(lease)
    return lease | {"held": held, "why": why}


class Lease:
    """``with Lease(store, run_id): ...``: hold the sweep directory for one driver run."""

    def __init__(self, store: Store, run_id: str, *, ttl_s: float = TTL_S, out=None, on_lost=None):
        self.store, self.run_id, self.ttl_s, self.out, self.on_lost = store, run_id, ttl_s, out, on_lost
        self.backend = backend_for(store)
        self.acquired_at: float | None = None
        self.extra: dict = {}
        self._version = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def _say(self, line: str) -> None:
        """One line to the driver's stderr (``out``); a closed stream must not stop the heartbeat."""
        try:
            print(line, file=self.out or sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    def content(self) -> bytes:
        return json.dumps({"run_id": self.run_id, **identity(), "started": self.acquired_at,
                           "heartbeat": time.time(), "ttl_s": self.ttl_s, **self.extra},
                          indent=1, sort_keys=True).encode()

    # -- taking it
    def acquire(self) -> Lease:
        self.acquired_at = time.time()
        if not self.backend.atomic:
            self._say("headsweep: note: this store has no atomic create here (gs:// needs google-cloud-storage "
                      "for one); the lease is check-then-write: do not start two drivers at the same moment")
        for _ in range(5):
            self._version = self.backend.create(self.content())
            if self._version is not None:
                return self._started()
            cur = self.backend.read()
            if cur is None:
                continue  # released meanwhile: try again
            data, version = cur
            try:
                holder = json.loads(data)
                if not isinstance(holder, dict) or "run_id" not in holder:
                    raise ValueError("not a lease")
                held, why = judge(holder)
            except (ValueError, UnicodeDecodeError) as e:
                holder, held, why = None, False, f"it was unreadable ({type(e).__name__})"
            if held:
                raise Held(self._refusal(holder, why))
            self._version = self.backend.replace(self.content(), version, takeover=True)
            if self._version is None:
                continue  # another driver took it over first: read again (and be refused)
            if holder is None:
                self._quarantine(data)
            who = f"the lease of {describe(holder)}" if holder else "an unreadable lease"
            self._say(f"headsweep: took over {who}: {why}")
            return self._started()
        cur = self.backend.read()
        holder = json.loads(cur[0]) if cur else {}
        raise Held(self._refusal(holder, judge(holder)[1] if holder else "it changes hands"))

    def _refusal(self, holder: dict, why: str) -> str:
        return (f"SWEEP_DIR: another driver runs this sweep: {describe(holder)}, {why}; wait for it or stop "
                f"it (nothing was changed) (got {redact(self.store.root)!r})")

    def _quarantine(self, data: bytes) -> None:
        from headsweep.orchestrator.quarantine import keep
        keep(self.store, layout.LEASE, data, out=self.out)

    def _started(self) -> Lease:
        self._thread = threading.Thread(target=self._beat, daemon=True, name="headsweep-lease")
        self._thread.start()
        return self

    # -- keeping it
    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s * RENEW_EVERY):
            try:
                self.renew()
            except Exception as e:  # a network blip: try again next beat (the TTL allows several)
                self._say(f"headsweep: note: lease heartbeat failed ({type(e).__name__}); retrying")
            if self.lost:
                return

    def renew(self, **extra) -> bool:
        with self._lock:
            if self.lost or self._version is None:
                return False
            self.extra.update(extra)
            version = self.backend.replace(self.content(), self._version)
            if version is None:
                self.lost = True
                try:
                    cur = self.backend.read()
                    holder = describe(json.loads(cur[0])) if cur else "nobody"
                except Exception:  # whoever holds it now, this driver does not
                    holder = "another driver"
                self._say(f"headsweep: lost the lease of {redact(self.store.root)} to {holder}; stopping")
                if self.on_lost is not None:
                    self.on_lost()
                return False
            self._version = version
            return True

    # -- giving it back
    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            if not self.lost and self._version is not None:
                try:
                    self.backend.delete(self._version)
                except Exception:  # a store error at the end: the lease expires by its heartbeat
                    pass
            self._version = None

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
