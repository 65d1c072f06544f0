"""Authentication, identities, audit and mTLS against real gRPC servers on 127.0.0.1."""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from semforge.measure.v1 import measure_pb2, measure_pb2_grpc
from semforge.rpc import ServiceConfig, build_server
from semforge.security import (AuthError, Role, TokenRegistry, current_identity, open_channel, parse_token,
                               service_channel)
from semforge.security import cli as admin_cli
from semforge.storage import LocalStore

from .pki import CertAuthority


@pytest.fixture
def registry(tmp_path):
    return TokenRegistry(tmp_path / "tokens.json")


def test_tokens_hashed_at_rest_verified_and_revoked(registry):
    tok, rec = registry.issue("alice", "group-a", kind="instrument", note="SEM-2 PC")
    tid, secret = parse_token(tok)
    text = registry.path.read_text()
    assert secret not in text and tok not in text and rec.sha256 in text  # only the salted hash is stored
    assert stat.S_IMODE(os.stat(registry.path).st_mode) == 0o600
    ident = registry.verify(tok)
    assert (ident.user, ident.tenant, ident.role, ident.token_id, ident.kind) == ("alice", "group-a", Role.USER,
                                                                                  tid, "instrument")
    other = TokenRegistry(registry.path)  # a second server reading the same file sees the revocation
    assert other.verify(tok).user == "alice"
    registry.revoke(tid)
    with pytest.raises(AuthError, match="revoked"):
        other.verify(tok)
    with pytest.raises(AuthError, match="unknown"):
        registry.verify(f"sft_{tid}." + "A" * 43)  # right id, wrong secret
    with pytest.raises(AuthError, match="malformed"):
        registry.verify("hunter2")
    with pytest.raises(ValueError, match="tenant"):
        registry.issue("bob", "../etc")
    with pytest.raises(ValueError, match="service"):
        registry.issue("gw", "x", role="service")


def _echo_identity_server(cfg):
    """A real server whose one method answers with the identity the interceptor put in the context."""

    def who(request, context):
        ident = current_identity()
        return json.dumps(None if ident is None else {**ident.audit_fields(), "token_id": ident.token_id}).encode()

    handler = grpc.method_handlers_generic_handler("test.Who", {"Get": grpc.unary_unary_rpc_method_handler(who)})

    def register(server):
        server.add_generic_rpc_handlers((handler,))
        return ["test.Who"]
    return build_server("who", register, cfg)


def _who(channel, **kw):
    return json.loads(channel.unary_unary("/test.Who/Get")(b"", timeout=5, **kw))


