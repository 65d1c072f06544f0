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


@dataclass
class ServiceConfig:
    """Settings every service reads from the environment.

    ``PORT`` (0 = any free port), ``HOST`` (127.0.0.1 embedded, 0.0.0.0 in a
    pod), ``METRICS_PORT`` (Prometheus; 0 = off), ``MAX_MESSAGE_MB``,
    ``WORKERS`` (server threads), ``SEMFORGE_STORE`` (object store URL),
    ``GRACE_S`` (shutdown grace period).
    """

    port: int = 0
    host: str = "127.0.0.1"
    metrics_port: int = 0
    max_message_mb: int = 8
    workers: int = 8
    store: str | None = None
    grace_s: float = 5.0

    @classmethod
    def from_env(cls, **overrides):
        cfg = cls(
            port=env_int("PORT", 0, minimum=0),
            host=env_str("HOST", "127.0.0.1"),
            metrics_port=env_int("METRICS_PORT", 0, minimum=0),
            max_message_mb=env_int("MAX_MESSAGE_MB", 8, minimum=1),
            workers=env_int("WORKERS", 8, minimum=1),
            store=env_str("SEMFORGE_STORE"),
            grace_s=env_float("GRACE_S", 5.0, minimum=0),
        )
        for k, v in overrides.items():
            setattr(cfg, k, v)
        return cfg

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
