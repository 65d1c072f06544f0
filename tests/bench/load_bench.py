"""Load benchmark (#15): many clients against a gateway, some holding streams; unary calls and health must answer.

``bench_load()`` starts the embedded services in a child process with one
gateway configured as asked (threads, stream cap), then runs ``clients``
client threads here for ``seconds``: ``watchers`` of them submit a one-image
job and watch it to the end (a ``WatchJob`` stream each, again and again),
the others call ``GetJob`` and the health check in a loop with a 5 s deadline.
Reported: calls and errors by method and status, p50/p95 latency of ``GetJob``
and health, health answers other than SERVING, images analysed per minute (jobs
that SUCCEEDED during the window, counted in the store) and streams refused.

Usage: python tests/bench/load_bench.py [--clients 50 --watchers 20 --seconds 60] [--compare] [--write FILE]
(``--compare`` also runs the configuration before #15: 8 threads, no stream cap.)
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["bench_load", "load_block"]


def _serve(conn, store_dir: str, workers: int, max_streams: int) -> None:
    """Child process: embedded services + the gateway under test; sends its address, serves until told to stop."""
    from semforge.embedded import start_embedded
    from semforge.rpc import build_server
    from semforge.storage import LocalStore
    from semforge_gateway.server import GatewayConfig, ready, register

    emb = start_embedded(store=LocalStore(store_dir))
    cfg = GatewayConfig(segment_addr=emb.servers["segment"].address, measure_addr=emb.servers["measure"].address,
                        classify_addr=emb.servers["classify"].address, workers=workers, max_streams=max_streams)
    add, runner = register(emb.store, cfg)
    srv = build_server("gateway-under-load", add, cfg, ready_check=lambda: ready(emb.store, cfg), check_interval_s=0.5)
    conn.send(srv.address)
    t_start = conn.recv()  # the clients start
    conn.recv()  # stop
    refused = srv.limiter.refused if srv.limiter else 0
    done = [j for j in runner.jobs.list(1_000_000) if j.state == 3 and j.updated_at >= t_start]  # SUCCEEDED in window
    runner.close(0)
    srv.stop(0)
    emb.stop(0)
    conn.send((refused, sum(j.images_total for j in done)))


def _pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def bench_load(*, clients: int = 50, watchers: int = 20, seconds: float = 60.0, workers: int = 32,
               max_streams: int = 0, image_px: int = 384) -> dict:
    """Run the load and return the figures (see the module docstring)."""
    import grpc
    import numpy as np
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from semforge.client import GatewayClient
    from semforge.common.v1 import common_pb2
    from semforge.gateway.v1 import gateway_pb2
    from semforge.rpc._limits import retry_after_ms
    from semforge.training.synth import synthetic_sem, write_zeiss_tiff

    tmp = Path(tempfile.mkdtemp(prefix="semforge-loadbench-"))
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, str(tmp / "store"), workers, max_streams), daemon=True)
    proc.start()
    address = parent.recv()
    img, _ = synthetic_sem(seed=5, n_particles=25, size=(image_px, image_px), databar_rows=0)
    path = tmp / "load.tif"
    write_zeiss_tiff(path, np.asarray(img), 2.5)
    setup = GatewayClient(address)
    setup.wait_ready(60)
    ref = setup.upload(path).image.ref
    seed_job = setup.stub.SubmitJob(gateway_pb2.SubmitJobRequest(request=gateway_pb2.AnalyzeRequest(images=[ref])),
                                    timeout=30).job.job_id

    lock = threading.Lock()
    counts: dict = collections.defaultdict(collections.Counter)
    lat: dict = collections.defaultdict(list)
    not_serving = [0]
    images = [0]
    stop = time.monotonic() + seconds

    def note(method, code, ms=None):
        with lock:
            counts[method][code] += 1
            if ms is not None and code == "OK":
                lat[method].append(ms)

    def watcher():
        c = GatewayClient(address)
        while time.monotonic() < stop:
            try:
                job = c.stub.SubmitJob(gateway_pb2.SubmitJobRequest(request=gateway_pb2.AnalyzeRequest(
                    images=[ref], names=["load"])), timeout=10).job
                note("SubmitJob", "OK")
            except grpc.RpcError as exc:
                note("SubmitJob", exc.code().name)
                time.sleep(0.5)
                continue
            while time.monotonic() < stop:
                try:
                    last = None
                    for msg in c.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id),
                                               timeout=max(1.0, stop - time.monotonic())):
                        last = msg
                    note("WatchJob", "OK")
                    if last is not None and last.job.state == common_pb2.JOB_STATE_SUCCEEDED:
                        with lock:
                            images[0] += 1
                    break
                except grpc.RpcError as exc:
                    note("WatchJob", exc.code().name)
                    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        time.sleep((retry_after_ms(exc) or 1000) / 1e3)
                    elif exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                        time.sleep(0.5)
        c.close()

    def poller():
        c = GatewayClient(address)
        hs = health_pb2_grpc.HealthStub(c.channel)
        while time.monotonic() < stop:
            for method, call in (("GetJob", lambda: c.stub.GetJob(gateway_pb2.GetJobRequest(job_id=seed_job),
                                                                   timeout=5)),
                                 ("Health", lambda: hs.Check(health_pb2.HealthCheckRequest(), timeout=5))):
                t0 = time.perf_counter()
                try:
                    r = call()
                    note(method, "OK", (time.perf_counter() - t0) * 1e3)
                    if method == "Health" and r.status != health_pb2.HealthCheckResponse.SERVING:
                        with lock:
                            not_serving[0] += 1
                except grpc.RpcError as exc:
                    note(method, exc.code().name)
            time.sleep(0.2)
        c.close()

    threads = [threading.Thread(target=watcher if i < watchers else poller, daemon=True) for i in range(clients)]
    import datetime as _dt

    parent.send(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    wall = time.monotonic() - t0
    parent.send("stop")
    refused, analysed = parent.recv() if parent.poll(60) else (None, None)
    proc.join(10)
    setup.close()
    return {
        "config": {"workers": workers, "max_streams": max_streams, "clients": clients, "watchers": watchers,
                   "seconds": seconds, "image_px": image_px},
        "calls": {m: dict(c) for m, c in counts.items()},
        "p50_ms": {m: round(statistics.median(v), 1) for m, v in lat.items() if v},
        "p95_ms": {m: round(_pct(v, 95), 1) for m, v in lat.items() if v},
        "health_not_serving": not_serving[0],
        "images_per_min": round(analysed / wall * 60, 1) if analysed is not None else None,
        "watched_to_success_per_min": round(images[0] / wall * 60, 1),
        "streams_refused": refused,
    }


def load_block(results: list[dict]) -> str:
    """Markdown table of one or more ``bench_load`` results."""
    rows = ["| gateway | GetJob p50 / p95 ms | health p50 / p95 ms | health not SERVING | GetJob / health errors "
            "| WatchJob calls by status | images/min |", "|---|---|---|---|---|---|---|"]
    for r in results:
        c = r["config"]
        cap = "no stream cap" if c["max_streams"] < 0 else f"stream cap {c['max_streams'] or 'auto'}"
        err = lambda m: sum(n for k, n in r["calls"].get(m, {}).items() if k != "OK")  # noqa: E731
        tot = lambda m: sum(r["calls"].get(m, {}).values())  # noqa: E731
        p = lambda m: f"{r['p50_ms'].get(m, float('nan')):.0f} / {r['p95_ms'].get(m, float('nan')):.0f}"  # noqa: E731
        watch = ", ".join(f"{k} {n}" for k, n in sorted(r["calls"].get("WatchJob", {}).items()))
        rows.append(f"| {c['workers']} threads, {cap} | {p('GetJob')} | {p('Health')} | {r['health_not_serving']} "
                    f"| {err('GetJob')}/{tot('GetJob')}, {err('Health')}/{tot('Health')} | {watch} "
                    f"| {r['images_per_min']} |")
    c = results[0]["config"]
    head = (f"{c['clients']} concurrent clients for {c['seconds']:.0f} s, {c['watchers']} of them submitting a "
            f"{c['image_px']}x{c['image_px']} one-image job and watching it (WatchJob stream), the rest calling "
            f"GetJob and health (5 s deadline) every 0.2 s. Clients in this process, services in a child process.\n\n")
    return head + "\n".join(rows) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--watchers", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--max-streams", type=int, default=0)
    ap.add_argument("--compare", action="store_true", help="also run the pre-#15 gateway (8 threads, no cap)")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--write", help="append the markdown block to this file")
    a = ap.parse_args()
    results = []
    if a.compare:
        results.append(bench_load(clients=a.clients, watchers=a.watchers, seconds=a.seconds, workers=8, max_streams=-1))
    results.append(bench_load(clients=a.clients, watchers=a.watchers, seconds=a.seconds, workers=a.workers,
                              max_streams=a.max_streams))
    block = load_block(results)
    print(block)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    if a.write:
        with open(a.write, "a") as fh:
            fh.write("\n## Load: streams and unary calls (#15)\n\n" + block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
