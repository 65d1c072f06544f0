"""Both storage implementations against the same contract: a local directory and a real S3 server (rclone)."""

import hashlib

import pytest

from semforge.storage import InvalidKey, LocalStore, ObjectNotFound, StorageUnavailable, blob_key, validate_key


@pytest.fixture(params=["local", "minio"])
def store(request, tmp_path):
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
    else:
        srv = request.getfixturevalue("s3_server")
        yield srv.store()


def test_put_get_stat_list_delete(store):
    info = store.put_bytes("a/b/c.txt", b"hello")
    assert info.size == 5 and info.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert store.get_bytes("a/b/c.txt") == b"hello"
    assert store.stat("a/b/c.txt").size == 5
    store.put_bytes("a/d.txt", b"x")
    assert store.list("a/") == ["a/b/c.txt", "a/d.txt"]
    store.delete("a/d.txt")
    assert not store.exists("a/d.txt")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("a/d.txt")
    with pytest.raises(ObjectNotFound):
        store.stat("nope")


def test_content_addressed_and_deduplicated(store):
    data = b"\x00\x01" * 300_000
    info, existed = store.put_content([data[:100_000], data[100_000:]])
    assert info.key == blob_key(hashlib.sha256(data).hexdigest()) and not existed
    info2, existed2 = store.put_content([data])
    assert info2.key == info.key and existed2
    assert b"".join(store.iter_chunks(info.key, 65536)) == data


def test_interrupted_stream_leaves_nothing(store):
    def broken():
        yield b"partial data"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        store.put_stream("half/written.bin", broken())
    assert not store.exists("half/written.bin")
    assert store.list("half/") == []


def test_size_limit(store):
    with pytest.raises(ValueError, match="limit"):
        store.put_content([b"x" * 1000], max_bytes=100)


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", "a//b", ".hidden", "", "a/./b", "x\x00y"])
def test_path_traversal_rejected(store, key):
    with pytest.raises(InvalidKey):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidKey):
        validate_key(key)


def test_large_object_streams(store, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x7f" * (20 << 20))
    info = store.put_file("big/one.bin", big)
    assert info.size == 20 << 20
    store.get_file("big/one.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").stat().st_size == 20 << 20


def test_local_store_unavailable_when_root_vanishes(tmp_path):
    import shutil

    s = LocalStore(tmp_path / "vol")
    s.put_bytes("k", b"v")
    shutil.rmtree(tmp_path / "vol")
    with pytest.raises(StorageUnavailable):
        s.get_bytes("k")
    with pytest.raises(StorageUnavailable):
        s.ping()


def test_minio_store_unavailable_then_back(s3_server):
    s = s3_server.store()
    s.put_bytes("k", b"v")
    s3_server.stop()
    with pytest.raises(StorageUnavailable):
        s.get_bytes("k")
    s3_server.start()
    assert s.get_bytes("k") == b"v"
