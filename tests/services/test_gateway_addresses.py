"""#12: the client takes several gateway replicas (``--server a:p,b:p`` / ``SEMFORGE_GATEWAY``): one channel,
round robin, a replica that is down is skipped. The rolling-replacement proof is tests/deploy/test_upgrade.py."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from semforge._gateway_addresses import channel_target, default_gateway
from semforge.client import GatewayClient
from semforge.embedded import start_embedded
from semforge.errors import UserInputError
from semforge.storage import LocalStore

BIN = Path(sys.executable).parent


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_one_address_is_passed_through_and_a_list_becomes_a_round_robin_target(monkeypatch):
    assert channel_target("gw.example.org:50051") == ("gw.example.org:50051", [])
    target, options = channel_target("127.0.0.1:5001, localhost:5002")
    assert target == "ipv4:127.0.0.1:5001,127.0.0.1:5002"
    config = dict(options)["grpc.service_config"]
    assert '"round_robin"' in config and '"healthCheckConfig"' in config
    monkeypatch.setenv("SEMFORGE_GATEWAY", "10.0.0.1:1,10.0.0.2:1")
    assert default_gateway() == "10.0.0.1:1,10.0.0.2:1"
    monkeypatch.delenv("SEMFORGE_GATEWAY")
    assert default_gateway() == "127.0.0.1:50051"


@pytest.mark.parametrize("bad", ["127.0.0.1:5001,", "127.0.0.1:5001,127.0.0.1", "127.0.0.1:1,x:99999",
                                 "127.0.0.1:1,no-such-host.invalid:5"])
def test_bad_lists_are_refused_with_the_address(bad):
    with pytest.raises(UserInputError, match="gateway address"):
        channel_target(bad)


def test_cli_bad_gateway_list_is_one_line_and_exit_2():
    r = subprocess.run([str(BIN / "semforge"), "client", "--gateway", "127.0.0.1:1,127.0.0.1", "jobs"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "gateway address '127.0.0.1'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_replica_that_is_down_is_skipped(tmp_path, sample_tiff):
    emb = start_embedded(store=LocalStore(tmp_path / "store"))
    try:
        with GatewayClient(f"127.0.0.1:{_dead_port()},{emb.gateway_address}", busy_wait_s=20) as c:
            c.wait_ready(30)
            refs = [c.upload(sample_tiff[0]).image.ref for _ in range(3)]  # three calls, all answered
            jobs, _ = c.list_jobs()
            assert len(refs) == 3 and jobs == []
    finally:
        emb.stop(0)
