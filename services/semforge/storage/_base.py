from __future__ import annotations

import abc
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator

BLOB_PREFIX = "blobs/sha256/"
CHUNK = 1 << 20
_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._\-/=+@]*$")


class StorageError(Exception):
    """Base class of storage failures."""


class ObjectNotFound(StorageError, KeyError):
    """No object under that key."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0]) if self.args else "object not found"


class StorageUnavailable(StorageError):
    """The store cannot be reached now (retry later)."""


class InvalidKey(StorageError, ValueError):
    """A key that could escape the store or is malformed."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str = ""


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise :class:`InvalidKey`.

    Safe: 1-512 characters of ``[A-Za-z0-9._-/=+@]``, not starting with ``/``
    or ``.``, no empty, ``.`` or ``..`` segment.
    """
    if not isinstance(key, str) or not key or len(key) > 512 or not _KEY_RE.match(key):
        raise InvalidKey(f"invalid object key {key!r}: use letters, digits and ._-/=+@, not starting with / or .")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidKey(f"invalid object key {key!r}: empty, '.' or '..' path segment")
    return key


def blob_key(sha256_hex: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", sha256_hex or ""):
        raise InvalidKey(f"not a sha256 hex digest: {sha256_hex!r}")
    return BLOB_PREFIX + sha256_hex


class ObjectStore(abc.ABC):
    """Key/value object storage with streamed, atomic writes."""

    kind = "abstract"

    # -- primitives every backend implements -------------------------------------------
    @abc.abstractmethod
    def _put_file(self, key: str, path: str, size: int) -> None:
        """Store the complete file at ``path`` under ``key`` atomically."""

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """Open an object for streamed reading. Raises ObjectNotFound."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size of an object. Raises ObjectNotFound."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix``, sorted."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object (no error if absent)."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise StorageUnavailable if the store cannot be used now."""

    # -- derived operations ------------------------------------------------------------
    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
            return True
        except ObjectNotFound:
            return False

    def put_stream(self, key: str, chunks: Iterable[bytes], *, max_bytes: int | None = None) -> ObjectInfo:
        """Write chunks to a temporary file, then store atomically under ``key``.

        If the iterator raises (a client that went away), nothing is stored.
        """
        validate_key(key)
        return self._spool(chunks, max_bytes=max_bytes, key_for=lambda _h: key)

    def put_content(self, chunks: Iterable[bytes], *, max_bytes: int | None = None) -> tuple[ObjectInfo, bool]:
        """Store content under its sha256 key; returns (info, already_stored)."""
        existed = {}

        def key_for(digest: str) -> str | None:
            k = blob_key(digest)
            if self.exists(k):
                existed["yes"] = True
                return None
            return k

        info = self._spool(chunks, max_bytes=max_bytes, key_for=key_for)
        return info, bool(existed)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        return self.put_stream(key, [data])

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if no object exists under it, atomically; False if it existed (create-only:
        of several writers racing for one key exactly one gets True)."""
        raise NotImplementedError(f"{type(self).__name__} has no create-only write")

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def iter_chunks(self, key: str, chunk: int = CHUNK) -> Iterator[bytes]:
        with self.open(key) as fh:
            while True:
                b = fh.read(chunk)
                if not b:
                    return
                yield b

    def put_file(self, key: str, path: str | os.PathLike) -> ObjectInfo:
        validate_key(key)
        with open(path, "rb") as fh:
            return self.put_stream(key, iter(lambda: fh.read(CHUNK), b""))

    def get_file(self, key: str, path: str | os.PathLike) -> None:
        tmp = f"{os.fspath(path)}.part"
        with open(tmp, "wb") as out:
            for b in self.iter_chunks(key):
                out.write(b)
        os.replace(tmp, path)

    def _spool(self, chunks: Iterable[bytes], *, max_bytes: int | None, key_for) -> ObjectInfo:
        h = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(prefix="semforge-upload-", dir=self._spool_dir())
        try:
            with os.fdopen(fd, "wb") as out:
                for c in chunks:
                    size += len(c)
                    if max_bytes is not None and size > max_bytes:
                        from ..errors import ObjectTooLarge

                        raise ObjectTooLarge(f"object larger than the limit of {max_bytes} bytes", field="data")
                    h.update(c)
                    out.write(c)
            digest = h.hexdigest()
            key = key_for(digest)
            if key is None:
                return ObjectInfo(blob_key(digest), size, digest)
            self._put_file(key, tmp, size)
            return ObjectInfo(key, size, digest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _spool_dir(self) -> str | None:
        return None
