"""Object storage: one interface, two implementations (local directory, MinIO/S3).

Keys are validated (no path traversal); images are content addressed by
sha256 under ``blobs/sha256/<hex>``; writes are atomic (a half-written
object never becomes visible).
"""

from __future__ import annotations

import os

from ._base import (BLOB_PREFIX, InvalidKey, ObjectCorrupt, ObjectInfo, ObjectNotFound, ObjectStore, StorageError,
                    StorageFull, StorageUnavailable, blob_key, key_segment, validate_key)
from ._local import LocalStore

__all__ = [
    "BLOB_PREFIX", "InvalidKey", "LocalStore", "MinioStore", "ObjectCorrupt", "ObjectInfo", "ObjectNotFound",
    "ObjectStore", "StorageError", "StorageFull", "StorageUnavailable", "blob_key", "key_segment", "open_store", "validate_key",
]


def __getattr__(name):
    if name == "MinioStore":
        from ._minio import MinioStore

        return MinioStore
    raise AttributeError(name)


def open_store(url: str | None = None) -> ObjectStore:
    """Open a store from a URL: a directory path / ``file://DIR`` or ``s3://BUCKET`` (MinIO).

    For ``s3://`` the endpoint and keys come from ``S3_ENDPOINT``,
    ``S3_ACCESS_KEY``, ``S3_SECRET_KEY`` (and ``S3_SECURE=1`` for TLS).
    """
    url = url or os.environ.get("SEMFORGE_STORE") or os.path.expanduser("~/.cache/semforge/store")
    if url.startswith("s3://"):
        from ._minio import MinioStore

        bucket = url[5:].strip("/")
        endpoint = os.environ.get("S3_ENDPOINT")
        access = os.environ.get("S3_ACCESS_KEY")
        secret = os.environ.get("S3_SECRET_KEY")
        missing = [n for n, v in (("S3_ENDPOINT", endpoint), ("S3_ACCESS_KEY", access), ("S3_SECRET_KEY", secret)) if not v]
        if missing:
            raise ValueError(f"store {url} needs environment variables: {', '.join(missing)}")
        return MinioStore(endpoint, access, secret, bucket, secure=os.environ.get("S3_SECURE") == "1")
    if url.startswith("file://"):
        url = url[7:]
    return LocalStore(url)
