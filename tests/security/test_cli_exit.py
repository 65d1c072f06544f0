"""``semforge client ...`` against a real gateway with tokens (#15): a missing, wrong or insufficient token and an
unknown job are user errors, exit code 2 with one line that says what to do (before: exit 1)."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

from semforge.cli import main
from semforge.gateway.v1 import gateway_pb2_grpc

from .test_admission import _Gateway, _png


@pytest.fixture
def gw(tmp_path):
    g = _Gateway(tmp_path, limit=0, retry_s=1.0)
    g.gate.set()
    yield g
    g.close()


def _run(capsys, monkeypatch, token, *argv):
    monkeypatch.delenv("SEMFORGE_TOKEN_FILE", raising=False)
    monkeypatch.setenv("SEMFORGE_HOME", "/nonexistent-semforge-home")  # no token file found by accident
    if token is None:
        monkeypatch.delenv("SEMFORGE_TOKEN", raising=False)
    else:
        monkeypatch.setenv("SEMFORGE_TOKEN", token)
    rc = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


@pytest.mark.parametrize("token", [None, "sft_000000000000.not-a-valid-secret-at-all-xxxxxxxxxxxxxxxxxxxx"])
def test_no_or_bad_token_is_exit_2_with_how_to_pass_one(gw, capsys, monkeypatch, tmp_path, token):
    img = tmp_path / "a.png"
    img.write_bytes(_png(1))
    for argv in (["jobs"], ["status", "0123abcd"], ["analyze", str(img), "--out", str(tmp_path / "o"), "--quiet"]):
        rc, err = _run(capsys, monkeypatch, token, "client", "--server", gw.address, *argv)
        assert rc == 2, (argv, err)
        assert len(err) == 1 and err[0].startswith("semforge: error: UNAUTHENTICATED: "), err
        assert "semforge admin token issue" in err[0] and "SEMFORGE_TOKEN=" in err[0], err


def test_unknown_job_is_exit_2(gw, capsys, monkeypatch):
    tok = gw.token("alice", "group-a")
    for action in ("status", "cancel", "delete"):
        rc, err = _run(capsys, monkeypatch, tok, "client", "--server", gw.address, action, "0123abcd")
        assert rc == 2 and len(err) == 1, err
        assert err[0] == "semforge: error: NOT_FOUND: no job '0123abcd'; list jobs with ListJobs", err
    rc, err = _run(capsys, monkeypatch, tok, "client", "--server", gw.address, "jobs")  # the token itself works
    assert rc == 0, err


class _Denying(gateway_pb2_grpc.GatewayServiceServicer):
    def ListJobs(self, request, context):
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "instrument tokens may not list jobs")


def test_permission_denied_is_exit_2(capsys, monkeypatch):
    """No semforge gateway answers PERMISSION_DENIED today (a foreign id is NOT_FOUND); a gRPC server that
    does (a proxy, a future role) still gets a user error and the token line."""
    server = grpc.server(futures.ThreadPoolExecutor(2))
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(_Denying(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        rc, err = _run(capsys, monkeypatch, None, "client", "--server", f"127.0.0.1:{port}", "jobs")
    finally:
        server.stop(0)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("semforge: error: PERMISSION_DENIED: instrument tokens may not list jobs; "
                             "your token may not do this"), err
