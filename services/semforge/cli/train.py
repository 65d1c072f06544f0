"""``semforge train``: a segmenter (UNet++ into the model repository) or a translator (CycleGAN);
``train classifier`` lives in :mod:`semforge.cli.train_classifier`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..modality import Modality
from ._common import MODALITY_CHOICES, CliError


def csv_ints(v: str) -> list[int]:
    try:
        return [int(x) for x in v.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {v!r}") from None


def register(sub) -> None:
    t = sub.add_parser("train", help="train a model (segmenter) into the Triton model repository")
    t.add_argument("what", choices=["segmenter", "translator", "classifier"],
                   help="segmenter (UNet++), translator (CycleGAN), classifier (shape CNN, docs/classification.md)")
    t.add_argument("--data", nargs="+", help="rendered dataset roots (scene_*/) or folders with images/ + masks/")
    t.add_argument("--data-store", help="object store (directory or s3://bucket) holding the --data prefixes "
                   "(e.g. --data datasets/se-tio2-n80); they are fetched into --cache-dir")
    t.add_argument("--recipe", choices=["se", "se-grains", "se-piles", "transmission", "se-rods", "tiny"],
                   help="render the recipe's scenes first (resumable) and train on them")
    t.add_argument("--render-into", default="out/training-data", help="where --recipe renders (default out/training-data)")
    t.add_argument("--workers", type=int, default=None, help="Blender workers for --recipe (default: one per core)")
    t.add_argument("--image", default="se.png", help="image to learn from: se.png, transmission.png (rendered) or translated.png (semforge translate)")
    t.add_argument("--modality", choices=MODALITY_CHOICES, default="se")
    t.add_argument("--val", help="folder with images/ + masks/ for validation and model selection")
    t.add_argument("--val-names", help="comma-separated image stems of --val to use (default all)")
    t.add_argument("--exclude-names", help="comma-separated image stems never to train on (annotated-pair data)")
    t.add_argument("--name", default="semforge_unetpp_se", help="model name in the repository")
    t.add_argument("--version", type=int, default=None, help="version folder (default: next)")
    t.add_argument("--repo", help="model repository (default models_repo/)")
    t.add_argument("--encoder", default="mobilenet_v2")
    t.add_argument("--decoder", type=csv_ints, default=[32, 16, 8, 8], help="decoder channels, one per encoder stage")
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
    t.add_argument("--threads", type=int, default=0,
                   help="segmenter: CPU threads for PyTorch (default 0: all cores; 1 per job when jobs share a machine)")
    t.add_argument("--json", help="also write the training record here")
    t.add_argument("--real", help="translator: folder of unlabeled real images of the target instrument")
    t.add_argument("--out", help="translator: output folder (default out/translators/default; resumes if present)")
    t.add_argument("--ngf", type=int, default=32, help="translator: generator width (default 32)")
    t.add_argument("--blocks", type=int, default=6, help="translator: residual blocks (default 6)")
    t.add_argument("--snapshot-every", type=int, default=0,
                   help="translator: also keep the generator every N iterations under OUT/snapshots (default: never)")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.what == "classifier":
        from . import train_classifier

        return train_classifier.run(args)
    if args.what == "translator":
        return _train_translator(args)
    return _train_segmenter(args)


def _train_translator(args) -> int:
    from ..training.translation.train import TranslatorConfig, train_translator

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


def _train_segmenter(args: argparse.Namespace) -> int:
    import json

    from ..training.segmentation.model import ModelConfig
    from ..training.segmentation.train import TrainConfig, train_segmenter

    data = list(args.data or [])
    if args.data_store:
        from ..training.segmentation.data import fetch_dataset
        from ..storage import open_store

        store = open_store(args.data_store)
        files = (args.image or "se.png", "instances.tif", "scene.json")
        data = [str(fetch_dataset(store, d, Path(args.cache_dir) / "datasets-from-store", files=files)) for d in data]
    if args.recipe:
        from ..training.scenes import RenderUnavailable, render_batch
        from ..training.segmentation.recipes import recipe_datasets
        from ..storage import LocalStore

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
                      gamma=args.gamma if args.gamma is not None else (2.0 if Modality.parse(args.modality).dark_particles else 0.0),
                      seed=args.seed, limit=args.limit, cache_dir=args.cache_dir, time_budget_s=args.time_budget_s,
                      threads=args.threads)
    try:
        cfg.validate()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    from ..inference import MODELS_REPO
    from ..inference.triton_repo import install_version, write_model_config

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
