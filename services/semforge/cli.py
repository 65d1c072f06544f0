"""The ``semforge`` command line.

Exit codes: 0 success; 1 the analysis or job failed; 2 bad input or usage;
3 a server could not be reached. Errors are one line on stderr, never a
traceback (set ``SEMFORGE_DEBUG=1`` for one).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]


class CliError(Exception):
    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def _positive(v: str) -> float:
    try:
        f = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {v!r}") from None
    if not f > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return f


def _databar(v: str):
    if v in ("auto", "none"):
        return v
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError("use auto, none or a number of specimen rows") from None
    if n <= 0:
        raise argparse.ArgumentTypeError("the number of specimen rows must be > 0")
    return n


def _add_analysis_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--modality", choices=["se", "stem", "tem", "him"], default="se",
                   help="imaging mode: SE/HIM bright particles, STEM/TEM dark particles (default se)")
    p.add_argument("--pixel-size-nm", type=_positive, default=None,
                   help="pixel size in nm; overrides the file's calibration")
    p.add_argument("--separate", choices=["uecs", "watershed", "none"], default="uecs",
                   help="separation of touching particles (default uecs)")
    p.add_argument("--databar", type=_databar, default="auto",
                   help="instrument data bar: auto (detect), none, or the number of specimen rows")


def _options(args):
    from .analysis import MeasureOptions

    return MeasureOptions(separate=args.separate, modality=args.modality)


def _check_inputs(paths: list[str]) -> None:
    for p in paths:
        if not os.path.exists(p):
            raise CliError(f"no such file: {p}")
        if os.path.isdir(p):
            raise CliError(f"{p} is a directory; pass image files (e.g. {p}/*.tif)")


def _text_progress(i: int, name: str, stage: str, frac: float) -> None:
    sys.stderr.write(f"  {frac * 100:5.1f}%  {name} {stage}\n" if name else f"  {frac * 100:5.1f}%  {stage}\n")
    sys.stderr.flush()


def cmd_analyze(args) -> int:
    _check_inputs(args.images)
    if args.server:
        return _analyze_remote(args.server, args.images, args)
    from .workflow import analyze_paths

    t0 = time.perf_counter()
    written = analyze_paths(args.images, args.out, options=_options(args), pixel_size_nm=args.pixel_size_nm,
                            databar=args.databar, segmenter=args.segmenter, progress=None if args.quiet else _text_progress,
                            title=f"semforge report: {args.sample}")
    print(f"report: {written['html']} ({len(args.images)} image(s), {time.perf_counter() - t0:.1f} s)")
    return 0


def _analysis_pb(args):
    from .common.v1 import common_pb2
    from .rpc._convert import modality_enum, separation_enum

    rows = 0 if args.databar == "auto" else (-1 if args.databar == "none" else args.databar)
    return common_pb2.AnalysisOptions(modality=modality_enum(args.modality), pixel_size_nm=args.pixel_size_nm or 0.0,
                                      separation=separation_enum(args.separate), specimen_rows=rows)


def _analyze_remote(server: str, images: list[str], args) -> int:

    from .client import GatewayClient, ProgressBar
    from .common.v1 import common_pb2

    with GatewayClient(server) as c:
        try:
            c.wait_ready(timeout_s=args.wait)
        except TimeoutError as exc:
            raise CliError(str(exc), 3) from None
        refs, names = [], []
        for path in images:
            r = c.upload(path)
            refs.append(r.image.ref)
            names.append(Path(path).name.rsplit(".", 1)[0])
            if not args.quiet:
                cal = r.image.calibration
                size = f"{cal.pixel_size_nm:g} nm/px ({cal.source})" if cal.pixel_size_nm else "no pixel size in file"
                sys.stderr.write(f"uploaded {path} -> {r.image.ref.key[:22]}... {'(already stored) ' if r.deduplicated else ''}"
                                 f"{r.image.width}x{r.image.height}, {size}\n")
        job = c.analyze(refs, names, _analysis_pb(args), sample=args.sample,
                        progress=None if args.quiet else ProgressBar())
        if job.state != common_pb2.JOB_STATE_SUCCEEDED:
            raise CliError(f"job {job.job_id} {common_pb2.JobState.Name(job.state)}: {job.message}", 1)
        c.download_outputs(job, args.out)
    print(f"report: {Path(args.out) / 'report.html'} (job {job.job_id})")
    return 0


def cmd_measure(args) -> int:
    _check_inputs([args.mask])
    import numpy as np

    from .analysis import Calibration, load_image, write_particles_csv
    from .analysis import measure_mask

    img = load_image(args.mask)
    mask = img.pixels
    if mask.ndim != 2:
        raise CliError(f"{args.mask}: expected a 2-D binary mask")
    cal = Calibration(args.pixel_size_nm, "user") if args.pixel_size_nm else img.calibration
    rows = None if args.databar in ("auto", "none") else args.databar
    res = measure_mask(mask > 0, calibration=cal, image_name=Path(args.mask).name.rsplit(".", 1)[0],
                       specimen_rows=rows, options=_options(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import tifffile

    n = int(res.labels.max())
    tifffile.imwrite(out / "labels.tif", res.labels.astype(np.uint16 if n < 65535 else np.uint32), compression="zlib")
    write_particles_csv(out / "particles.csv", res.particles, res.columns)
    if not cal.calibrated:
        sys.stderr.write("WARNING: no pixel size (file has none, --pixel-size-nm not given): sizes are in PIXELS\n")
    print(f"{len(res.particles)} particles ({len(res.included())} included) -> {out / 'particles.csv'}")
    return 0


def _sample_images(outdir: Path, n: int = 2) -> list[str]:
    from .synth import synthetic_sem, write_zeiss_tiff

    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = outdir / f"sample_{i + 1}.tif"
        if not p.exists():
            img, _ = synthetic_sem(seed=100 + i)
            write_zeiss_tiff(p, img, 2.5)
        paths.append(str(p))
    return paths


def cmd_run(args) -> int:
    from .embedded import start_embedded
    from .rpc import configure_logging, serve_forever

    configure_logging("WARNING" if args.once else "INFO", json_lines=not args.once)
    store = args.store or os.path.join(args.workdir, "store")
    emb = start_embedded(store=store, gateway_port=args.port, metrics_port=args.metrics_port)
    try:
        print(f"semforge embedded: gateway on {emb.gateway_address}, store {store}")
        for name, s in emb.servers.items():
            if name != "gateway":
                print(f"  {name:9s} {s.address}")
        if args.demo or args.once:
            images = _sample_images(Path(args.workdir) / "sample")
            ns = argparse.Namespace(server=emb.gateway_address, out=os.path.join(args.workdir, "report"),
                                    modality="se", pixel_size_nm=None, separate="uecs", databar="auto",
                                    sample="demo sample (synthetic)", quiet=False, wait=60.0)
            _analyze_remote(emb.gateway_address, images, ns)
        if args.once:
            return 0
        print(f"serving; try: semforge client --server {emb.gateway_address} analyze IMAGE --out DIR   (Ctrl-C stops)")
        serve_forever(list(emb.servers.values()))
        return 0
    finally:
        emb.stop(1.0)


def cmd_client(args) -> int:
    from .client import GatewayClient
    from .common.v1 import common_pb2
    from .gateway.v1 import gateway_pb2

    if args.action == "analyze":
        _check_inputs(args.images)
        return _analyze_remote(args.server, args.images, args)
    with GatewayClient(args.server) as c:
        if args.action == "upload":
            _check_inputs(args.images)
            for p in args.images:
                r = c.upload(p)
                print(f"{p}\t{r.image.ref.key}\t{r.image.width}x{r.image.height}\t"
                      f"{r.image.calibration.pixel_size_nm or 'uncalibrated'}")
        elif args.action == "jobs":
            for j in c.stub.ListJobs(gateway_pb2.ListJobsRequest(limit=args.limit)).jobs:
                print(f"{j.job_id}\t{common_pb2.JobState.Name(j.state)}\t{j.images_done}/{j.images_total}\t"
                      f"{j.created_at}\t{j.message}")
        elif args.action == "status":
            j = c.stub.GetJob(gateway_pb2.GetJobRequest(job_id=args.job_id)).job
            print(f"{j.job_id}\t{common_pb2.JobState.Name(j.state)}\t{j.images_done}/{j.images_total}\t{j.message}")
        elif args.action == "cancel":
            j = c.stub.CancelJob(gateway_pb2.CancelJobRequest(job_id=args.job_id)).job
            print(f"{j.job_id}\t{common_pb2.JobState.Name(j.state)}")
        elif args.action == "fetch":
            j = c.stub.GetJob(gateway_pb2.GetJobRequest(job_id=args.job_id)).job
            files = c.download_outputs(j, args.out)
            print(f"{len(files)} file(s) -> {args.out}")
    return 0


def _scene_spec(args):
    import json

    from .scenes import SceneSpec, spec_from_dict

    if args.spec:
        try:
            with open(args.spec) as fh:
                d = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise CliError(f"cannot read scene spec {args.spec}: {exc}") from None
        for key in ("particles", "size_px", "seed", "pixel_size_nm", "frames"):
            v = getattr(args, key.replace("size_px", "size"), None)
            if v is not None:
                d[key] = v
        return spec_from_dict(d)
    def given(v, default):
        return default if v is None else v

    spec = SceneSpec.simple(args.shapes.split(","), size_nm=args.size_nm, sd_nm=args.sd_nm,
                            particles=given(args.particles, 300), size_px=given(args.size, 512),
                            seed=given(args.seed, 0), pixel_size_nm=given(args.pixel_size_nm, 2.0),
                            frames=given(args.frames, 90), cluster=args.cluster)
    if args.lognormal:
        for c in spec.components:
            c.distribution = "lognormal"
    spec.validate()
    return spec


def cmd_render(args) -> int:
    from .scenes import RenderUnavailable, render_batch
    from .storage import LocalStore

    if args.recipe:
        return _render_recipe(args)
    spec = _scene_spec(args)
    out = Path(args.out)
    if args.scenes < 1:
        raise CliError("--scenes must be >= 1")
    store = LocalStore(out)
    t0 = time.perf_counter()

    def progress(done: int, total: int, info: dict) -> None:
        if args.quiet:
            return
        if "resumed" in info:
            if info["resumed"]:
                sys.stderr.write(f"  resuming: {info['resumed']}/{total} scene(s) already rendered\n")
            return
        t = info.get("timings_s", {})
        sys.stderr.write(f"  {done}/{total} scene_{info['index']:05d}: {info['particles']} particles, "
                         f"simulate {t.get('simulate_s', 0):.1f} s, render {t.get('render_s', 0):.1f} s, "
                         f"post {t.get('post_s', 0):.1f} s\n")
        sys.stderr.flush()

    try:
        manifest = render_batch(spec, args.scenes, store, args.dataset, workers=args.workers, progress=progress)
    except RenderUnavailable as exc:
        raise CliError(str(exc), 2) from None
    where = out / "datasets" / args.dataset
    print(f"dataset: {where} ({manifest['scenes']} scene(s), {manifest['rendered_now']} rendered now, "
          f"{time.perf_counter() - t0:.1f} s)")
    return 0


def _render_recipe(args) -> int:
    from .scenes import RenderUnavailable, render_batch
    from .segmentation.recipes import recipe_datasets
    from .storage import LocalStore

    out = Path(args.out)
    store = LocalStore(out)
    t0 = time.perf_counter()
    for name, spec, n in recipe_datasets(args.recipe):
        if not args.quiet:
            sys.stderr.write(f"rendering {name}: {n} scene(s) into {out / 'datasets' / name}\n")
            sys.stderr.flush()
        try:
            manifest = render_batch(spec, n, store, name, workers=args.workers)
        except RenderUnavailable as exc:
            raise CliError(str(exc), 2) from None
        print(f"dataset: {out / 'datasets' / name} ({manifest['scenes']} scene(s), {manifest['rendered_now']} rendered now)")
    print(f"recipe {args.recipe}: done in {time.perf_counter() - t0:.1f} s")
    return 0


def _csv_ints(v: str) -> list[int]:
    try:
        return [int(x) for x in v.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {v!r}") from None


def _train_translator(args) -> int:
    from .translation.train import TranslatorConfig, train_translator

    if not args.data or not args.real:
        raise CliError("train translator needs --data (rendered datasets with height_noisy.tif) and --real DIR")
    for d in list(args.data) + [args.real]:
        if not Path(d).exists():
            raise CliError(f"no such directory: {d}")
    cfg = TranslatorConfig(heightmaps=list(args.data), real=args.real, size=args.patch or 128,
                           ngf=args.ngf, n_blocks=args.blocks, iterations=args.steps, seed=args.seed,
                           checkpoint_every=args.eval_every, snapshot_every=args.snapshot_every,
                           time_budget_s=args.time_budget_s)
    try:
        cfg.validate()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    out = Path(args.out or "out/translators/default")

    def progress(ev: dict) -> None:
        if not args.quiet:
            sys.stderr.write(f"  iteration {ev['iteration']}/{cfg.iterations}: G {ev['g']:.3f} (cycle {ev['cycle']:.3f}, "
                             f"GAN {ev['gan']:.3f}) D {ev['d']:.3f} ({ev['elapsed_s']:.0f} s)\n")
            sys.stderr.flush()

    rec = train_translator(cfg, out, progress=progress)
    print(f"translator: {out / 'generator.pt'} ({rec['iterations_done']} iterations"
          + (f", resumed from {rec['resumed_from']}" if rec["resumed_from"] else "") + ")")
    return 0


def cmd_translate(args) -> int:
    from .translation.apply import find_scenes, translate_scenes
    from .translation.content_check import CheckThresholds
    from .translation.train import load_generator

    try:
        gen, _ = load_generator(args.model)
        scenes = find_scenes(args.scenes)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    th = CheckThresholds(min_foreground_iou=args.min_iou, min_particle_recall=args.min_recall,
                         max_invented_fraction=args.max_invented, separation=args.separation)

    def progress(i: int, n: int, c: dict) -> None:
        if not args.quiet:
            verdict = "accepted" if c["accepted"] else "REJECTED: " + "; ".join(c["reasons"])
            sys.stderr.write(f"  {i}/{n} {c['scene']}: IoU {c['foreground_iou']:.2f}, recall "
                             f"{c['particle_recall']:.2f} - {verdict}\n")

    s = translate_scenes(gen, scenes, args.out, thresholds=th, progress=progress)
    print(f"translated {s['scenes']} scene(s) into {args.out}: {s['accepted']} accepted, "
          f"rejection rate {s['rejection_rate']:.0%} ({Path(args.out) / 'content_check.json'})")
    return 0


def cmd_train(args) -> int:
    if args.what == "translator":
        return _train_translator(args)
    if args.what == "classifier":
        from .classification.train import cli_train

        return cli_train(args)
    if args.what != "segmenter":
        raise CliError(f"'semforge train {args.what}' is not available in this build yet", 2)
    import json

    from .segmentation.model import ModelConfig
    from .segmentation.train import TrainConfig, train_segmenter

    data = list(args.data or [])
    if args.data_store:
        from .segmentation.data import fetch_dataset
        from .storage import open_store

        store = open_store(args.data_store)
        files = (args.image or "se.png", "instances.tif", "scene.json")
        data = [str(fetch_dataset(store, d, Path(args.cache_dir) / "datasets-from-store", files=files)) for d in data]
    if args.recipe:
        from .scenes import RenderUnavailable, render_batch
        from .segmentation.recipes import recipe_datasets
        from .storage import LocalStore

        into = Path(args.render_into)
        store = LocalStore(into)
        for name, spec, n in recipe_datasets(args.recipe):
            if not args.quiet:
                sys.stderr.write(f"rendering {name}: {n} scene(s) into {into / 'datasets' / name}\n")
            try:
                render_batch(spec, n, store, name, workers=args.workers)
            except RenderUnavailable as exc:
                raise CliError(str(exc)) from None
            data.append(str(into / "datasets" / name))
    if not data:
        raise CliError("give training data with --data DIR (rendered datasets or images/ + masks/) or --recipe")
    for d in data:
        if not Path(d).exists():
            raise CliError(f"no such training data directory: {d}")
    if args.val and not Path(args.val).is_dir():
        raise CliError(f"no such validation directory: {args.val}")
    cfg = TrainConfig(data=data, image_file=args.image, modality=args.modality, val=args.val,
                      val_names=args.val_names.split(",") if args.val_names else None,
                      exclude_names=args.exclude_names.split(",") if args.exclude_names else None,
                      model=ModelConfig(args.encoder, len(args.decoder), args.decoder, 2 if args.border else 1),
                      patch=args.patch or 256, batch=args.batch, steps=args.steps, eval_every=args.eval_every, lr=args.lr,
                      gamma=args.gamma if args.gamma is not None else (2.0 if args.modality in ("stem", "tem") else 0.0),
                      seed=args.seed, limit=args.limit, cache_dir=args.cache_dir, time_budget_s=args.time_budget_s)
    try:
        cfg.validate()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    from .inference import MODELS_REPO
    from .inference.triton_repo import install_version, write_model_config

    repo = Path(args.repo or MODELS_REPO)
    model_root = repo / args.name
    versions = [int(p.name) for p in model_root.glob("*") if p.is_dir() and p.name.isdigit()]
    version = args.version or (max(versions, default=0) + 1)
    out = model_root / str(version)

    def progress(ev: dict) -> None:
        if args.quiet:
            return
        val = (f", val F1 {ev['f1']:.3f} IoU {ev['iou']:.3f}" if "f1" in ev else "")
        sys.stderr.write(f"  step {ev['step']}/{cfg.steps}: loss {ev['loss']:.4f}{val} "
                         f"(best at step {ev['best_step']}, {ev['elapsed_s']:.0f} s)\n")
        sys.stderr.flush()

    record = train_segmenter(cfg, out, progress=progress)
    write_model_config(model_root, args.name, classes=cfg.model.classes)
    install_version(model_root)
    best = record["best"]
    print(f"model: {out} ({record['onnx_bytes'] / 1e6:.1f} MB, best at step {best['step']}"
          + (f", validation F1 {best['f1']:.3f}, IoU {best['iou']:.3f}" if "f1" in best else "") + ")")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


def cmd_evaluate(args) -> int:
    import json

    from .inference import create_segmenter
    from .segmentation.evaluate import evaluate_segmenter, format_markdown

    for d in (args.images, args.masks):
        if not Path(d).is_dir():
            raise CliError(f"no such directory: {d}")
    results = []
    for name in args.segmenter.split(","):
        kw = {"url": args.triton_url} if name == "unetpp-triton" and args.triton_url else {}
        seg = create_segmenter(name, **kw)
        for sep in args.separate.split(","):
            r = evaluate_segmenter(seg, args.images, args.masks, modality=args.modality, separate=sep,
                                   names=args.names.split(",") if args.names else None,
                                   progress=None if args.quiet else
                                   (lambda i, n, im: sys.stderr.write(f"  {i}/{n} {im}\n")))
            r["segmenter"] = name
            results.append(r)
    print(format_markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def cmd_unavailable(args) -> int:
    raise CliError(f"'semforge {args.command}' is not available in this build yet "
                   f"({args.why}); see the project's issues", 2)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semforge", description="Particle size and shape statistics from electron micrographs.")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("analyze", help="analyse micrographs of one sample into a report")
    a.add_argument("images", nargs="+", metavar="IMAGE")
    a.add_argument("--out", required=True, help="output directory")
    _add_analysis_opts(a)
    a.add_argument("--segmenter", default=None, help="in process: unetpp (shipped UNet++, default), classical "
                   "(Otsu) or unetpp-triton (TRITON_URL)")
    a.add_argument("--server", help="gateway address HOST:PORT (default: analyse in process)")
    a.add_argument("--sample", default="sample", help="sample name for the report title")
    a.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the server to be ready")
    a.add_argument("--quiet", action="store_true")
    a.set_defaults(func=cmd_analyze)

    m = sub.add_parser("measure", help="separation + morphometry on an existing binary mask")
    m.add_argument("--mask", required=True)
    m.add_argument("--out", required=True)
    _add_analysis_opts(m)
    m.set_defaults(func=cmd_measure)

    r = sub.add_parser("run", help="start every service locally (embedded default) and keep them up")
    r.add_argument("--port", type=int, default=50051, help="gateway port (default 50051; 0 = any free port)")
    r.add_argument("--metrics-port", type=int, default=0, help="Prometheus metrics port (0 = off)")
    r.add_argument("--workdir", default="out", help="where the store, sample and demo report go (default out/)")
    r.add_argument("--store", help="object store URL or directory (default WORKDIR/store)")
    r.add_argument("--demo", action="store_true", help="analyse the shipped sample images through the gateway")
    r.add_argument("--once", action="store_true", help="with the demo: exit when the report is written")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("client", help="instrument-PC client of a running gateway")
    c.add_argument("--server", default="127.0.0.1:50051")
    csub = c.add_subparsers(dest="action", required=True)
    ca = csub.add_parser("analyze", help="upload, analyse with progress, fetch the report")
    ca.add_argument("images", nargs="+", metavar="IMAGE")
    ca.add_argument("--out", required=True)
    _add_analysis_opts(ca)
    ca.add_argument("--sample", default="sample")
    ca.add_argument("--wait", type=float, default=30.0)
    ca.add_argument("--quiet", action="store_true")
    cu = csub.add_parser("upload", help="upload images (content addressed)")
    cu.add_argument("images", nargs="+", metavar="IMAGE")
    cj = csub.add_parser("jobs", help="list jobs")
    cj.add_argument("--limit", type=int, default=20)
    for name in ("status", "cancel"):
        x = csub.add_parser(name, help=f"{name} of a job")
        x.add_argument("job_id")
    cf = csub.add_parser("fetch", help="download a job's report")
    cf.add_argument("job_id")
    cf.add_argument("--out", required=True)
    c.set_defaults(func=cmd_client)

    rd = sub.add_parser("render", help="Blender scenes of dropped particles (training data without annotation)")
    rd.add_argument("--out", required=True, help="output directory; scenes go to OUT/datasets/DATASET/scene_NNNNN/")
    rd.add_argument("--dataset", default="render", help="dataset name (default render)")
    rd.add_argument("--scenes", type=int, default=1, help="number of scenes (default 1)")
    rd.add_argument("--particles", type=int, default=None, help="particles per scene (default 300)")
    rd.add_argument("--size", type=int, default=None, help="image size in pixels (square; default 512)")
    rd.add_argument("--seed", type=int, default=None, help="base seed (scene i gets its own derived seed)")
    rd.add_argument("--shapes", default="sphere", help="comma-separated shapes, equal mixture (default sphere); "
                    "sphere, indented_sphere, short_rod, long_rod, cube, hexagonal_plate, trigonal_plate, disc, "
                    "tetrahedron, octahedron, icosahedron, pentagonal_bipyramid")
    rd.add_argument("--size-nm", type=_positive, default=40.0, help="mean particle size in nm (default 40)")
    rd.add_argument("--sd-nm", type=float, default=4.0, help="size standard deviation in nm (default 4)")
    rd.add_argument("--lognormal", action="store_true", help="log-normal instead of normal sizes")
    rd.add_argument("--cluster", type=float, default=0.0,
                    help="share 0..1 of particles dropped beside an earlier one: agglomerates (default 0)")
    rd.add_argument("--pixel-size-nm", type=_positive, default=None, help="pixel size in nm (default 2)")
    rd.add_argument("--frames", type=int, default=None, help="rigid-body frames to simulate (default 90)")
    rd.add_argument("--spec", help="scene spec JSON (mixtures with per-shape size distributions); "
                    "--particles/--size/--seed/--pixel-size-nm/--frames override it")
    rd.add_argument("--workers", type=int, default=None, help="Blender worker processes (default: one per core)")
    rd.add_argument("--recipe", choices=["se", "transmission", "se-rods", "tiny"],
                    help="render every dataset of a training-data recipe (OUT/datasets/<recipe dataset>/; resumable)")
    rd.add_argument("--quiet", action="store_true")
    rd.set_defaults(func=cmd_render)

    t = sub.add_parser("train", help="train a model (segmenter) into the Triton model repository")
    t.add_argument("what", choices=["segmenter", "translator", "classifier"],
                   help="segmenter (UNet++), translator (CycleGAN), classifier (shape CNN, docs/classification.md)")
    t.add_argument("--data", nargs="+", help="rendered dataset roots (scene_*/) or folders with images/ + masks/")
    t.add_argument("--data-store", help="object store (directory or s3://bucket) holding the --data prefixes "
                   "(e.g. --data datasets/se-tio2-n80); they are fetched into --cache-dir")
    t.add_argument("--recipe", choices=["se", "transmission", "se-rods", "tiny"],
                   help="render the recipe's scenes first (resumable) and train on them")
    t.add_argument("--render-into", default="out/training-data", help="where --recipe renders (default out/training-data)")
    t.add_argument("--workers", type=int, default=None, help="Blender workers for --recipe (default: one per core)")
    t.add_argument("--image", default="se.png", help="image to learn from: se.png, transmission.png (rendered) or translated.png (semforge translate)")
    t.add_argument("--modality", choices=["se", "him", "stem", "tem"], default="se")
    t.add_argument("--val", help="folder with images/ + masks/ for validation and model selection")
    t.add_argument("--val-names", help="comma-separated image stems of --val to use (default all)")
    t.add_argument("--exclude-names", help="comma-separated image stems never to train on (annotated-pair data)")
    t.add_argument("--name", default="semforge_unetpp_se", help="model name in the repository")
    t.add_argument("--version", type=int, default=None, help="version folder (default: next)")
    t.add_argument("--repo", help="model repository (default models_repo/)")
    t.add_argument("--encoder", default="mobilenet_v2")
    t.add_argument("--decoder", type=_csv_ints, default=[32, 16, 8, 8], help="decoder channels, one per encoder stage")
    t.add_argument("--no-border", dest="border", action="store_false", help="particle channel only")
    t.add_argument("--patch", type=int, default=None,
                   help="training crop in px (default: segmenter 256, translator 128)")
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--steps", type=int, default=600)
    t.add_argument("--eval-every", type=int, default=100)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--gamma", type=float, default=None, help="intensity term of the weight map (default 0 SE, 2 STEM/TEM)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--limit", type=int, default=None, help="at most this many training images")
    t.add_argument("--cache-dir", default="out/cache/weights", help="weight-map cache")
    t.add_argument("--time-budget-s", type=float, default=None, help="stop at the first evaluation after this")
    t.add_argument("--json", help="also write the training record here")
    t.add_argument("--real", help="translator: folder of unlabeled real images of the target instrument")
    t.add_argument("--out", help="translator: output folder (default out/translators/default; resumes if present)")
    t.add_argument("--ngf", type=int, default=32, help="translator: generator width (default 32)")
    t.add_argument("--blocks", type=int, default=6, help="translator: residual blocks (default 6)")
    t.add_argument("--snapshot-every", type=int, default=0,
                   help="translator: also keep the generator every N iterations under OUT/snapshots (default: never)")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    tr = sub.add_parser("translate", help="CycleGAN: rendered height maps -> SEM-like images, content-checked")
    tr.add_argument("scenes", nargs="+", metavar="SCENE_OR_DATASET", help="rendered scene folders or dataset roots")
    tr.add_argument("--out", required=True, help="accepted scenes as a training dataset, rejected ones under rejected/")
    tr.add_argument("--model", default="out/translators/default", help="translator folder or generator.pt")
    tr.add_argument("--min-iou", type=float, default=0.7, help="reject below this foreground IoU (default 0.7)")
    tr.add_argument("--min-recall", type=float, default=0.85, help="reject below this particle recall (default 0.85)")
    tr.add_argument("--max-invented", type=float, default=0.1,
                    help="reject above this invented foreground / particle area (default 0.1)")
    tr.add_argument("--separation", choices=["watershed", "uecs", "none"], default="watershed",
                    help="how touching particles are cut before split/merged are counted (default watershed)")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=cmd_translate)

    e = sub.add_parser("evaluate", help="segmenter + separation against annotated images")
    e.add_argument("--images", required=True)
    e.add_argument("--masks", required=True)
    e.add_argument("--segmenter", default="unetpp", help="comma-separated: unetpp, classical, unetpp-triton")
    e.add_argument("--triton-url", help="Triton gRPC address for unetpp-triton (default $TRITON_URL)")
    e.add_argument("--modality", choices=["se", "him", "stem", "tem"], default="se")
    e.add_argument("--separate", default="uecs", help="comma-separated separations: uecs, watershed, none")
    e.add_argument("--names", help="comma-separated image stems (default all)")
    e.add_argument("--json", help="write the full figures (per image too) here")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    for name, why in _NOT_YET.items():
        x = sub.add_parser(name, help=f"(not available yet: {why})")
        x.add_argument("rest", nargs=argparse.REMAINDER)
        x.set_defaults(func=cmd_unavailable, why=why)
    return p


_NOT_YET: dict[str, str] = {}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in _NOT_YET and not {"-h", "--help"} & set(argv):
        print(f"semforge: error: 'semforge {argv[0]}' is not available in this build yet ({_NOT_YET[argv[0]]})",
              file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"semforge: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("semforge: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        if os.environ.get("SEMFORGE_DEBUG"):
            raise
        import grpc

        from .analysis import ImageDecodeError

        if isinstance(exc, grpc.RpcError):
            code = exc.code()
            rc = 3 if code == grpc.StatusCode.UNAVAILABLE else (2 if code in (
                grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED) else 1)
            print(f"semforge: error: {code.name}: {exc.details()}", file=sys.stderr)
            return rc
        if isinstance(exc, (ImageDecodeError, ValueError, FileNotFoundError, PermissionError)):
            print(f"semforge: error: {exc}", file=sys.stderr)
            return 2
        print(f"semforge: error: {type(exc).__name__}: {exc} (SEMFORGE_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
