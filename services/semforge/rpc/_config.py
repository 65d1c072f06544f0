from __future__ import annotations

import os
from dataclasses import dataclass, fields

__all__ = ["ConfigError", "ServiceConfig", "env_str", "env_int", "env_float"]


class ConfigError(SystemExit):
    """A required or malformed environment variable; exits with a one-line message."""

    def __init__(self, message: str):
        super().__init__(f"configuration error: {message}")


def env_str(name: str, default: str | None = None, *, required: bool = False) -> str | None:
    v = os.environ.get(name)
    if v is None or v == "":
        if required:
            raise ConfigError(f"environment variable {name} is required")
        return default
    return v


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        v = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and v < minimum:
        raise ConfigError(f"{name}={v} must be >= {minimum}")
    return v


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        v = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if minimum is not None and v < minimum:
        raise ConfigError(f"{name}={v} must be >= {minimum}")
    return v


def _secret(name: str) -> str:
    """``NAME`` or the contents of the file named by ``NAME_FILE`` (a mounted Secret)."""
    v = env_str(name)
    if v:
        return v.strip()
    path = env_str(f"{name}_FILE")
    if not path:
        return ""
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError as exc:
        raise ConfigError(f"{name}_FILE={path}: {exc.strerror}") from None


@dataclass
class ServiceConfig:
    """Settings every service reads from the environment.

    ``PORT`` (0 = any free port), ``HOST`` (127.0.0.1 embedded, 0.0.0.0 in a
    pod), ``METRICS_PORT`` (Prometheus; 0 = off), ``MAX_MESSAGE_MB``,
    ``WORKERS`` (server threads), ``SEMFORGE_STORE`` (object store URL),
    ``GRACE_S`` (shutdown grace period).

    Load: ``MAX_STREAMS`` (concurrent streaming calls admitted; 0 = WORKERS - 8,
    at least half the threads, so unary calls and health always find a
    thread; -1 = no cap, only to measure), ``MAX_STREAMS_PER_CLIENT`` (0 = no
    per-client cap).

    Security (docs/security.md): ``SEMFORGE_AUTH`` (none | loopback | tokens |
    service), ``SEMFORGE_TOKENS`` (token registry file), ``SEMFORGE_SERVICE_TOKEN``
    or ``SEMFORGE_SERVICE_TOKEN_FILE`` (the secret between the gateway and the
    services behind it), ``SEMFORGE_SERVICE_PEERS`` (mTLS common names accepted as
    the gateway), ``TLS_CERT`` + ``TLS_KEY`` (serve TLS), ``TLS_CA`` (require and
    verify client certificates: mTLS; the gateway also uses these three for its
    own calls to the services).
    """

    port: int = 0
    host: str = "127.0.0.1"
    metrics_port: int = 0
    max_message_mb: int = 8
    workers: int = 32
    store: str | None = None
    grace_s: float = 5.0
    max_streams: int = 0
    max_streams_per_client: int = 0
    auth: str = "none"
    tokens_file: str = ""
    service_token: str = ""
    service_peers: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""

    @property
    def stream_cap(self) -> int:
        """Concurrent streams admitted: MAX_STREAMS, or WORKERS - 8 (at least WORKERS // 2)."""
        if self.max_streams < 0:
            return 0  # no cap (the behaviour before #15; for measurements only)
        if self.max_streams:
            return min(self.max_streams, max(self.workers - 1, 1))
        return max(self.workers - 8, self.workers // 2, 1)

    def auth_settings(self):
        from ..security import AuthSettings

        return AuthSettings(mode=self.auth, tokens_file=self.tokens_file, service_token=self.service_token,
                            service_peers=tuple(p.strip() for p in self.service_peers.split(",") if p.strip()))

    @classmethod
    def from_env(cls, **overrides):
        cfg = cls(
            port=env_int("PORT", 0, minimum=0),
            host=env_str("HOST", "127.0.0.1"),
            metrics_port=env_int("METRICS_PORT", 0, minimum=0),
            max_message_mb=env_int("MAX_MESSAGE_MB", 8, minimum=1),
            workers=env_int("WORKERS", 32, minimum=2),
            store=env_str("SEMFORGE_STORE"),
            grace_s=env_float("GRACE_S", 5.0, minimum=0),
            max_streams=env_int("MAX_STREAMS", 0, minimum=-1),
            max_streams_per_client=env_int("MAX_STREAMS_PER_CLIENT", 0, minimum=0),
            auth=env_str("SEMFORGE_AUTH", "none"),
            tokens_file=env_str("SEMFORGE_TOKENS", ""),
            service_token=_secret("SEMFORGE_SERVICE_TOKEN"),
            service_peers=env_str("SEMFORGE_SERVICE_PEERS", ""),
            tls_cert=env_str("TLS_CERT", ""),
            tls_key=env_str("TLS_KEY", ""),
            tls_ca=env_str("TLS_CA", ""),
        )
        for k, v in overrides.items():
            setattr(cfg, k, v)
        if cfg.auth not in ("none", "loopback", "tokens", "service"):
            raise ConfigError(f"SEMFORGE_AUTH={cfg.auth!r}: use none, loopback, tokens or service")
        if cfg.auth == "service" and not (cfg.service_token or cfg.service_peers):
            raise ConfigError("SEMFORGE_AUTH=service needs SEMFORGE_SERVICE_TOKEN (or _FILE: the secret the gateway "
                              "sends) or SEMFORGE_SERVICE_PEERS with mTLS (TLS_CA)")
        if bool(cfg.tls_cert) != bool(cfg.tls_key):
            raise ConfigError("TLS_CERT and TLS_KEY go together (the server's certificate chain and its key)")
        if cfg.tls_ca and not cfg.tls_cert:
            raise ConfigError("TLS_CA (client certificates) needs TLS_CERT and TLS_KEY (the server's own)")
        return cfg

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if d.get("service_token"):
            d["service_token"] = "<redacted>"
        return d
