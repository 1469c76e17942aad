"""The sweep directory on a local path, NFS, or an object store (s3://, gs://) via pyarrow.fs.

Writes are atomic: local files go to a temporary name and are renamed (``trials.atomic``); an
object-store PUT is atomic by itself. A trial's ``result.json`` is always written last, so its presence means every
other output of that trial is complete.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from headsweep.trials import atomic


def is_uri(path: str) -> bool:
    return "://" in str(path)


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
        return f"{self._base}/{rel}".rstrip("/")

    def uri(self, rel: str = "") -> str:
        return join(self.root, rel)

    # -- files
    def exists(self, rel: str) -> bool:
        if self.local:
            return (self.local / rel).exists()
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes:
        if self.local:
            return (self.local / rel).read_bytes()
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.local:
            atomic.write_bytes(self.local / rel, data)  # a failed write leaves the old file, and no debris
            return
        with self.fs.open_output_stream(self.path(rel)) as f:
            f.write(data)

    def read_json(self, rel: str):
        return json.loads(self.read_bytes(rel))

    def write_json(self, rel: str, obj) -> None:
        self.write_bytes(rel, atomic.json_bytes(obj))

    def remove(self, rel: str) -> None:
        if self.local:
            p = self.local / rel
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        elif self.exists(rel):
            info = self.fs.get_file_info(self.path(rel))
            (self.fs.delete_dir if info.type == pafs.FileType.Directory else self.fs.delete_file)(self.path(rel))

    def listdir(self, rel: str = "") -> list[str]:
        if self.local:
            d = self.local / rel
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
            dest = self.local / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            shutil.move(str(local), tmp)
            os.replace(tmp, dest)
        else:
            self.write_bytes(rel, Path(local).read_bytes())

    def put_dir(self, local: Path, rel: str) -> None:
        """Place a finished directory at ``rel`` (replacing an older copy)."""
        if self.local:
            dest = self.local / rel
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
            return self.local / rel
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

