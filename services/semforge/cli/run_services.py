"""``semforge run``: every service on 127.0.0.1 (the embedded default), optionally with the demo analysis."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ._common import RemoteAnalysis, analyze_remote


def register(sub) -> None:
    r = sub.add_parser("run", help="start every service locally (embedded default) and keep them up")
    r.add_argument("--port", type=int, default=50051, help="gateway port (default 50051; 0 = any free port)")
    r.add_argument("--metrics-port", type=int, default=0, help="Prometheus metrics port (0 = off)")
    r.add_argument("--workdir", default="out", help="where the store, sample and demo report go (default out/)")
    r.add_argument("--store", help="object store URL or directory (default WORKDIR/store)")
    r.add_argument("--demo", action="store_true", help="analyse the shipped sample images through the gateway")
    r.add_argument("--once", action="store_true", help="with the demo: exit when the report is written")
    r.set_defaults(func=run)


def sample_images(outdir: Path, n: int = 2) -> list[str]:
    from ..training.synth import synthetic_sem, write_zeiss_tiff

    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = outdir / f"sample_{i + 1}.tif"
        if not p.exists():
            img, _ = synthetic_sem(seed=100 + i)
            write_zeiss_tiff(p, img, 2.5)
        paths.append(str(p))
    return paths


def run(args: argparse.Namespace) -> int:
    from ..embedded import start_embedded
    from ..pipeline import AnalysisOptions
    from ..rpc import configure_logging, serve_forever

    configure_logging("WARNING" if args.once else "INFO", json_lines=not args.once)
    store = args.store or os.path.join(args.workdir, "store")
    emb = start_embedded(store=store, gateway_port=args.port, metrics_port=args.metrics_port)
    try:
        print(f"semforge embedded: gateway on {emb.gateway_address}, store {store}")
        for name, s in emb.servers.items():
            if name != "gateway":
                print(f"  {name:9s} {s.address}")
        if args.demo or args.once:
            analyze_remote(RemoteAnalysis(emb.gateway_address, sample_images(Path(args.workdir) / "sample"),
                                          os.path.join(args.workdir, "report"), AnalysisOptions(),
                                          "demo sample (synthetic)", 60.0, False))
        if args.once:
            return 0
        print(f"serving; try: semforge client --server {emb.gateway_address} analyze IMAGE --out DIR   (Ctrl-C stops)")
        serve_forever(list(emb.servers.values()))
        return 0
    finally:
        emb.stop(1.0)
