"""Server bootstrap shared by every service: health, reflection, logging, metrics, limits, shutdown."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ._config import ServiceConfig
from ._handlers import rewrap
from ._limits import StreamLimiter

__all__ = ["RunningServer", "build_server", "serve_forever", "configure_logging", "run_service"]

log = logging.getLogger("semforge.rpc")

_METRICS: dict = {}
_METRICS_LOCK = threading.Lock()


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        for k in ("service", "method", "code", "ms", "job_id", "audit", "user", "tenant", "role", "peer", "object"):
            if hasattr(record, k):
                doc[k] = getattr(record, k)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def configure_logging(level: str = "INFO", *, json_lines: bool = True) -> None:
    """Structured (JSON lines) logging on stderr for services."""
    root = logging.getLogger()
    if any(getattr(h, "_semforge", False) for h in root.handlers):
        return
    h = logging.StreamHandler(sys.stderr)
    h._semforge = True  # type: ignore[attr-defined]
    h.setFormatter(_JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(h)
    root.setLevel(level)


def _metrics():
    with _METRICS_LOCK:
        if not _METRICS:
            from prometheus_client import Counter, Histogram

            _METRICS["requests"] = Counter("semforge_rpc_requests_total", "gRPC calls handled",
                                           ["service", "method", "code"])
            _METRICS["seconds"] = Histogram("semforge_rpc_seconds", "gRPC call duration",
                                            ["service", "method"],
                                            buckets=(0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120))
        return _METRICS


class _ObservingInterceptor(grpc.ServerInterceptor):
    """Logs and counts every call with its status code and duration."""

    def __init__(self, service: str):
        self.service = service

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]
        if handler_call_details.method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        m = _metrics()
        service = self.service

        def record(context, t0):
            code = context.code() if hasattr(context, "code") else None
            name = code.name if isinstance(code, grpc.StatusCode) else "OK"
            ms = (time.perf_counter() - t0) * 1e3
            m["requests"].labels(service, method, name).inc()
            m["seconds"].labels(service, method).observe(ms / 1e3)
            log.info("%s/%s %s %.1f ms", service, method, name, ms,
                     extra={"service": service, "method": method, "code": name, "ms": round(ms, 1)})

        def wrap_unary(fn):
            def inner(request, context):
                t0 = time.perf_counter()
                try:
                    return fn(request, context)
                finally:
                    record(context, t0)
            return inner

        def wrap_stream(fn):
            def inner(request, context):
                t0 = time.perf_counter()
                try:
                    yield from fn(request, context)
                finally:
                    record(context, t0)
            return inner

        return rewrap(handler, unary=wrap_unary, stream=wrap_stream)


@dataclass
class RunningServer:
    """A started gRPC server with its health servicer."""

    name: str
    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: list[str]
    limiter: StreamLimiter | None = None
    _stop_event: threading.Event = field(default_factory=threading.Event)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for n in self.service_names + [""]:
            self.health.set(n, status)

    def stop(self, grace: float = 2.0) -> None:
        self.set_serving(False)
        self.server.stop(grace).wait()
        self._stop_event.set()

    def wait(self) -> None:
        self._stop_event.wait()


def build_server(name: str, register: Callable[[grpc.Server], Iterable[str]], cfg: ServiceConfig, *,
                 ready_check: Callable[[], bool] | None = None, check_interval_s: float = 1.0) -> RunningServer:
    """Create, bind and start a service's gRPC server.

    Parameters
    ----------
    name : str
        Service name for logs and metrics.
    register : callable
        Adds the servicer(s) to the server and returns their full service names.
    cfg : ServiceConfig
    ready_check : callable, optional
        Returns True once the service's dependencies answer; until then (and
        whenever it returns False again) health reports NOT_SERVING.
    """
    max_bytes = cfg.max_message_mb * 1024 * 1024
    interceptors: list = []
    if cfg.auth != "none":  # outermost: nothing runs for a caller without an identity
        from ..security import AuthInterceptor

        interceptors.append(AuthInterceptor(name, cfg.auth_settings()))
    limiter = StreamLimiter(name, max_streams=cfg.stream_cap, max_per_client=cfg.max_streams_per_client)
    interceptors += [limiter, _ObservingInterceptor(name)]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix=f"{name}-rpc"),
        interceptors=interceptors,
        options=[("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes),
                 ("grpc.so_reuseport", 0)],
    )
    names = list(register(server))
    hs = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    reflection.enable_server_reflection(names + [reflection.SERVICE_NAME, health.SERVICE_NAME], server)
    if cfg.tls_cert:
        from ..security import read_pem

        creds = grpc.ssl_server_credentials([(read_pem(cfg.tls_key), read_pem(cfg.tls_cert))],
                                            root_certificates=read_pem(cfg.tls_ca), require_client_auth=bool(cfg.tls_ca))
        port = server.add_secure_port(f"{cfg.host}:{cfg.port}", creds)
    else:
        port = server.add_insecure_port(f"{cfg.host}:{cfg.port}")
    if port == 0:
        raise SystemExit(f"{name}: could not bind {cfg.host}:{cfg.port} (port in use?)")
    server.start()
    rs = RunningServer(name, server, port, hs, names, limiter=limiter)
    # liveness (Kubernetes gRPC liveness probe, service "liveness"): SERVING while the process serves, even when a
    # dependency is down (readiness, service "", says that) so a store outage does not restart every pod
    hs.set("liveness", health_pb2.HealthCheckResponse.SERVING)
    if ready_check is None:
        rs.set_serving(True)
    else:
        rs.set_serving(False)

        def poll():
            last = None
            while not rs._stop_event.is_set():
                try:
                    ok = bool(ready_check())
                except Exception:  # noqa: BLE001 - a failing check means not ready
                    ok = False
                if ok != last:
                    rs.set_serving(ok)
                    log.info("%s health: %s", name, "SERVING" if ok else "NOT_SERVING", extra={"service": name})
                    last = ok
                rs._stop_event.wait(check_interval_s)

        threading.Thread(target=poll, name=f"{name}-health", daemon=True).start()
    if cfg.metrics_port:
        start_metrics(cfg.metrics_port, cfg.host)
    log.info("%s listening on %s:%d (auth %s%s, %d threads, at most %d streams)", name, cfg.host, port, cfg.auth,
             ", mTLS" if cfg.tls_ca else (", TLS" if cfg.tls_cert else ""), cfg.workers, cfg.stream_cap,
             extra={"service": name})
    if cfg.auth == "none" and cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("%s: authentication is off (SEMFORGE_AUTH=none) on %s; see docs/security.md", name, cfg.host,
                    extra={"service": name})
    return rs


_METRICS_STARTED: set[int] = set()


def start_metrics(port: int, host: str = "127.0.0.1") -> None:
    from prometheus_client import start_http_server

    if port in _METRICS_STARTED:
        return
    _metrics()
    start_http_server(port, addr=host)
    _METRICS_STARTED.add(port)


def serve_forever(servers: list[RunningServer], grace: float = 5.0, on_stop: Callable[[], None] | None = None) -> None:
    """Block until SIGTERM/SIGINT, then stop every server gracefully (health NOT_SERVING first).
    ``on_stop`` runs first, at once (the gateway releases its in-flight jobs to the other replicas)."""
    done = threading.Event()

    def handler(signum, frame):
        log.info("signal %s: shutting down", signum)
        done.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not done.wait(0.5):
        pass
    if on_stop is not None:
        try:
            on_stop()
        except Exception:  # noqa: BLE001 - stopping must go on
            log.exception("on_stop hook failed")
    for s in servers:
        s.set_serving(False)
    for s in servers:
        s.server.stop(grace)
    for s in servers:
        s.server.wait_for_termination(grace + 1)


def run_service(name: str, register_with_store: Callable, *, ready_check: Callable[[], bool] | None = None) -> None:
    """Standalone entry point of a store-backed service: env config, JSON logs, serve until SIGTERM.

    Health is NOT_SERVING whenever the object store does not answer, or ``ready_check`` says no.
    """
    from ..storage import open_store

    configure_logging()
    cfg = ServiceConfig.from_env()
    store = open_store(cfg.store)
    extra = ready_check or (lambda: True)
    srv = build_server(name, register_with_store(store), cfg, ready_check=lambda: store.ping() is None and extra())
    serve_forever([srv], cfg.grace_s)
