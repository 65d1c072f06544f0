"""Batch figures (`make bench-batch`): images/hour with 1 and 2 local workers (scaling ratio) and the
per-image overhead of a shard (manifest, store round trips, result records, report from the store) vs the
in-process analysis of the same images.

Usage: python tests/bench/batch_scaling.py [--images 8] [--write docs/deploy.md]
(writes between the <!-- batch-bench --> markers of the given file)
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import tempfile
import time
from pathlib import Path

from semforge.batch import LocalWorkers, submit_batch, write_batch_report
from semforge.pipeline import analyze_paths
from semforge.storage import open_store
from semforge.training.synth import synthetic_sem, write_zeiss_tiff


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--write")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="semforge-batch-bench-") as tmp:
        tmp = Path(tmp)
        src = tmp / "images"
        src.mkdir()
        for i in range(a.images):
            img, _ = synthetic_sem(seed=100 + i, n_particles=60)
            write_zeiss_tiff(src / f"img_{i:03d}.tif", img, 2.5)
        paths = sorted(str(p) for p in src.glob("*.tif"))
        load0 = os.getloadavg()[0]
        t = time.perf_counter()
        analyze_paths(paths, tmp / "inprocess", title="bench")
        t_in = time.perf_counter() - t
        rows = []
        cores = os.cpu_count() or 1
        # (workers, threads per worker): the default split, then 2 workers on every core each (the old default)
        for workers, threads in ((1, None), (2, None), (2, cores)):
            store_dir = tmp / f"store{workers}-{threads}"
            store = open_store(str(store_dir))
            t = time.perf_counter()
            m = submit_batch(store, [str(src)], shards=workers)
            st = LocalWorkers(str(store_dir), workers=workers, poll_s=0.2, threads=threads).run(store, m)
            write_batch_report(store, m["id"], tmp / f"report{workers}-{threads}", title="bench")
            dt = time.perf_counter() - t
            assert st["done"] == a.images and not st["failed_shards"], st
            rows.append((workers, dt))
        load1 = os.getloadavg()[0]
    n = a.images
    (w1, t1), (w2, t2), (_, t2all) = rows
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"load average {load0:.1f} -> {load1:.1f} (a machine shared with other jobs: treat ratios as rough), "
        f"{n} synthetic 1024x768 SE images of 60 particles, shipped UNet++ in process, local directory store:",
        "",
        "| run | wall time | images/hour | per image |",
        "|---|---|---|---|",
        f"| in process (`semforge analyze`, one process) | {t_in:.1f} s | {n / t_in * 3600:.0f} | {t_in / n:.2f} s |",
        f"| batch, 1 worker (submit + shard + report) | {t1:.1f} s | {n / t1 * 3600:.0f} | {t1 / n:.2f} s |",
        f"| batch, 2 workers ({max(1, (os.cpu_count() or 1) // 2)} thread(s) each, the default) | {t2:.1f} s | "
        f"{n / t2 * 3600:.0f} | {t2 / n:.2f} s |",
        f"| batch, 2 workers on every core each (before: {os.cpu_count()} threads each) | {t2all:.1f} s | "
        f"{n / t2all * 3600:.0f} | {t2all / n:.2f} s |",
        "",
        f"Scaling 1 -> 2 workers: x{t1 / t2:.2f} images/hour (x{t1 / t2all:.2f} with every core per worker). "
        f"Per-image overhead of a shard vs in process: "
        f"{(t1 - t_in) / n:+.2f} s (worker start and model load, store writes, the report re-reading the store).",
        f"Each local worker's ONNX Runtime sessions (segmenter, shape classifier) and OpenMP get "
        f"max(1, cores // workers) intra-op threads ({os.cpu_count()} // 1 and {os.cpu_count()} // 2 here; "
        "`SEMFORGE_WORKER_THREADS`); the in-process run uses every core. Other jobs on the machine take cores "
        "from both runs alike; the load average above says how busy it was.",
        "",
        "Reproduce: `make bench-batch` (`python tests/bench/batch_scaling.py --images "
        f"{n} --write docs/deploy.md`).",
    ]
    text = "\n".join(lines)
    print(text)
    if a.write:
        p = Path(a.write)
        doc = p.read_text()
        new = re.sub(r"<!-- batch-bench -->.*?<!-- /batch-bench -->",
                     lambda _: f"<!-- batch-bench -->\n{text}\n<!-- /batch-bench -->", doc, flags=re.S)
        p.write_text(new)


if __name__ == "__main__":
    main()
