"""The sweep directory on a local path, NFS, or an object store (s3://, gs://) via pyarrow.fs.

Writes are atomic: local files go to a temporary name and are renamed (``trials.atomic``); an
object-store PUT is atomic by itself. A trial's ``result.json`` is always written last, so its presence means every
other output of that trial is complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath

import pyarrow.fs as pafs

from headsweep.trials import atomic


def is_uri(path: str) -> bool:
    return "://" in str(path)


# ---------------------------------------------------------------------------- secrets in URIs
# Query parameters that carry credentials (pyarrow's S3/GCS URIs, MLflow/HTTP URLs, tokens).
SECRET_PARAMS = ("access_key", "secret_key", "session_token", "access_token", "password", "token",
                 "api_key", "apikey", "secret", "credentials", "sig", "x-amz-signature",
                 "x-amz-credential", "x-amz-security-token")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:?#]*)(?::(?P<pw>[^/@\s?#]*))?@")
_SECRET_QUERY = re.compile(r"(?P<k>[?&;](?:" + "|".join(re.escape(k) for k in SECRET_PARAMS) + r"))=(?P<v>[^&#\s'\"]*)",
                           re.IGNORECASE)
USE_ENVIRONMENT = ("credentials do not belong in a sweep file or on the command line (they would be "
                   "saved in the sweep directory and printed); use the environment or a profile "
                   "(AWS_PROFILE / ~/.aws, GOOGLE_APPLICATION_CREDENTIALS, MLFLOW_TRACKING_PASSWORD, "
                   "WANDB_API_KEY)")


def has_credentials(uri: str) -> bool:
    """Whether a URI carries a password / secret (``scheme://user:pw@host``, ``scheme://KEY@bucket``
    for object stores, or a secret query parameter)."""
    text = str(uri)
    m = _USERINFO.search(text)
    if m and (m["pw"] is not None or m["scheme"].lower().startswith(("s3", "gs", "gcs", "hdfs"))):
        return True
    return bool(_SECRET_QUERY.search(text))


def redact(text: str) -> str:
    """``text`` with every URI password/secret replaced by ``***`` (for anything printed or saved)."""
    def userinfo(m):
        if m["pw"] is None and not m["scheme"].lower().startswith(("s3", "gs", "gcs", "hdfs")):
            return m[0]
        if m["scheme"].lower().startswith(("s3", "gs", "gcs", "hdfs")):
            return f"{m['scheme']}***@"  # an object store's user part is itself a key id
        return f"{m['scheme']}{m['user']}:***@"
    return _SECRET_QUERY.sub(lambda m: f"{m['k']}=***", _USERINFO.sub(userinfo, str(text)))


def cache_root() -> Path:
    """Where headsweep keeps local copies (checkpoints of object-store sweeps, remote analyses)."""
    return Path(os.environ.get("HEADSWEEP_CACHE", Path.home() / ".cache" / "headsweep"))


def root_digest(root: str) -> str:
    """16 hex digits naming one sweep directory (path or URI, credentials removed) in a cache."""
    return hashlib.sha256(redact(str(root)).encode()).hexdigest()[:16]


class Outside(ValueError):
    """A relative path that would leave the sweep directory (``..``, absolute, empty part)."""


def inside(rel: str) -> str:
    """``rel`` itself if it stays inside the sweep root; raises ``Outside`` otherwise. Every path
    the Store reads or writes goes through this (a label like ``../../x`` can never escape)."""
    rel = str(rel)
    if rel == "":
        return rel
    parts = PurePosixPath(rel).parts
    if rel.startswith(("/", "\\")) or "\\" in rel or any(p in ("..", ".") for p in parts) or ":" in parts[0]:
        raise Outside(f"path {rel!r} leaves the sweep directory")
    return rel


def join(base: str, rel: str) -> str:
    """``base/rel`` for paths and URIs; a URI's query (``?endpoint_override=...``) stays last."""
    base, _, query = str(base).partition("?")
    out = f"{base.rstrip('/')}/{rel}".rstrip("/") if rel else base.rstrip("/")
    return f"{out}?{query}" if query else out


def parent_and_name(root: str) -> tuple[str, str]:
    """Split a sweep directory (path or URI) into its storage and its name."""
    base, _, query = str(root).partition("?")
    parent, _, name = base.rstrip("/").rpartition("/")
    return (f"{parent}?{query}" if query else parent), name


