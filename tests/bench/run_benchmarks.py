"""Benchmarks (`make bench`): figures and ratios measured in one run, medians quoted.

- separation + morphometry of a 1024x768 mask with ~200 touching particles (one core);
- orchestration overhead: analysis through the gateway (upload + gRPC pipeline + report download)
  vs the same analysis in process, interleaved runs, median ratio;
- upload throughput of a 50 MB image through the gateway into the local and the S3 (MinIO API) store.

Usage: python tests/bench/run_benchmarks.py [--runs 20] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for the S3 server helper

from semforge.analysis import MeasureOptions, measure_mask  # noqa: E402
from semforge.client import GatewayClient  # noqa: E402
from semforge.common.v1 import common_pb2  # noqa: E402
from semforge.embedded import start_embedded  # noqa: E402
from semforge.storage import LocalStore  # noqa: E402
from semforge.training.synth import synthetic_sem, write_zeiss_tiff  # noqa: E402
from semforge.pipeline import analyze_paths  # noqa: E402


def touching_mask(seed=0, n=200):
    from scipy import ndimage as ndi

    _, labels = synthetic_sem(seed=seed, n_particles=n, radius_px=(12, 2.5), touching=0.7, databar_rows=0)
    # grow every particle by 1 px so that neighbours 1 px apart touch
    return ndi.grey_dilation(labels, size=3) > 0, int(labels.max())


def bench_separation(repeats=7):
    mask, n = touching_mask()
    out = {}
    for mode in ("none", "watershed", "uecs"):
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            r = measure_mask(mask, options=MeasureOptions(separate=mode, classify=False))
            ts.append(time.perf_counter() - t0)
        out[mode] = (statistics.median(ts), len(r.particles))
    return out, n, int(mask.sum())


def bench_overhead(runs, tmp: Path):
    paths = []
    img, _ = synthetic_sem(seed=11)
    p = tmp / "bench_img.tif"
    write_zeiss_tiff(p, img, 2.5)
    paths.append(str(p))
    emb = start_embedded(store=LocalStore(tmp / "store"))
    c = GatewayClient(emb.gateway_address)
    c.wait_ready(30)
    t_local, t_gw = [], []
    from semforge.inference import DEFAULT_SEGMENTER, create_segmenter

    seg = create_segmenter(DEFAULT_SEGMENTER)  # loaded once, as the segment service holds its model
    try:
        for i in range(runs + 1):
            t0 = time.perf_counter()
            analyze_paths(paths, tmp / f"local{i}", segmenter=seg)
            t1 = time.perf_counter()
            up = c.upload(paths[0])
            job = c.analyze([up.image.ref], ["bench_img"], common_pb2.AnalysisOptions())
            c.download_outputs(job, tmp / f"gw{i}")
            t2 = time.perf_counter()
            if i:  # first run warms caches and imports
                t_local.append(t1 - t0)
                t_gw.append(t2 - t1)
    finally:
        c.close()
        emb.stop(0.5)
    ratios = [g / l for g, l in zip(t_gw, t_local)]
    return statistics.median(t_local), statistics.median(t_gw), statistics.median(ratios)


def bench_upload(tmp: Path, repeats=3):
    from conftest import S3Server

    side = 7072  # 7072^2 uint8 ~ 50 MB
    img = np.random.default_rng(0).integers(0, 255, (side, side), dtype=np.uint8)
    p = tmp / "big.tif"
    write_zeiss_tiff(p, img, 1.0)
    size_mb = p.stat().st_size / 1e6
    results = {}
    s3 = S3Server(tmp / "s3")
    s3.start()
    try:
        for name, store in (("local directory", LocalStore(tmp / "ustore")), ("S3 (rclone serve s3, minio SDK)", s3.store())):
            emb = start_embedded(store=store)
            c = GatewayClient(emb.gateway_address)
            c.wait_ready(30)
            ts = []
            try:
                for k in range(repeats):
                    # a different last byte each time so that content addressing cannot skip the upload
                    data = bytearray(p.read_bytes())
                    data[-1] = (data[-1] + k + 1) % 256
                    q = tmp / f"big_{k}.tif"
                    q.write_bytes(bytes(data))
                    t0 = time.perf_counter()
                    c.upload(q)
                    ts.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                r = c.upload(q)
                dedup = time.perf_counter() - t0
                assert r.deduplicated
            finally:
                c.close()
                emb.stop(0.5)
            results[name] = (size_mb / statistics.median(ts), statistics.median(ts), dedup)
    finally:
        s3.stop()
    return size_mb, results


RENDER_SPEC = dict(particles=300, size_px=512, pixel_size_nm=2.0, frames=90)


def render_components():
    from semforge.training.scenes import ShapeComponent

    return [ShapeComponent("sphere", 3, 45, 6), ShapeComponent("indented_sphere", 1, 45, 6),
            ShapeComponent("short_rod", 1, 28, 4), ShapeComponent("cube", 1, 38, 4),
            ShapeComponent("hexagonal_plate", 1, 50, 6), ShapeComponent("octahedron", 1, 45, 5)]


def bench_render(tmp: Path, seeds=(1, 2, 3), batch=6):
    """One 300-particle 512x512 scene, one core; then a batch over all cores; peak memory."""
    import resource

    from semforge.training.scenes import BlenderWorker, SceneSpec, render_batch, render_scene
    from semforge.storage import LocalStore

    rows = []
    with BlenderWorker() as w:
        t0 = time.perf_counter()
        render_scene(SceneSpec(**{**RENDER_SPEC, "particles": 5, "size_px": 64}, components=render_components()), worker=w)
        startup = time.perf_counter() - t0
        for seed in seeds:
            spec = SceneSpec(**RENDER_SPEC, seed=seed, components=render_components())
            t0 = time.perf_counter()
            files = render_scene(spec, worker=w)
            wall = time.perf_counter() - t0
            info = json.loads(files["scene.json"])
            rows.append((wall, info["timings_s"], info["physics"]))
        blender_mb = w.peak_rss_mb()
    main_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = os.cpu_count() or 1
    spec = SceneSpec(**RENDER_SPEC, seed=100, components=render_components())
    t0 = time.perf_counter()
    render_batch(spec, batch, LocalStore(tmp / "batch"), "bench", workers=workers)
    batch_wall = time.perf_counter() - t0
    return startup, rows, blender_mb, main_mb, workers, batch, batch_wall


def render_block(startup, rows, blender_mb, main_mb, workers, batch, batch_wall):
    med = lambda k: float(np.median([r[1][k] for r in rows]))  # noqa: E731
    wall = float(np.median([r[0] for r in rows]))
    worst = max(r[2]["max_penetration"] for r in rows)
    below = max(r[2]["below_holder_nm"] for r in rows)
    resid = max(r[2]["residual_nm_per_frame"] for r in rows)
    return ["## Render: one 300-particle 512x512 scene, one core", "",
            "Mixed shapes (spheres 3 : indented spheres, short rods, cubes, hexagonal plates, octahedra 1 each; "
            "28-50 nm at 2 nm/px), levitated start, 90 rigid-body frames, Cycles height + instance-id passes, "
            f"Freestyle borders, then thickness map, SE-like and transmission-like images, scene.json. "
            f"Median of {len(rows)} seeds, one Blender worker with one thread (Blender import and first scene "
            f"excluded: worker start-up {startup:.1f} s, paid once per worker).", "",
            "| stage | median s |", "|---|---|",
            f"| build scene | {med('build_s'):.2f} |", f"| rigid-body drop and settle | {med('simulate_s'):.2f} |",
            f"| Cycles passes + Freestyle | {med('render_s'):.2f} |",
            f"| post-processing (thickness, appearance, files) | {med('post_s'):.2f} |",
            f"| **whole scene** | **{wall:.2f}** |", "",
            f"Goal (issue): <= 15 s on one core; ratio {wall / 15:.2f} of the goal. Physics of these scenes: deepest "
            f"interpenetration {worst * 100:.1f} % of the smaller particle, deepest vertex under the holder "
            f"{below:.2f} nm, residual motion at the last frame {resid:.2f} nm/frame.", "",
            f"Batch: {batch} such scenes over {workers} worker processes: {batch_wall:.1f} s, "
            f"**{3600 * batch / batch_wall:.0f} scenes/hour** on this machine.", "",
            f"Peak memory: Blender worker {blender_mb:.0f} MB resident; the post-processing process {main_mb:.0f} MB.", ""]


SPEED_CONFIGS = [  # (encoder, decoder channels): smp's default first, the shipped one marked in the table
    ("resnet18", [256, 128, 64, 32, 16]),
    ("resnet18", [64, 32, 16, 8]),
    ("resnet18", [32, 16, 8]),
    ("efficientnet-b0", [32, 16, 8, 8]),
    ("mobilenet_v2", [64, 32, 16, 8]),
    ("mobilenet_v2", [32, 16, 8, 8]),
]


def bench_segmentation(tmp: Path, repeats=5):
    """Network time for one 1024x712 image (a BAM-sized specimen area): ONNX Runtime vs PyTorch, per config."""
    import onnxruntime as ort
    import torch

    from semforge.training.segmentation.model import ModelConfig, build_model, export_onnx

    torch.set_num_threads(os.cpu_count() or 1)
    x = np.random.default_rng(0).random((1, 1, 736, 1024)).astype(np.float32)  # 712 rows padded to 32
    rows = []
    for enc, dec in SPEED_CONFIGS:
        net = build_model(ModelConfig(enc, len(dec), dec, 2)).eval()
        path = tmp / f"{enc}-{len(dec)}.onnx"
        export_onnx(net, path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = os.cpu_count() or 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        sess.run(None, {"image": x})
        t_ort = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sess.run(None, {"image": x})
            t_ort.append(time.perf_counter() - t0)
        with torch.no_grad():
            net(torch.from_numpy(x))
            t_pt = []
            for _ in range(max(2, repeats // 2)):
                t0 = time.perf_counter()
                net(torch.from_numpy(x))
                t_pt.append(time.perf_counter() - t0)
        rows.append((enc, dec, sum(p.numel() for p in net.parameters()) / 1e6, path.stat().st_size / 1e6,
                     statistics.median(t_ort), statistics.median(t_pt)))
    return rows


def bench_large_image():
    """The shipped SE model on an 8192x8192 image: tiled, bounded memory (a fresh process, so its peak is its own)."""
    import subprocess

    code = """
