from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from ._base import ObjectInfo, ObjectNotFound, ObjectStore, StorageUnavailable, raise_os_error, validate_key


class LocalStore(ObjectStore):
    """Objects as files below a root directory (the embedded default).

    Writes go to ``<root>/.tmp`` and are renamed into place, so a reader
    never sees a partial object. If the root disappears (unmounted volume),
    operations raise :class:`StorageUnavailable` instead of recreating it.
    """

    kind = "local"

    def __init__(self, root: str | os.PathLike, *, create: bool = True):
        self.root = Path(root).expanduser().resolve()
        if create:
            (self.root / ".tmp").mkdir(parents=True, exist_ok=True)
        self._check()

    def _check(self) -> None:
        if not (self.root / ".tmp").is_dir():
            raise StorageUnavailable(f"local store {self.root} is not available (missing or not mounted)")

    def _path(self, key: str) -> Path:
        validate_key(key)
        p = (self.root / key).resolve()
        if self.root not in p.parents:
            raise ValueError(f"key {key!r} escapes the store")
        return p

    def _spool_dir(self) -> str | None:
        self._check()
        return str(self.root / ".tmp")

    def _put_file(self, key: str, path: str, size: int) -> None:
        dest = self._path(key)
        self._check()
        tmp = None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if Path(path).parent == self.root / ".tmp":
                os.replace(path, dest)  # the spool file is already on this volume: rename, no copy
                return
            tmp = self.root / ".tmp" / (dest.name + f".{os.getpid()}.{id(path)}")
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        except OSError as exc:
            if tmp is not None and tmp.exists():
                tmp.unlink()  # never leave a half-copied file behind
            raise_os_error(exc, f"storing {key}")

    def put_if_absent(self, key: str, data: bytes) -> bool:
        dest = self._path(key)
        self._check()
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="create-", dir=self.root / ".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.link(tmp, dest)  # atomic and fails if dest exists: complete content or nothing, one winner
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            raise_os_error(exc, f"storing {key}")
        finally:
            os.unlink(tmp)

    def open(self, key: str) -> BinaryIO:
        p = self._path(key)
        self._check()
        try:
            return open(p, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object {key!r}") from None

    def stat(self, key: str) -> ObjectInfo:
        p = self._path(key)
        self._check()
        try:
            st = p.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"no object {key!r}") from None
        if not p.is_file():
            raise ObjectNotFound(f"no object {key!r}")
        return ObjectInfo(key, st.st_size)

    def list(self, prefix: str = "") -> list[str]:
        self._check()
        out = []
        base = self.root
        top = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root  # walk only below the prefix
        if top != self.root:
            try:
                self._path(prefix.rsplit("/", 1)[0])
            except Exception:  # noqa: BLE001 - not a key: nothing can start with it
                return []
            if not top.is_dir():
                return []
        for dirpath, dirnames, filenames in os.walk(top):
            rel_dir = os.path.relpath(dirpath, base)
            if rel_dir == ".tmp" or rel_dir.startswith(".tmp" + os.sep):
                dirnames[:] = []
                continue
            for f in filenames:
                k = f if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{f}"
                if k.startswith(prefix):
                    out.append(k)
        return sorted(out)

    def list_after(self, prefix: str, start_after: str = "", limit: int | None = None) -> list[str]:
        """One directory level when ``prefix`` names a directory of flat keys (an index): no walk, no stat."""
        self._check()
        if not prefix.endswith("/"):
            return super().list_after(prefix, start_after, limit)
        d = self._path(prefix.rstrip("/"))
        try:
            names = sorted(e.name for e in os.scandir(d) if e.is_file())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise_os_error(exc, f"listing {prefix}")
        keys = [prefix + n for n in names if prefix + n > start_after]
        return keys if limit is None else keys[:limit]

    def delete(self, key: str) -> None:
        p = self._path(key)
        try:
            p.unlink()
        except FileNotFoundError:
            pass

    def ping(self) -> None:
        self._check()