class Store:
    """Relative-path access to one sweep directory."""

    def __init__(self, root: str | os.PathLike):
        root = str(root)
        if is_uri(root) and not root.startswith("file://"):
            self.fs, base = pafs.FileSystem.from_uri(root)
            self.local = None
            self.root = join(root, "")
            self._base = base.rstrip("/")
        else:
            self.local = Path(os.path.expanduser(root.removeprefix("file://"))).absolute()
            self.fs = pafs.LocalFileSystem()
            self.root = str(self.local)
            self._base = self.root

    def path(self, rel: str = "") -> str:
        """Path for pyarrow / Ray (absolute local path, or bucket/key for object stores)."""
        return f"{self._base}/{inside(rel)}".rstrip("/")

    def uri(self, rel: str = "") -> str:
        return join(self.root, inside(rel))

    def _local(self, rel: str) -> Path:
        return self.local / inside(rel)

    # -- files
    def exists(self, rel: str) -> bool:
        if self.local:
            return self._local(rel).exists()
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes:
        if self.local:
            return self._local(rel).read_bytes()
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.local:
            atomic.write_bytes(self._local(rel), data)  # a failed write leaves the old file, and no debris
            return
        with self.fs.open_output_stream(self.path(rel)) as f:
            f.write(data)

    def read_json(self, rel: str):
        return json.loads(self.read_bytes(rel))

    def write_json(self, rel: str, obj) -> None:
        self.write_bytes(rel, atomic.json_bytes(obj))

    def remove(self, rel: str) -> None:
        if self.local:
            p = self._local(rel)
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        elif self.exists(rel):
            info = self.fs.get_file_info(self.path(rel))
            (self.fs.delete_dir if info.type == pafs.FileType.Directory else self.fs.delete_file)(self.path(rel))

    def listdir(self, rel: str = "") -> list[str]:
        if self.local:
            d = self._local(rel)
            return sorted(x.name for x in d.iterdir()) if d.is_dir() else []
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True)
        return sorted(Path(i.path).name for i in self.fs.get_file_info(sel))

    def walk(self, rel: str = "") -> dict[str, float]:
        """Every file below ``rel`` (relative to the sweep root) with its modification time, in
        one listing (one request on an object store, where many ``exists`` calls would be slow)."""
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True, recursive=True)
        base = len(self._base) + 1
        return {i.path[base:]: (i.mtime.timestamp() if i.mtime else 0.0)
                for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File}

    # -- whole files and directories
    def put_file(self, local: Path, rel: str) -> None:
        """Move (local store) or upload a finished file into the sweep directory."""
        if self.local:
            dest = self._local(rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            shutil.move(str(local), tmp)
            os.replace(tmp, dest)
        else:
            self.write_bytes(rel, Path(local).read_bytes())

    def put_dir(self, local: Path, rel: str) -> None:
        """Place a finished directory at ``rel`` (replacing an older copy)."""
        if self.local:
            dest = self._local(rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.move(str(local), tmp)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        else:
            pafs.copy_files(str(local), self.path(rel), destination_filesystem=self.fs)

    def get_dir(self, rel: str, cache: Path) -> Path:
        """A local directory holding ``rel``: the path itself (local store) or a cached download."""
        if self.local:
            return self._local(rel)
        dest = Path(cache)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
            pafs.copy_files(self.path(rel), str(tmp), source_filesystem=self.fs)
            try:
                os.replace(tmp, dest)
            except OSError:  # another trial on this node finished the same download first
                shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def download(self, rels: list[str], dest: Path) -> Path:
        """Copy the named files/directories (those that exist) into a local directory."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for rel in rels:
            if not self.exists(rel):
                continue
            if self.fs.get_file_info(self.path(rel)).type == pafs.FileType.Directory:
                (dest / rel).mkdir(parents=True, exist_ok=True)
                pafs.copy_files(self.path(rel), str(dest / rel), source_filesystem=self.fs,
                                destination_filesystem=pafs.LocalFileSystem())
            else:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                (dest / rel).write_bytes(self.read_bytes(rel))
        return dest



def open_store(root: str | os.PathLike, key: str = "SWEEP_DIR") -> Store:
    """``Store(root)``, with what an object store says when it cannot be opened (no region offline,
    no credentials, a malformed URI) as one ``UserError`` line naming ``key``, never a traceback.
    A URI with credentials in it is refused (``USE_ENVIRONMENT``) before anything connects."""
    from headsweep.trials.errors import UserError
    if has_credentials(str(root)):
        raise UserError(key, redact(str(root)), USE_ENVIRONMENT)
    try:
        return Store(root)
    except (OSError, ValueError) as e:  # pyarrow: OSError (network, region) / ArrowInvalid (a ValueError)
        raise UserError(key, redact(str(root)), f"cannot open the object store ({store_error(e)})") from None


def store_error(e: BaseException) -> str:
    """An object-store exception as a short line, with a hint for the common causes."""
    text = redact(" ".join(str(e).split()))[:200] or type(e).__name__
    if "resolving region" in text or "NETWORK_CONNECTION" in text:
        text += "; is the store reachable from here? give the region in the URI (?region=...) or AWS_DEFAULT_REGION"
    return text
