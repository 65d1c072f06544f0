"""Cross-cutting gRPC code shared by every service: config, server bootstrap, errors, conversions."""

from ._config import ConfigError, ServiceConfig, env_float, env_int, env_str
from ._errors import RpcAbort, abort, bad_request_from, error_detail_from, map_exceptions, status_for
from ._server import RunningServer, build_server, configure_logging, run_service, serve_forever

__all__ = [
    "ConfigError", "RpcAbort", "abort", "bad_request_from", "status_for", "RunningServer", "ServiceConfig", "build_server", "configure_logging",
    "env_float", "env_int", "env_str", "error_detail_from", "map_exceptions", "run_service", "serve_forever",
]