def _health(channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_tokens_mode_every_call_needs_a_valid_token(registry, caplog):
    tok, rec = registry.issue("alice", "group-a")
    admin_tok, _ = registry.issue("root", "facility", role="admin")
    srv = _echo_identity_server(ServiceConfig(auth="tokens", tokens_file=str(registry.path)))
    try:
        with grpc.insecure_channel(srv.address) as ch:
            assert _health(ch) == health_pb2.HealthCheckResponse.SERVING  # health stays open
            with pytest.raises(grpc.RpcError) as e:
                _who(ch)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "semforge admin token" in e.value.details()
            for bad in ("Bearer sft_000000000000." + "x" * 43, "Basic abc", "Bearer"):
                with pytest.raises(grpc.RpcError) as e:
                    _who(ch, metadata=(("authorization", bad),))
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        caplog.set_level(logging.INFO, logger="semforge.audit")
        with open_channel(srv.address, token=tok) as ch:
            assert _who(ch) == {"user": "alice", "tenant": "group-a", "role": "user", "token_id": rec.id}
        with open_channel(srv.address, token=admin_tok) as ch:
            assert _who(ch)["role"] == "admin"
        audits = [r for r in caplog.records if r.name == "semforge.audit"]
        ok = [r for r in audits if getattr(r, "user", None) == "alice"]
        assert ok and ok[0].code == "OK" and ok[0].method == "Get" and ok[0].tenant == "group-a"
        registry.revoke(rec.id)
        with open_channel(srv.address, token=tok) as ch:
            with pytest.raises(grpc.RpcError) as e:
                _who(ch)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in e.value.details()
        assert any(r.code == "UNAUTHENTICATED" for r in caplog.records if r.name == "semforge.audit")
    finally:
        srv.stop(0)


def test_loopback_mode_trusts_local_callers_but_checks_tokens(registry):
    tok, _ = registry.issue("carol", "group-c")
    srv = _echo_identity_server(ServiceConfig(auth="loopback", tokens_file=str(registry.path)))
    try:
        with grpc.insecure_channel(srv.address) as ch:
            assert _who(ch) == {"user": "local", "tenant": "local", "role": "admin", "token_id": ""}
            with pytest.raises(grpc.RpcError) as e:
                _who(ch, metadata=(("authorization", "Bearer sft_0123456789ab." + "y" * 43),))
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with open_channel(srv.address, token=tok) as ch:
            assert _who(ch)["user"] == "carol"
    finally:
        srv.stop(0)


def test_service_behind_gateway_refuses_clients(tmp_path):
    """A client that reaches the measure service directly gets UNAUTHENTICATED; the gateway's secret passes."""
    from semforge_measure.server import register

    cfg = ServiceConfig(auth="service", service_token="s3cret-between-services")
    srv = build_server("measure", register(LocalStore(tmp_path / "store")), cfg)
    try:
        req = measure_pb2.MeasureRequest()
        with grpc.insecure_channel(srv.address) as ch:
            assert _health(ch) == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as e:
                measure_pb2_grpc.MeasureServiceStub(ch).Measure(req, timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "gateway" in e.value.details()
        with open_channel(srv.address, token="not-the-secret") as ch:
            with pytest.raises(grpc.RpcError) as e:
                measure_pb2_grpc.MeasureServiceStub(ch).Measure(req, timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        gw_cfg = ServiceConfig(service_token="s3cret-between-services")
        with service_channel(srv.address, gw_cfg) as ch:  # authenticated: the request itself is then judged
            with pytest.raises(grpc.RpcError) as e:
                measure_pb2_grpc.MeasureServiceStub(ch).Measure(req, timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        srv.stop(0)


def test_mtls_between_gateway_and_service(tmp_path):
    ca = CertAuthority(tmp_path / "pki")
    rogue = CertAuthority(tmp_path / "rogue", "rogue CA")
    srv_cert, srv_key = ca.issue("measure", server=True)
    gw_cert, gw_key = ca.issue("gateway")
    other_cert, other_key = ca.issue("someone-else")
    rogue_cert, rogue_key = rogue.issue("gateway")
    cfg = ServiceConfig(auth="service", service_peers="gateway", tls_cert=srv_cert, tls_key=srv_key, tls_ca=ca.ca_file)
    srv = _echo_identity_server(cfg)
    try:
        gw = ServiceConfig(tls_ca=ca.ca_file, tls_cert=gw_cert, tls_key=gw_key)
        with service_channel(srv.address, gw) as ch:
            assert _who(ch) == {"user": "gateway", "tenant": "*", "role": "service", "token_id": ""}
        with open_channel(srv.address, tls_ca=ca.ca_file, tls_cert=other_cert, tls_key=other_key) as ch:
            with pytest.raises(grpc.RpcError) as e:  # a valid certificate, but not the gateway's name
                _who(ch)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for ch in (open_channel(srv.address, tls_ca=ca.ca_file, tls_cert=rogue_cert, tls_key=rogue_key),
                   open_channel(srv.address, tls_ca=ca.ca_file), grpc.insecure_channel(srv.address)):
            with ch, pytest.raises(grpc.RpcError) as e:  # no handshake without a certificate of our CA
                _who(ch)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop(0)


def test_admin_command_issue_list_revoke(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="semforge")
    admin_cli.register(parser.add_subparsers(dest="cmd"))
    reg = tmp_path / "tokens.json"

    def run(*argv):
        args = parser.parse_args(["admin", "--tokens", str(reg), *argv])
        return args.func(args)

    assert run("token", "issue", "--user", "sem2-pc", "--tenant", "lab-b", "--kind", "instrument") == 0
    token = capsys.readouterr().out.strip()
    ident = TokenRegistry(reg).verify(token)
    assert (ident.user, ident.tenant, ident.kind) == ("sem2-pc", "lab-b", "instrument")
    assert run("token", "issue", "--user", "x", "--tenant", "bad tenant") == 2
    assert "tenant" in capsys.readouterr().err
    assert run("token", "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["user"] for r in listed] == ["sem2-pc"] and "sha256" not in listed[0] and "salt" not in listed[0]
    assert run("token", "revoke", ident.token_id) == 0
    assert run("token", "revoke", "nosuchid") == 1
    with pytest.raises(AuthError, match="revoked"):
        TokenRegistry(reg).verify(token)
    out_file = tmp_path / "pc.token"
    assert run("token", "issue", "--user", "eve", "--tenant", "lab-e", "--out", str(out_file)) == 0
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600 and TokenRegistry(reg).verify(out_file.read_text().strip())


def test_client_token_sources_in_order(tmp_path, monkeypatch):
    from semforge.security import client_token

    for v in ("SEMFORGE_TOKEN", "SEMFORGE_TOKEN_FILE"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("SEMFORGE_HOME", str(tmp_path / "home"))
    assert client_token() is None
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "token").write_text("from-home\n")
    assert client_token() == "from-home"
    (tmp_path / "pc.token").write_text("from-file\n")
    monkeypatch.setenv("SEMFORGE_TOKEN_FILE", str(tmp_path / "pc.token"))
    assert client_token() == "from-file"
    monkeypatch.setenv("SEMFORGE_TOKEN", "from-env")
    assert client_token() == "from-env" and client_token("explicit") == "explicit"
    monkeypatch.delenv("SEMFORGE_TOKEN")
    monkeypatch.setenv("SEMFORGE_TOKEN_FILE", str(tmp_path / "missing.token"))
    with pytest.raises(ValueError, match="SEMFORGE_TOKEN_FILE"):
        client_token()


def test_config_from_env_validates_security_settings(monkeypatch, tmp_path):
    from semforge.rpc import ConfigError

    monkeypatch.setenv("SEMFORGE_AUTH", "maybe")
    with pytest.raises(ConfigError, match="SEMFORGE_AUTH"):
        ServiceConfig.from_env()
    monkeypatch.setenv("SEMFORGE_AUTH", "service")
    (tmp_path / "svc").write_text("the-secret\n")
    monkeypatch.setenv("SEMFORGE_SERVICE_TOKEN_FILE", str(tmp_path / "svc"))
    cfg = ServiceConfig.from_env()
    assert cfg.service_token == "the-secret" and cfg.as_dict()["service_token"] == "<redacted>"
    monkeypatch.setenv("TLS_CERT", "/x.crt")
    with pytest.raises(ConfigError, match="TLS_KEY"):
        ServiceConfig.from_env()
    monkeypatch.delenv("TLS_CERT")
    monkeypatch.delenv("SEMFORGE_SERVICE_TOKEN_FILE")
    with pytest.raises(ConfigError, match="SEMFORGE_SERVICE_TOKEN"):
        ServiceConfig.from_env()


def test_tenant_rule():
    from semforge.security import Identity, can_access, owner_tenant

    alice = Identity("alice", "group-a", Role.USER, "t1")
    admin = Identity("root", "facility", Role.ADMIN, "t2")
    gw = Identity("gateway", "*", Role.SERVICE)
    assert can_access(alice, "group-a") and not can_access(alice, "group-b") and not can_access(alice, "")
    assert can_access(admin, "group-b") and can_access(gw, "group-b") and can_access(None, "group-b")
    assert owner_tenant(alice) == "group-a" and owner_tenant(None) == "default" and owner_tenant(gw) == "default"


def test_semforge_admin_is_a_command(tmp_path, capsys):
    from semforge.cli import main

    reg = tmp_path / "t.json"
    assert main(["admin", "--tokens", str(reg), "token", "issue", "--user", "u1", "--tenant", "g1"]) == 0
    tok = capsys.readouterr().out.strip()
    assert TokenRegistry(reg).verify(tok).user == "u1"
