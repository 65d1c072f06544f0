from __future__ import annotations

import io
from typing import BinaryIO

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from ._base import (ObjectInfo, ObjectNotFound, ObjectStore, StorageError, StorageFull, StorageUnavailable,
                    validate_key)

_NOT_FOUND = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}
_FULL = {"InsufficientStorage", "XMinioStorageFull", "QuotaExceeded", "XMinioAdminBucketQuotaExceeded"}


class MinioStore(ObjectStore):
    """Objects in an S3 bucket through the ``minio`` SDK (the cluster back end).

    Uploads are spooled to a local temporary file first and then sent with
    one ``put_object`` (multipart for large objects), so an interrupted
    upload never leaves a visible object. Connection failures raise
    :class:`StorageUnavailable` quickly (short timeouts, one retry) so that
    jobs can wait and resume instead of hanging.
    """

    kind = "minio"

    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str, *, secure: bool = False,
                 timeout_s: float = 5.0):
        validate_key(bucket)
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=min(2.0, timeout_s), read=timeout_s),
                                   retries=urllib3.Retry(total=1, backoff_factor=0.1, connect=1, read=1,
                                                         status_forcelist=[500, 502, 503, 504]),
                                   maxsize=16)
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, http_client=http)
        self.bucket = bucket
        self.endpoint = endpoint
        self._bucket_ok = False

    def _call(self, fn, *args, **kwargs):
        try:
            if not self._bucket_ok:
                self._ensure_bucket()
            return fn(*args, **kwargs)
        except S3Error as exc:
            if exc.code in _NOT_FOUND:
                raise ObjectNotFound(f"no object {args[1] if len(args) > 1 else ''!r}") from None
            if exc.code in _FULL:
                raise StorageFull(f"object store at {self.endpoint} is full ({exc.code}); free space and retry") from exc
            # every other S3 error (throttling, internal errors, refused credentials) is the store's state, not the
            # request's fault: UNAVAILABLE, retried by jobs, and health reports NOT_SERVING through ping()
            raise StorageUnavailable(f"object store at {self.endpoint} answered {exc.code}: {exc.message}") from exc
        except InvalidResponseError as exc:  # servers that answer errors as text/xml (rclone) land here
            if "code: 404" in str(exc):
                raise ObjectNotFound(f"no object {args[1] if len(args) > 1 else ''!r}") from None
            if "code: 412" in str(exc):  # a conditional write lost (put_if_absent)
                raise StorageError(f"object store at {self.endpoint} answered PreconditionFailed (412)") from exc
            if "507" in str(exc) or "InsufficientStorage" in str(exc):
                raise StorageFull(f"object store at {self.endpoint} is full; free space and retry") from exc
            raise StorageUnavailable(f"object store at {self.endpoint} answered oddly: {str(exc)[:200]}") from exc
        except (urllib3.exceptions.HTTPError, ConnectionError, OSError, ServerError) as exc:
            raise StorageUnavailable(f"object store at {self.endpoint} is unavailable ({type(exc).__name__})") from exc

    def _ensure_bucket(self) -> None:
        try:
            exists = self.client.bucket_exists(self.bucket)
        except InvalidResponseError as exc:  # servers that answer errors as text/xml
            if "NoSuchBucket" not in str(exc) and "404" not in str(exc):
                raise StorageError(f"S3 server answered oddly: {exc}") from exc
            exists = False
        if not exists:
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        self._bucket_ok = True

    def _put_file(self, key: str, path: str, size: int) -> None:
        with open(path, "rb") as fh:
            self._call(self.client.put_object, self.bucket, key, fh, size, part_size=16 << 20)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Conditional PUT (``If-None-Match: *``): atomic on servers that honour it (AWS S3, MinIO)."""
        validate_key(key)
        if self.exists(key):
            return False
        try:
            self._call(self.client._put_object, self.bucket, key, data,
                       headers={"If-None-Match": "*", "Content-Type": "application/octet-stream"})
        except StorageError as exc:
            if "PreconditionFailed" in str(exc) or "ConditionalRequestConflict" in str(exc):
                return False
            raise
        return True

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        try:
            st = self._call(self.client.stat_object, self.bucket, key)
        except InvalidResponseError:
            raise ObjectNotFound(f"no object {key!r}") from None
        return ObjectInfo(key, int(st.size or 0))

    def open(self, key: str) -> BinaryIO:
        # stat first: some S3 servers answer a missing key on GET with an unparseable body
        self.stat(key)
        resp = self._call(self.client.get_object, self.bucket, key)
        try:
            data = resp.read()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store at {self.endpoint} failed mid-read") from exc
        finally:
            resp.close()
            resp.release_conn()
        return io.BytesIO(data)

    def _iter_raw(self, key: str, chunk: int = 1 << 20):
        self.stat(key)
        resp = self._call(self.client.get_object, self.bucket, key)
        try:
            for b in resp.stream(chunk):
                yield b
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store at {self.endpoint} failed mid-read") from exc
        finally:
            resp.close()
            resp.release_conn()

    def list(self, prefix: str = "") -> list[str]:
        objs = self._call(lambda: list(self.client.list_objects(self.bucket, prefix=prefix, recursive=True)))
        return sorted(o.object_name for o in objs)

    def list_after(self, prefix: str, start_after: str = "", limit: int | None = None) -> list[str]:
        """Server-side prefix and start-after: a page costs one listing request, whatever else is stored."""
        def page():
            out = []
            for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True,
                                              start_after=start_after or None):
                if o.object_name > start_after:
                    out.append(o.object_name)
                if limit is not None and len(out) >= limit:
                    break
            return out
        return self._call(page)

    def delete(self, key: str) -> None:
        validate_key(key)
        self._call(self.client.remove_object, self.bucket, key)

    def ping(self) -> None:
        self._bucket_ok = False
        self._call(lambda: None)
