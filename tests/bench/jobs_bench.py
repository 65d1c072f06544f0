"""Job history benchmark (#15): a gateway with 10,000 stored jobs -- latency of a ListJobs page (first and deep),
GetJob, DeleteJob, and the idle CPU of the gateway process; beside it the cost of the listing before #15 (read
every job record in the store, sort, cut), measured on the same store.

The store is a real local store filled through ``JobStore.create`` (record + index entries, as the runner writes
them; all finished, as in a facility's history). The gateway is the real servicer behind the real token
interceptor, in a child process; the clients are here.

Usage: python tests/bench/jobs_bench.py [--jobs 10000] [--tenants 4] [--idle-s 30] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

SECTION = "## Job history at scale: 10,000 jobs (#15)"


def _serve(conn, store_dir: str, tokens: str) -> None:
    from semforge.analysis import MeasureOptions
    from semforge.gateway.v1 import gateway_pb2, gateway_pb2_grpc
    from semforge.jobs import JobRunner
    from semforge.pipeline import AnalysisOptions
    from semforge.rpc import build_server
    from semforge.storage import LocalStore
    from semforge_gateway.server import GatewayConfig, GatewayServicer

    store = LocalStore(store_dir)
    cfg = GatewayConfig(auth="tokens", tokens_file=tokens)  # resume_after_s: the default 60 s
    runner = JobRunner(store, lambda job: None, options_of=lambda pb: AnalysisOptions(MeasureOptions()),
                       resume_after_s=cfg.resume_after_s, retention_days=3650)  # retention thread on, as deployed
    runner._indexed = True  # noqa: SLF001 - the benchmark store was written with the index

    def add(server):
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(store, runner, cfg), server)
        return [gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name]

    # the runner's threads (resume scan of active/released, heartbeat, retention) run as in production, but
    # its workers have nothing queued here
    runner.start()
    srv = build_server("gateway", add, cfg)
    conn.send((srv.address, os.getpid()))
    conn.recv()
    runner.close(1.0)
    srv.stop(0.2)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fill(store, n: int, tenants: int, start: int = 0) -> float:
    from semforge.common.v1 import common_pb2 as S
    from semforge.jobs import JobStore

    jobs = JobStore(store)
    t0 = time.perf_counter()
    base = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    for i in range(start, n):
        state = S.JOB_STATE_CANCELLED if i % 20 == 0 else S.JOB_STATE_SUCCEEDED
        job = S.Job(job_id=f"{i:08d}" + "0" * 24, state=state, tenant=f"group-{i % tenants}", owner="bench",
                    sample=f"sample {i}", images_total=50, images_done=50,
                    created_at=(base + dt.timedelta(seconds=i)).isoformat(timespec="milliseconds"))
        for k in range(50):
            job.input_names.append(f"image_{k:02d}")
        jobs.create(job)
        jobs.finished(job.job_id)
    store.put_bytes("index/v1", b"")
    return time.perf_counter() - t0


def old_listing(store, limit: int = 100) -> float:
    """ListJobs before #15: read and parse every job record, sort by creation time, cut."""
    from google.protobuf import json_format

    from semforge.common.v1 import common_pb2 as S

    t0 = time.perf_counter()
    jobs = []
    for k in store.list("jobs/"):
        if k.endswith("/job.json"):
            jobs.append(json_format.Parse(store.get_bytes(k), S.Job()))
    jobs.sort(key=lambda j: j.created_at, reverse=True)
    jobs[:limit]
    return time.perf_counter() - t0


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def bench(n_jobs: int, tenants: int, idle_s: float, reps: int = 30, tmp: Path | None = None, start: int = 0) -> dict:
    import grpc

    from semforge.gateway.v1 import gateway_pb2 as G, gateway_pb2_grpc
    from semforge.security import Role, TokenRegistry
    from semforge.storage import LocalStore

    tmp = tmp or Path(tempfile.mkdtemp(prefix="semforge-jobs-bench-"))
    store = LocalStore(tmp / "store")
    fill_s = fill(store, n_jobs, tenants, start)
    reg = TokenRegistry(tmp / "tokens.json")
    user, _ = reg.issue("u", "group-0")
    admin, _ = reg.issue("root", "facility", role=Role.ADMIN)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, str(tmp / "store"), str(tmp / "tokens.json")), daemon=True)
    proc.start()
    address, pid = parent.recv()
    out: dict = {"jobs": n_jobs, "tenants": tenants, "fill_s": round(fill_s, 1)}
    try:
        ch = grpc.insecure_channel(address)
        stub = gateway_pb2_grpc.GatewayServiceStub(ch)
        md = lambda tok: [("authorization", f"Bearer {tok}")]  # noqa: E731

        def timed(fn, k=reps):
            fn()  # warm
            ts = []
            for _ in range(k):
                t0 = time.perf_counter()
                fn()
                ts.append((time.perf_counter() - t0) * 1e3)
            return {"p50_ms": round(statistics.median(ts), 1), "p95_ms": round(_pct(ts, 0.95), 1)}

        for who, tok in (("user (own tenant)", user), ("admin (all tenants)", admin)):
            for size in (50, 100):
                out[f"ListJobs first page, {size}, {who}"] = timed(
                    lambda: stub.ListJobs(G.ListJobsRequest(page_size=size), metadata=md(tok), timeout=30))
        # a deep page: walk 20 pages of 100 with the admin token, then time the next one
        token = ""
        for _ in range(20):
            token = stub.ListJobs(G.ListJobsRequest(page_size=100, page_token=token), metadata=md(admin),
                                  timeout=30).next_page_token
        out["ListJobs page 21 of 100, admin"] = timed(
            lambda: stub.ListJobs(G.ListJobsRequest(page_size=100, page_token=token), metadata=md(admin), timeout=30))
        out["GetJob"] = timed(lambda: stub.GetJob(G.GetJobRequest(job_id="00000004" + "0" * 24), metadata=md(user),
                                                  timeout=30))
        ids = iter(f"{i:08d}" + "0" * 24 for i in range(n_jobs - 1, start, -1) if i % 20 and i % tenants == 0)
        def delete():
            r = stub.DeleteJob(G.DeleteJobRequest(job_id=next(ids)), metadata=md(user), timeout=30)
            assert r.objects_deleted >= 1, r

        out["DeleteJob"] = timed(delete, k=20)
        ch.close()
        time.sleep(2.0)
        c0, t0 = _cpu_s(pid), time.monotonic()
        time.sleep(idle_s)
        out["idle_cpu_pct"] = round(100 * (_cpu_s(pid) - c0) / (time.monotonic() - t0), 2)
        out["idle_s"] = idle_s
    finally:
        parent.send("stop")
        proc.join(10)
    out["old listing (every record), one call"] = timed_old = []
    for _ in range(3):
        timed_old.append(round(old_listing(store) * 1e3))
    out["old listing (every record), one call"] = {"p50_ms": statistics.median(timed_old), "runs": timed_old}
    return out