import json, resource, sys, time
import numpy as np
from semforge.inference import SHIPPED, OnnxSegmenter
seg = OnnxSegmenter(SHIPPED["se"])
g = np.random.default_rng(1).random((8192, 8192)).astype(np.float32) * 0.3
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
seg.predict(g)
wall = time.perf_counter() - t0
print(json.dumps([wall, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, g.nbytes / 1e6]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))


def segmentation_block(rows, large):
    lines = ["## Segmentation network: speed of candidate UNet++ configurations", "",
             "UNet++ (segmentation-models-pytorch), 1 input channel, 2 outputs (particle, border), random weights "
             "(speed does not depend on them), one 1024x712 specimen area padded to 1024x736, "
             f"{os.cpu_count()} threads. Median of 5 runs (ONNX Runtime) / 2 runs (PyTorch eager).", "",
             "| encoder | decoder channels | parameters (M) | ONNX (MB) | ONNX Runtime s | PyTorch s | ratio to goal (1 s) |",
             "|---|---|---|---|---|---|---|"]
    for enc, dec, npar, mb, t_ort, t_pt in rows:
        mark = " (shipped)" if (enc, dec) == ("mobilenet_v2", [32, 16, 8, 8]) else ""
        mark = " (smp default)" if dec == [256, 128, 64, 32, 16] else mark
        lines.append(f"| {enc}{mark} | {','.join(map(str, dec))} | {npar:.2f} | {mb:.1f} | {t_ort:.3f} | {t_pt:.3f} | "
                     f"{t_ort:.2f} |")
    lines += ["", "Accuracy of the trained configuration is in `docs/segmentation.md`; the choice (mobilenet_v2 "
              "encoder, depth 4, decoder 32-16-8-8) is the fastest under the 1 s goal with a model file of a few MB.", ""]
    if large:
        wall, before, peak, mb = large
        lines += [f"8192x8192 image through the shipped SE model (tiles of 1024 with 128 px blended overlap): "
                  f"{wall:.1f} s; peak memory of that process {peak:.0f} MB, of which {before:.0f} MB before inference "
                  f"(Python, ONNX Runtime, the model and the {mb:.0f} MB float32 input).", ""]
    return lines


