"""Where a lease lives: one small object, created, replaced and deleted atomically where the store
allows it (orchestrator/lease.py says what each store guarantees).

Each backend: ``create(data) -> version | None`` (None: it exists); ``read() -> (bytes, version) |
None`` (absent); ``replace(data, expected, takeover=False) -> version | None`` (None: it is not
``expected`` any more); ``delete(expected) -> bool``. ``atomic`` says whether create is.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from headsweep.orchestrator.storage import Store
from headsweep.trials import layout


class _LocalBackend:
    atomic = True

    def __init__(self, path: Path):
        self.path = path

    @staticmethod
    def _version(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def _tmp(self, data: bytes) -> Path:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        return tmp

    def _exclusive(self, name: Path, data: bytes) -> bool:
        """Create ``name`` holding ``data`` if it does not exist, atomically, content complete."""
        tmp = self._tmp(data)
        try:
            os.link(tmp, name)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some FUSE / SMB mounts): O_EXCL, then the content
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def create(self, data: bytes) -> str | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self._version(data) if self._exclusive(self.path, data) else None

    def read(self):
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return data, self._version(data)

    def replace(self, data: bytes, expected: str, takeover: bool = False) -> str | None:
        if takeover:  # one taker per stale lease: an exclusive marker named after its content
            marker = self.path.with_name(f".{self.path.name}.takeover-{expected[:16]}")
            if not self._exclusive(marker, data):
                return None
        cur = self.read()
        if cur is None or cur[1] != expected:
            return None
        os.replace(self._tmp(data), self.path)
        return self._version(data)

    def delete(self, expected: str) -> bool:
        cur = self.read()
        if cur is None or cur[1] != expected:
            return False
        self.path.unlink(missing_ok=True)
        for marker in self.path.parent.glob(f".{self.path.name}.takeover-*"):
            marker.unlink(missing_ok=True)
        return True


class _S3Backend:
    atomic = True

    def __init__(self, store: Store, rel: str):
        import boto3
        parts = urlsplit(store.uri(rel))
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        endpoint = q.get("endpoint_override")
        if endpoint and "://" not in endpoint:
            endpoint = f"{q.get('scheme', 'https')}://{endpoint}"
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name=q.get("region"))
        self.bucket, self.key = parts.netloc, parts.path.lstrip("/")

    @staticmethod
    def _refused(e) -> bool:
        code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
        return code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409", "NoSuchKey")

    def _put(self, data: bytes, **cond) -> str | None:
        from botocore.exceptions import ClientError
        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data, **cond)["ETag"]
        except ClientError as e:
            if self._refused(e):
                return None
            raise

    def create(self, data: bytes) -> str | None:
        return self._put(data, IfNoneMatch="*")

    def read(self):
        from botocore.exceptions import ClientError
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return r["Body"].read(), r["ETag"]

    def replace(self, data: bytes, expected: str, takeover: bool = False) -> str | None:
        return self._put(data, IfMatch=expected)

    def delete(self, expected: str) -> bool:
        from botocore.exceptions import ClientError
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=expected)
            return True
        except ClientError as e:
            if self._refused(e):
                return False
            raise


class _GCSBackend:
    atomic = True

    def __init__(self, store: Store, rel: str):
        from google.cloud import storage  # optional: pip install google-cloud-storage
        parts = urlsplit(store.uri(rel))
        self.blob = storage.Client().bucket(parts.netloc).blob(parts.path.lstrip("/"))

    def _write(self, data: bytes, generation: int) -> int | None:
        from google.api_core.exceptions import PreconditionFailed
        try:
            self.blob.upload_from_string(data, if_generation_match=generation)
        except PreconditionFailed:
            return None
        return self.blob.generation

    def create(self, data: bytes):
        return self._write(data, 0)

    def read(self):
        from google.api_core.exceptions import NotFound
        try:
            data = self.blob.download_as_bytes()
        except NotFound:
            return None
        return data, self.blob.generation

    def replace(self, data: bytes, expected, takeover: bool = False):
        return self._write(data, expected)

    def delete(self, expected) -> bool:
        from google.api_core.exceptions import NotFound, PreconditionFailed
        try:
            self.blob.delete(if_generation_match=expected)
            return True
        except (PreconditionFailed, NotFound):
            return False


class _PlainBackend:
    """Check, then write: NOT atomic (two drivers started within the same second may both pass).
    Used for gs:// without google-cloud-storage, for hdfs://, and for s3:// without boto3."""
    atomic = False

    def __init__(self, store: Store, rel: str):
        self.store, self.rel = store, rel

    def create(self, data: bytes):
        if self.store.exists(self.rel):
            return None
        self.store.write_bytes(self.rel, data)
        return hashlib.sha256(data).hexdigest()

    def read(self):
        if not self.store.exists(self.rel):
            return None
        data = self.store.read_bytes(self.rel)
        return data, hashlib.sha256(data).hexdigest()

    def replace(self, data: bytes, expected, takeover: bool = False):
        cur = self.read()
        if cur is None or cur[1] != expected:
            return None
        self.store.write_bytes(self.rel, data)
        return hashlib.sha256(data).hexdigest()

    def delete(self, expected) -> bool:
        cur = self.read()
        if cur is None or cur[1] != expected:
            return False
        self.store.remove(self.rel)
        return True


def backend_for(store: Store, rel: str = layout.LEASE):
    if store.local is not None:
        return _LocalBackend(store.local / rel)
    scheme = store.root.split("://", 1)[0].lower()
    try:
        if scheme == "s3":
            return _S3Backend(store, rel)
        if scheme in ("gs", "gcs"):
            return _GCSBackend(store, rel)
    except ImportError:
        pass
    return _PlainBackend(store, rel)