def block(results: list[dict]) -> str:
    sizes = [r["jobs"] for r in results]
    rows = ["| call | " + " | ".join(f"{n:,} jobs: p50 / p95 ms" for n in sizes) + " |",
            "|---|" + "---|" * len(sizes)]
    for k, v in results[0].items():
        if isinstance(v, dict) and "p50_ms" in v:
            cells = []
            for r in results:
                x = r.get(k, {})
                cells.append(f"{x.get('p50_ms', '')} / {x.get('p95_ms', '-')}")
            rows.append(f"| {k} | " + " | ".join(cells) + " |")
    rows.append("| idle gateway, % of a core | " + " | ".join(f"{r['idle_cpu_pct']}" for r in results) + " |")
    r = results[-1]
    return (f"{SECTION}\n\n"
            f"Measured by `python tests/bench/jobs_bench.py --write docs/benchmarks.md` on {platform.machine()}, "
            f"{os.cpu_count()} cores (shared with other work: compare ratios within a column set), "
            f"{time.strftime('%Y-%m-%d')}. One local store filled to {', then '.join(f'{n:,}' for n in sizes)} jobs of "
            f"{r['tenants']} tenants (50 image names each, all finished); for each size a gateway with token "
            f"authentication in its own process, its runner's threads running (resume scan, heartbeat, retention; "
            f"idle CPU over {r['idle_s']:.0f} s); clients over gRPC on 127.0.0.1. The old listing (before #15: "
            "read every record in the store, sort, cut) is timed on the same store.\n\n"
            + "\n".join(rows) +
            "\n\nA page costs one directory listing of the tenant's index (S3: one `ListObjectsV2` with "
            "`start-after`) plus one record read per job returned, so it does not grow with the history; the resume "
            "scan reads `released/` every second and `active/` every 15 s, never the history.\n")


def write_section(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else ""
    if SECTION in doc:
        head, rest = doc.split(SECTION, 1)
        nxt = rest.find("\n## ")
        doc = head + text + (rest[nxt + 1:] if nxt >= 0 else "")
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    path.write_text(doc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", default="1000,10000", help="store sizes, increasing (one store, filled up)")
    ap.add_argument("--tenants", type=int, default=4)
    ap.add_argument("--idle-s", type=float, default=30.0)
    ap.add_argument("--write")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="semforge-jobs-bench-"))
    results, start = [], 0
    for n in (int(x) for x in a.jobs.split(",")):
        results.append(bench(n, a.tenants, a.idle_s, tmp=tmp, start=start))
        start = n
        print(json.dumps(results[-1], indent=1), flush=True)
    if a.write:
        write_section(Path(a.write), block(results))
    print(block(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