def _large_or_none():
    try:
        return bench_large_image()
    except Exception as exc:  # noqa: BLE001 - e.g. no shipped model yet
        print(f"(8192x8192 check skipped: {exc})", file=sys.stderr)
        return None


def overhead_block(runs: int) -> list[str]:
    with tempfile.TemporaryDirectory() as d:
        tl, tg, ratio = bench_overhead(runs, Path(d))
    load = os.getloadavg()[1]
    return ["## Orchestration overhead of the embedded pipeline", "",
            f"One 1024x768 synthetic SE image, {runs} interleaved runs (after one warm-up each; both paths hold "
            "the segmentation model loaded): in process "
            "(`semforge analyze` without server: `LocalStages` load, segment, separate, measure, classify, report) vs "
            "through the gateway (upload, Analyze with streamed progress over gRPC: the job runner on `RemoteStages`, "
            "segment/measure/classify services, the report written by the measure service, download of every "
            "output).", "",
            "| path | median s / image |", "|---|---|",
            f"| in process | {tl:.3f} |", f"| through the gateway | {tg:.3f} |", "",
            f"Median per-run ratio gateway / in process: **{ratio:.3f}** (overhead {(ratio - 1) * 100:+.1f} %; "
            "goal <= +5 %).", "",
            f"Load average over the runs (5 min): {load:.1f} on {os.cpu_count()} cores. Under load the two paths "
            "are interleaved so both see it; differences of a few % either way are noise at that load.", ""]


