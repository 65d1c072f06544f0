"""Cross-cutting gRPC code shared by every service: config, server bootstrap, errors, conversions."""

from ._config import ConfigError, ServiceConfig, env_float, env_int, env_str
from ._errors import ERROR_DETAIL_KEY, RpcAbort, error_detail_from, map_exceptions
from ._server import RunningServer, build_server, configure_logging, run_service, serve_forever

__all__ = [
    "ConfigError", "ERROR_DETAIL_KEY", "RpcAbort", "RunningServer", "ServiceConfig", "build_server", "configure_logging",
    "env_float", "env_int", "env_str", "error_detail_from", "map_exceptions", "run_service", "serve_forever",
]
