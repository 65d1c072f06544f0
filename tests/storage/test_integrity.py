"""Integrity of stored objects and storage faults, on a local directory and a real S3 server (rclone)."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from semforge.storage import LocalStore, ObjectCorrupt, ObjectNotFound, StorageFull, StorageUnavailable, blob_key


@pytest.fixture(params=["local", "minio"])
def store(request, tmp_path):
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
    else:
        yield request.getfixturevalue("s3_server").store()


GOOD = bytes(range(256)) * 4096  # 1 MiB


def _damage(store, key, data):
    """Overwrite a stored object with other bytes, as a truncated write or a bad disk would."""
    store.put_bytes(key, data)


@pytest.mark.parametrize("damage", [GOOD[:1000], b"", GOOD[:-1] + b"\x00"], ids=["truncated", "empty", "flipped"])
def test_corrupt_blob_detected_on_read_and_removed(store, damage):
    info, existed = store.put_content([GOOD])
    assert not existed and store.get_bytes(info.key) == GOOD
    _damage(store, info.key, damage)
    with pytest.raises(ObjectCorrupt, match="upload the file again"):
        store.get_bytes(info.key)
    assert not store.exists(info.key)  # never served again; the reference now answers NOT_FOUND
    with pytest.raises(ObjectNotFound):
        store.get_bytes(info.key)


def test_streamed_read_verifies_before_the_last_chunk(store):
    info, _ = store.put_content([GOOD])
    assert b"".join(store.iter_chunks(info.key, 100_000)) == GOOD
    _damage(store, info.key, GOOD[:-10])
    got = []
    with pytest.raises(ObjectCorrupt):
        for b in store.iter_chunks(info.key, 100_000):
            got.append(b)
    assert sum(map(len, got)) < len(GOOD) - 10  # the reader never received the whole (bad) object
    assert not store.exists(info.key)


def test_reupload_heals_a_corrupt_blob_instead_of_deduplicating(store):
    info, _ = store.put_content([GOOD])
    _damage(store, info.key, GOOD[:4096])  # truncated, not yet read by anybody
    again, existed = store.put_content([GOOD[:300_000], GOOD[300_000:]])
    assert not existed and again.key == info.key  # not "deduplicated": the good bytes replaced the bad
    assert store.get_bytes(info.key) == GOOD
    third, existed = store.put_content([GOOD])
    assert existed  # an intact object is de-duplicated as before


def test_non_content_addressed_objects_are_not_hashed(store):
    store.put_bytes("jobs/x/job.json", b"{}")
    assert store.get_bytes("jobs/x/job.json") == b"{}"
    assert blob_key(hashlib.sha256(b"{}").hexdigest()) != "jobs/x/job.json"


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB file system (tmpfs) so that writes hit ENOSPC."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_typed_leaves_nothing_and_recovers(small_disk):
    store = LocalStore(small_disk / "store")
    filler = store.put_bytes("filler.bin", b"\x01" * (3 << 20))
    assert filler.size == 3 << 20
    with pytest.raises(StorageFull, match="no space left") as e:
        store.put_content([GOOD, GOOD])  # 2 MiB into the remaining ~1 MiB
    assert isinstance(e.value, StorageUnavailable)  # every retry loop waits for it
    assert store.list("blobs/") == [] and os.listdir(store.root / ".tmp") == []  # nothing half-written
    with pytest.raises(StorageFull):
        store.put_bytes("jobs/j/job.json", b"x" * (2 << 20))
    assert not store.exists("jobs/j/job.json")
    store.delete("filler.bin")  # space returns: the same store serves again
    info, existed = store.put_content([GOOD, GOOD])
    assert not existed and store.get_bytes(info.key) == GOOD + GOOD


def test_s3_outage_is_unavailable_then_serves_again(s3_server):
    store = s3_server.store()
    info, _ = store.put_content([GOOD])
    s3_server.stop()
    with pytest.raises(StorageUnavailable):
        store.get_bytes(info.key)
    with pytest.raises(StorageUnavailable):
        store.put_content([b"other"])
    s3_server.start()
    assert store.get_bytes(info.key) == GOOD