def replace_section(path: Path, block: list[str]) -> None:
    """Replace the section that starts with ``block[0]`` (up to the next ``## ``) in a Markdown file; append it
    when the file has no such section yet."""
    text = Path(path).read_text().splitlines() if Path(path).exists() else []
    if block[0] not in text:
        Path(path).write_text("\n".join(text + [""] + block).strip("\n") + "\n")
        return
    start = text.index(block[0])
    end = next((i for i in range(start + 1, len(text)) if text[i].startswith("## ")), len(text))
    Path(path).write_text("\n".join(text[:start] + block + text[end:]) + "\n")


def write_sections(path: Path, header: list[str], blocks: list[list[str]]) -> None:
    """The header (up to the first section) and these sections anew; sections written by other benchmark scripts
    (job history, load, ...) stay as they are."""
    text = Path(path).read_text().splitlines() if Path(path).exists() else []
    first = next((i for i, line in enumerate(text) if line.startswith("## ")), len(text))
    Path(path).write_text("\n".join(header + text[first:]) + "\n")
    for block in blocks:
        replace_section(path, block)


def classifier_block(threads: int = 2) -> list[str]:
    """#14: the shape CNN on ~300 particles of one image vs the segmentation of that image."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from classifier_check import speed

    r = speed(threads=threads)
    return ["## Shape classification: ~300 particles of one 1024x712 image (#14)", "",
            f"ONNX Runtime, {r['threads']} threads, median of 5: the shipped CNN on {r['particles']} crops (cut + "
            "classify) vs the shipped UNet++ on the same image.", "",
            "| step | median s |", "|---|---|",
            f"| segmentation (UNet++) | {r['segmentation_s']:.3f} |",
            f"| classification ({r['particles']} particles) | {r['classification_s']:.3f} |", "",
            f"Ratio classification / segmentation: **{r['classification_s'] / r['segmentation_s']:.2f}** "
            f"({r['crops_per_s']:.0f} crops/s; goal: well under the segmentation time).", ""]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--write")
    ap.add_argument("--only", choices=["render", "segmentation", "overhead", "classifier"],
                    help="run one section only (prints it; with --write, overhead replaces its section in the file)")
    args = ap.parse_args()
    if args.only == "overhead":
        block = overhead_block(args.runs)
        print("\n".join(block))
        if args.write:
            replace_section(Path(args.write), block)
        return 0
    if args.only == "segmentation":
        with tempfile.TemporaryDirectory() as d:
            print("\n".join(segmentation_block(bench_segmentation(Path(d)), _large_or_none())))
        return 0
    if args.only == "classifier":
        block = classifier_block()
        print("\n".join(block))
        if args.write:
            replace_section(Path(args.write), block)
        return 0
    if args.only == "render":
        with tempfile.TemporaryDirectory() as d:
            print("\n".join(render_block(*bench_render(Path(d)))))
        return 0
    lines = ["# Benchmarks", "",
             f"Measured by `make bench` (`python tests/bench/run_benchmarks.py --write docs/benchmarks.md`) on "
             f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"{time.strftime('%Y-%m-%d')}. Medians; these machines are noisy, so compare ratios.", ""]
    sep, n, px = bench_separation()
    lines += ["## Separation + morphometry, 1024x768 mask, touching particles (one core)", "",
              f"Synthetic mask: {n} particles drawn, grown by 1 px so that close neighbours touch ({px} foreground px).", "",
              "| mode | median s / image | particles out |", "|---|---|---|"]
    lines += [f"| {m} | {t:.3f} | {k} |" for m, (t, k) in sep.items()]
    lines += ["", "Goal (issue): UECS well under 1 s on one core.", ""]
    print("\n".join(lines))
    block = overhead_block(args.runs)
    print("\n".join(block))
    lines += block
    with tempfile.TemporaryDirectory() as d:
        size_mb, up = bench_upload(Path(d))
    block = ["## Upload of a 50 MB image through the gateway", "",
             f"A {size_mb:.1f} MB 8-bit TIFF (7072x7072), streamed in 1 MiB chunks, stored content-addressed, "
             "then decoded once to check it and read its calibration and data bar. Median of 3 distinct uploads; "
             "then one re-send of the same bytes.", "",
             "| store | MB/s | s / upload | re-send of the same file (s) |", "|---|---|---|---|"]
    block += [f"| {k} | {v[0]:.1f} | {v[1]:.2f} | {v[2]:.2f} |" for k, v in up.items()]
    block += [""]
    print("\n".join(block))
    lines += block
    with tempfile.TemporaryDirectory() as d:
        block = render_block(*bench_render(Path(d)))
    print("\n".join(block))
    lines += block
    with tempfile.TemporaryDirectory() as d:
        block = segmentation_block(bench_segmentation(Path(d)), _large_or_none())
    print("\n".join(block))
    lines += block
    block = classifier_block()
    print("\n".join(block))
    lines += block
    if args.write:
        # header + every section measured here; sections of other benchmark scripts are kept
        blocks, cur = [], None
        for line in lines:
            if line.startswith("## "):
                cur = [line]
                blocks.append(cur)
            elif cur is not None:
                cur.append(line)
        head = lines[: lines.index(blocks[0][0])] if blocks else lines
        write_sections(Path(args.write), head, blocks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
