"""The probes the chart uses (issue #12): readiness = health service "" (NOT_SERVING until dependencies answer),
liveness = service "liveness" (SERVING while the process serves), on a real gRPC server."""

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from semforge.rpc import ServiceConfig, build_server


def test_liveness_serves_while_readiness_waits_for_dependencies():
    srv = build_server("probe", lambda server: [], ServiceConfig(port=0), ready_check=lambda: False,
                       check_interval_s=0.05)
    try:
        with grpc.insecure_channel(srv.address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            ready = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
            live = stub.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=5).status
        assert ready == health_pb2.HealthCheckResponse.NOT_SERVING
        assert live == health_pb2.HealthCheckResponse.SERVING
    finally:
        srv.stop(0)
