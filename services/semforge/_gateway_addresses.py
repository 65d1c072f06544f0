"""Several gateway replicas behind one client channel (#12 upgrades).

``semforge client --server`` (or ``$SEMFORGE_GATEWAY``) takes one address ``HOST:PORT`` or a comma-separated
list ``HOST1:PORT1,HOST2:PORT2``. A list becomes one gRPC channel over every replica: client-side
``round_robin`` load balancing with client-side health checking (``grpc.health.v1`` Watch, service ""), so a
replica that reports NOT_SERVING -- a gateway that got SIGTERM and drains, or one whose store or services do
not answer -- gets no new calls, and a replica that is down is skipped while the others answer. Host names
are resolved once, when the channel is made (gRPC's ``ipv4:``/``ipv6:`` targets take addresses only).
"""

from __future__ import annotations

import json
import os
import socket

from .errors import UserInputError

__all__ = ["DEFAULT_GATEWAY", "default_gateway", "channel_target", "split_addresses"]

DEFAULT_GATEWAY = "127.0.0.1:50051"

# round_robin over the replicas; a subchannel counts as READY only while its health says SERVING; a replica that
# went away is dialled again soon (1 s, at most 3 s apart) so it takes calls again once it is back
_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}})
LIST_OPTIONS = [("grpc.service_config", _SERVICE_CONFIG), ("grpc.initial_reconnect_backoff_ms", 500),
                ("grpc.min_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 3000)]


def default_gateway() -> str:
    """``$SEMFORGE_GATEWAY`` or 127.0.0.1:50051."""
    return os.environ.get("SEMFORGE_GATEWAY", "").strip() or DEFAULT_GATEWAY


def split_addresses(address: str) -> list[str]:
    parts = [a.strip() for a in (address or "").split(",")]
    if not parts or any(not a for a in parts):
        raise UserInputError(f"gateway address {address!r}: give HOST:PORT or HOST1:PORT1,HOST2:PORT2",
                             field="server")
    return parts


def _host_port(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserInputError(f"gateway address {addr!r}: expected HOST:PORT (every address of a list needs "
                             "its port)", field="server")
    return host.strip("[]"), int(port)


def channel_target(address: str) -> tuple[str, list]:
    """(gRPC target, extra channel options) for one address or a comma-separated list of gateway replicas."""
    parts = split_addresses(address)
    if len(parts) == 1:
        return parts[0], []
    v4, v6 = [], []
    for a in parts:
        host, port = _host_port(a)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UserInputError(f"gateway address {a!r}: cannot resolve {host!r} ({exc.strerror})",
                                 field="server") from None
        for family, _, _, _, sa in infos:
            if family == socket.AF_INET and f"{sa[0]}:{port}" not in v4:
                v4.append(f"{sa[0]}:{port}")
            elif family == socket.AF_INET6 and f"[{sa[0]}]:{port}" not in v6:
                v6.append(f"[{sa[0]}]:{port}")
    # gRPC takes one address family per target; IPv4 wins when both resolve
    target = f"ipv4:{','.join(v4)}" if v4 else f"ipv6:{','.join(v6)}"
    return target, list(LIST_OPTIONS)
