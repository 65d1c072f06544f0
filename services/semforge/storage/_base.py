from __future__ import annotations

import abc
import errno
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


class StorageFull(StorageUnavailable):
    """The store has no space left (ENOSPC/EDQUOT, S3 InsufficientStorage).

    Nothing half-written stays visible; retry once space is freed (a
    :class:`StorageUnavailable`, so every retry loop waits for it; gRPC
    RESOURCE_EXHAUSTED).
    """


class ObjectCorrupt(ObjectNotFound):
    """A content-addressed object whose bytes do not hash to its key (truncated or damaged).

    The object is removed when this is raised, so the reference answers
    NOT_FOUND from then on and uploading the good file stores it again.
    """


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_UNAVAILABLE_ERRNOS = {errno.EIO, errno.EROFS, errno.ENOTCONN, errno.ESTALE, errno.ENODEV, errno.ENXIO}


def raise_os_error(exc: OSError, where: str):
    """Re-raise an OS error of a store's disk as :class:`StorageFull` / :class:`StorageUnavailable` (or as is)."""
    err = os_error(exc, where)
    if err is exc:
        raise exc
    raise err from exc


def os_error(exc: OSError, where: str) -> OSError | StorageError:
    """The typed storage exception for an OS error of a store's disk (or ``exc`` itself when not a fault)."""
    if exc.errno in _FULL_ERRNOS:
        return StorageFull(f"no space left on the store's disk ({where}); free space and retry")
    if exc.errno in _UNAVAILABLE_ERRNOS:
        return StorageUnavailable(f"store disk error ({where}: {os.strerror(exc.errno)}); retry later")
    return exc


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


def key_segment(name: str, *, default: str = "image", max_len: int = 100) -> str:
    """A display name (a file's stem: spaces, accents, any script) as one safe key segment.

    Accented letters lose their accents (``Probe Nr. 3 (Ätzung)`` ->
    ``Probe_Nr._3_Atzung``), every other character outside the key alphabet
    becomes ``_``; never empty, never starting with ``.``; at most
    ``max_len`` characters. Different names can map to the same segment:
    callers that need unique keys de-duplicate after this.
    """
    import unicodedata

    ascii_ = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    seg = re.sub(r"[^A-Za-z0-9._\-=+@]+", "_", ascii_).strip("._")
    seg = re.sub(r"_+", "_", seg)[:max_len].rstrip(".")
    return seg or default


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

    def list_after(self, prefix: str, start_after: str = "", limit: int | None = None) -> list[str]:
        """Keys starting with ``prefix`` and sorting after ``start_after``, sorted, at most ``limit`` (a page of a
        time-ordered index). Backends override it so that the cost does not grow with what lies elsewhere."""
        keys = [k for k in self.list(prefix) if k > start_after]
        return keys if limit is None else keys[:limit]

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
        return self._spool(chunks, max_bytes=max_bytes, key_for=lambda _h, _n: key)

    def put_content(self, chunks: Iterable[bytes], *, max_bytes: int | None = None) -> tuple[ObjectInfo, bool]:
        """Store content under its sha256 key; returns (info, already_stored).

        An object already under that key counts as stored only if it is
        intact (same size, same sha256); a truncated or damaged one is
        replaced by this upload (heal by re-upload).
        """
        existed = {}

        def key_for(digest: str, size: int) -> str | None:
            k = blob_key(digest)
            if self._blob_intact(k, size):
                existed["yes"] = True
                return None
            return k

        info = self._spool(chunks, max_bytes=max_bytes, key_for=key_for)
        return info, bool(existed)

    def _blob_intact(self, key: str, size: int) -> bool:
        try:
            if self.stat(key).size != size:
                return False
            h = hashlib.sha256()
            for b in self._iter_raw(key, CHUNK):
                h.update(b)
        except ObjectNotFound:
            return False
        return h.hexdigest() == key[len(BLOB_PREFIX):]

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        return self.put_stream(key, [data])

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if no object exists under it, atomically; False if it existed (create-only:
        of several writers racing for one key exactly one gets True)."""
        raise NotImplementedError(f"{type(self).__name__} has no create-only write")

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; a content-addressed object is verified against its sha256 (:class:`ObjectCorrupt`)."""
        with self.open(key) as fh:
            data = fh.read()
        if key.startswith(BLOB_PREFIX) and hashlib.sha256(data).hexdigest() != key[len(BLOB_PREFIX):]:
            with self.open(key) as fh:  # read once more: a transient short read is not corruption
                data = fh.read()
            self._verify_blob(key, hashlib.sha256(data).hexdigest(), len(data))
        return data

    def iter_chunks(self, key: str, chunk: int = CHUNK) -> Iterator[bytes]:
        """Stream an object; a content-addressed one is verified as it streams (the last chunk is
        withheld until the digest is checked, so a reader never gets all of a corrupt object silently)."""
        if not key.startswith(BLOB_PREFIX):
            yield from self._iter_raw(key, chunk)
            return
        h = hashlib.sha256()
        size = 0
        held = None
        for b in self._iter_raw(key, chunk):
            h.update(b)
            size += len(b)
            if held is not None:
                yield held
            held = b
        self._verify_blob(key, h.hexdigest(), size)
        if held is not None:
            yield held

    def _iter_raw(self, key: str, chunk: int = CHUNK) -> Iterator[bytes]:
        with self.open(key) as fh:
            while True:
                b = fh.read(chunk)
                if not b:
                    return
                yield b

    def _verify_blob(self, key: str, digest: str, size: int) -> None:
        if digest == key[len(BLOB_PREFIX):]:
            return
        try:
            self.delete(key)  # never keep serving it; a re-upload stores the good bytes again
        except StorageError:
            pass
        raise ObjectCorrupt(f"stored image {key} is corrupt ({size} bytes, sha256 {digest[:12]}...) and was "
                            f"removed: upload the file again")

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
        try:
            fd, tmp = tempfile.mkstemp(prefix="semforge-upload-", dir=self._spool_dir())
        except OSError as exc:
            raise_os_error(exc, "creating the upload spool file")
        try:
            out = os.fdopen(fd, "wb")
            try:
                for c in chunks:
                    size += len(c)
                    if max_bytes is not None and size > max_bytes:
                        from ..errors import ObjectTooLarge

                        raise ObjectTooLarge(f"object larger than the limit of {max_bytes} bytes", field="data")
                    h.update(c)
                    try:
                        out.write(c)
                    except OSError as exc:
                        raise_os_error(exc, "writing the upload spool file")
            finally:
                try:
                    out.close()  # flushes: a full disk can show up only here
                except OSError as exc:
                    raise_os_error(exc, "writing the upload spool file")
            digest = h.hexdigest()
            key = key_for(digest, size)
            if key is None:
                return ObjectInfo(blob_key(digest), size, digest)
            self._put_file(key, tmp, size)
            return ObjectInfo(key, size, digest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _spool_dir(self) -> str | None:
        return None
