"""The shared server bootstrap: fail-fast config, metrics endpoint, graceful SIGTERM, standalone services."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import free_port


def _env(**kw):
    env = dict(os.environ)
    env.update({k: str(v) for k, v in kw.items()})
    return env


def test_gateway_fails_fast_without_required_config(tmp_path):
    env = _env(SEMFORGE_STORE=tmp_path, PORT=0)
    for k in ("SEGMENT_ADDR", "MEASURE_ADDR", "CLASSIFY_ADDR"):
        env.pop(k, None)
    r = subprocess.run([sys.executable, "-m", "semforge_gateway.server"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0
    assert "SEGMENT_ADDR is required" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_numeric_config_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "semforge_measure.server"], env=_env(PORT="fifty", SEMFORGE_STORE=tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "PORT='fifty' is not an integer" in r.stderr


def test_standalone_service_serves_metrics_and_stops_on_sigterm(tmp_path):
    port, mport = free_port(), free_port()
    p = subprocess.Popen([sys.executable, "-m", "semforge_measure.server"],
                         env=_env(PORT=port, METRICS_PORT=mport, SEMFORGE_STORE=tmp_path / "store"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        status = None
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            while time.monotonic() < deadline:
                try:
                    status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
            assert status == health_pb2.HealthCheckResponse.SERVING
            # one failing call so that the counter has a non-OK code
            from semforge.measure.v1 import measure_pb2, measure_pb2_grpc

            try:
                measure_pb2_grpc.MeasureServiceStub(ch).Measure(measure_pb2.MeasureRequest(), timeout=5)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
        body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
        assert 'semforge_rpc_requests_total{code="INVALID_ARGUMENT",method="Measure",service="measure"} 1.0' in body
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
        err = p.stderr.read()
        assert '"msg": "signal' in err  # structured JSON log lines
    finally:
        if p.poll() is None:
            p.kill()
