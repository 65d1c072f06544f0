"""Adaptation of a shipped segmenter to an instrument from its unlabeled images (``semforge adapt``).

Route: self-training on confident pseudo-labels. The base model (the shipped UNet++ of the
modality, an ONNX file) segments every unlabeled image; its instances (threshold, separation as
the analysis runs them) become targets in the training convention (foreground with the gaps
between touching particles cut out; border channel = the gaps and the narrow lines between
particles). Pixels where the base model is unsure (particle probability between ``low`` and
``high``) carry no loss. The network is rebuilt in PyTorch from the ONNX file itself (batch norm
is folded into the convolutions at export, so the rebuilt network has none), fine-tuned on
augmented crops of the real images and exported as a new model version with its record
(``training.json``: base model, images, config, seed, curve).

Other routes, by option: rendered scenes with their exact labels beside the pseudo-labels
(``renders``, ``render_share``), or alone (``render_share`` 1), their crops optionally restyled toward
crops of the real images (``render_style``: histogram or Fourier amplitude matching, :mod:`.style`).

No human mask is read here: the images are used unlabeled.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .data import jitter_intensity

__all__ = ["AdaptConfig", "adapt_segmenter", "torch_from_onnx", "pseudo_labels", "instance_targets"]


@dataclass
class AdaptConfig:
    images: list[str] = field(default_factory=list)  # image files (unlabeled)
    modality: str = "se"
    base: str = ""  # model version folder (models_repo/<name>/<version>) to start from; "" = shipped
    steps: int = 300
    batch: int = 4
    patch: int = 256
    lr: float = 3e-4
    weight_decay: float = 1e-4
    low: float = 0.2  # particle probability below: confident background
    high: float = 0.8  # above: confident particle
    threshold: float = 0.5
    separate: str = "watershed"
    watershed_h: float = 0.5
    offset_px: int = 0  # pseudo-label outlines grown (+1) / shrunk (-1) by a pixel (the CV-chosen correction)
    min_contrast: float = 0.0  # pseudo-label instances with less contrast to their ring are dropped (spurious)
    refine_px: int = 0  # pseudo-label outlines re-decided on the gray image within this band (0: off; the analysis' refinement)
    teacher_flips: int = 1  # pseudo-labels from the base model's mean output over this many mirrored inputs (1: plain)
    border_weight: float = 5.0  # loss weight of the border pixels between touching particles (border channel)
    freeze_encoder: bool = True  # fine-tune the decoder only (about half the CPU time per step)
    reference_masks: str = ""  # REFERENCE ONLY, never shipped: learn the human masks of this folder instead
    renders: list[str] = field(default_factory=list)  # rendered dataset roots (scene_*/) learned beside the images
    render_share: float = 0.0  # share of each batch drawn from the renders (exact labels); 0 = self-training only,
    # 1 = renders only (no pseudo-labels; the images serve as appearance references when render_style is set)
    render_image: str = "se.png"  # the rendered image the network sees (se.png / transmission.png)
    render_style: str = "none"  # rendered crops restyled toward a random crop of the images: none / histogram / fourier
    style_beta: float = 0.02  # fourier: half-width of the low-frequency square taken from the image, x crop size
    style_candidates: int = 8  # reference crops drawn per rendered crop; the one closest in particle share is used
    seed: int = 0
    threads: int = 1

    def validate(self) -> None:
        from ...errors import UserInputError

        if not self.images:
            raise UserInputError("no images to adapt to")
        if self.modality not in ("se", "him", "stem", "tem"):
            raise UserInputError(f"unknown modality {self.modality!r}; use se, him, stem or tem")
        if not 0 <= self.low < self.threshold < self.high <= 1:
            raise UserInputError("need 0 <= low < threshold < high <= 1")
        if self.refine_px < 0:
            raise UserInputError("refine_px must be >= 0")
        if not self.border_weight > 0:
            raise UserInputError(f"border_weight must be > 0, got {self.border_weight}")
        from ...inference.tta import FLIPS

        if self.teacher_flips not in FLIPS:
            raise UserInputError(f"teacher_flips must be one of {', '.join(map(str, FLIPS))}, got {self.teacher_flips}")
        from .style import STYLES

        if not 0 <= self.render_share <= 1:
            raise UserInputError(f"render_share must be in [0, 1], got {self.render_share}")
        if self.render_share > 0 and not self.renders:
            raise UserInputError("render_share > 0 needs rendered datasets (--renders)")
        if self.render_style not in STYLES:
            raise UserInputError(f"unknown render style {self.render_style!r}; use {', '.join(STYLES)}")
        if self.render_style != "none" and not self.renders:
            raise UserInputError(f"render style {self.render_style!r} needs rendered datasets (--renders)")
        if not 0 < self.style_beta < 0.5:
            raise UserInputError(f"style_beta must be in (0, 0.5), got {self.style_beta}")
        if self.style_candidates < 1:
            raise UserInputError(f"style_candidates must be >= 1, got {self.style_candidates}")
        if self.render_share == 1 and self.reference_masks:
            raise UserInputError("--render-share 1 (renders only) reads no labels of the images: "
                                 "it excludes --reference-masks")
        if self.renders and self.render_share < 1 and not 1 <= self.render_crops() <= self.batch - 1:
            raise UserInputError(f"--render-share {self.render_share:g} with --batch {self.batch} gives "
                                 f"{self.render_crops()} rendered crop(s) per batch of {self.batch}: choose a batch and "
                                 "share that leave at least one crop of the images and one of the renders "
                                 "(or --render-share 1: renders only)")
        if self.steps < 1 or self.batch < 1 or self.patch % 32 or self.patch < 64:
            raise UserInputError("steps and batch must be >= 1, patch a multiple of 32 and >= 64")

    def render_crops(self) -> int:
        """Crops of each batch drawn from the renders (the rest from the images)."""
        return int(math.floor(self.batch * self.render_share + 0.5)) if self.renders else 0

    @property
    def renders_only(self) -> bool:
        return bool(self.renders) and self.render_share == 1

    @property
    def dark(self) -> bool:
        return self.modality in ("stem", "tem")


def torch_from_onnx(onnx_path: str | os.PathLike, model_cfg) -> "torch.nn.Module":  # noqa: F821
    """The UNet++ of ``model_cfg`` with the weights of an exported ONNX file (batch norm folded away).

    The exporter folds each BatchNorm into the convolution before it; here every BatchNorm is
    replaced by an identity and its convolution takes the folded weight and bias. Convolutions
    are paired with the ONNX Conv nodes in execution order, by shape and module name.
    """
    import onnx
    import torch
    from onnx import numpy_helper
    from torch import nn

    from .model import build_model

    net = build_model(model_cfg).eval()
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod)) for m in net.modules()
             if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    with torch.no_grad():
        net(torch.zeros(1, 1, 64, 64))
    for h in hooks:
        h.remove()
    g = onnx.load(str(onnx_path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    convs = [n for n in g.node if n.op_type == "Conv"]
    names = {m: n for n, m in net.named_modules()}
    tconvs = [m for m in order if isinstance(m, nn.Conv2d)]
    # the exporter drops convolutions whose output is unused (encoder stages beyond the depth):
    # pair each ONNX Conv with the next executed convolution of the same shape and module name
    folded_bn, j = set(), 0
    for k, node in enumerate(convs):
        w = inits[node.input[1]]
        leaf = node.name.rsplit("/", 2)[-2] if "/" in node.name else ""
        while j < len(tconvs) and (tuple(w.shape) != tuple(tconvs[j].weight.shape)
                                   or not names[tconvs[j]].endswith(leaf)):
            j += 1
        if j == len(tconvs):
            raise ValueError(f"{onnx_path}: convolution {k} ({node.name}, {w.shape}) has no match in the model config")
        conv = tconvs[j]
        j += 1
        conv.weight.data = torch.from_numpy(w.copy())
        b = inits[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0], np.float32)
        conv.bias = nn.Parameter(torch.from_numpy(np.array(b, np.float32)))
        i = order.index(conv)
        if i + 1 < len(order) and isinstance(order[i + 1], nn.BatchNorm2d):
            folded_bn.add(id(order[i + 1]))
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in folded_bn:
                setattr(parent, name, nn.Identity())
    return net


def pseudo_labels(probs: np.ndarray, cfg: AdaptConfig, pixel_size_nm: float | None = None,
                  gray: np.ndarray | None = None):
    """Targets ``(2, H, W)`` (foreground with gaps, border) and a pixel weight (0 = unsure) from probabilities.

    The instances are those of the harness' post-processing (:mod:`.crossval`) with the config's
    threshold, separation, offset and contrast filter, then (``refine_px`` > 0) the analysis' boundary
    refinement on the gray image (:func:`semforge.analysis._refine.refine_boundaries`); ``gray`` is
    the image as shown (for the filter and the refinement).
    """
    from .crossval import PostParams, instances_from_probabilities
    from .data import narrow_gaps, touching_gaps

    post = PostParams(threshold=cfg.threshold, separate=cfg.separate, h=cfg.watershed_h, offset_px=cfg.offset_px,
                      min_contrast=cfg.min_contrast)
    inst = instances_from_probabilities(probs, post, gray=gray, dark=cfg.dark, pixel_size_nm=pixel_size_nm)
    if cfg.refine_px:
        from ...analysis._refine import refine_boundaries

        if gray is None:
            raise ValueError("refine_px needs the gray image")
        inst = refine_boundaries(inst, gray[: inst.shape[0], : inst.shape[1]], dark=cfg.dark, band_px=cfg.refine_px)
    gaps = touching_gaps(inst)
    fg = (inst > 0) & ~gaps
    border = gaps | narrow_gaps(inst)
    sure = (probs[0] >= cfg.high) | (probs[0] <= cfg.low)
    if cfg.offset_px or cfg.min_contrast or cfg.refine_px:  # the corrected outlines / dropped objects are meant to be learned
        sure |= (inst > 0) != (probs[0] >= 0.5)
    # a predicted particle's own uncertain rim stays unweighted; cut lines are always learned
    weight = (sure | border).astype(np.float32)
    return np.stack([fg, border]).astype(np.float32), weight


def _human_targets(masks: Path, stem: str, rows: int):
    """Targets from a human mask (the real-trained reference; never for a shipped model)."""
    import tifffile
    from skimage.measure import label

    m = tifffile.imread(masks / f"{stem}_m.tif")
    m = m.max(axis=-1) if m.ndim == 3 else m
    return instance_targets(label(m[:rows] > 0, connectivity=1).astype(np.int32))


def instance_targets(inst: np.ndarray):
    """Targets ``(2, H, W)`` (foreground with the gaps between touching particles cut out; border = the gaps
    and the narrow lines between particles) and a weight of ones, from exact instance labels."""
    from .data import narrow_gaps, touching_gaps

    gaps = touching_gaps(inst)
    y = np.stack([(inst > 0) & ~gaps, gaps | narrow_gaps(inst)]).astype(np.float32)
    return y, np.ones(inst.shape, np.float32)


def _crop(rng, im, patch):
    h, wd = im.shape
    y0, x0 = int(rng.integers(h - patch + 1)), int(rng.integers(wd - patch + 1))
    return slice(y0, y0 + patch), slice(x0, x0 + patch)


def _augment(rng, im, y, w, patch, style=None):
    """A random crop, flip and rotation of (image, targets, weights), ``style`` ((image crop, target crop) -> image
    crop, for renders: :func:`_styler`) applied to the image crop, then the intensity jitter."""
    sl = _crop(rng, im, patch)
    im, y, w = im[sl], y[:, sl[0], sl[1]], w[sl]
    if style is not None:
        im = style(im, y)
    if rng.random() < 0.5:
        im, y, w = im[:, ::-1], y[:, :, ::-1], w[:, ::-1]
    k = int(rng.integers(4))
    im, y, w = np.rot90(im, k), np.rot90(y, k, axes=(1, 2)), np.rot90(w, k)
    im = jitter_intensity(im, rng, gamma=0.3, contrast=(0.75, 1.3), offset=0.08, blur=(0.3, 1.0), noise_p=0.5,
                          noise_sd=0.04)
    return (np.ascontiguousarray(im, np.float32), np.ascontiguousarray(y, np.float32),
            np.ascontiguousarray(w, np.float32))


def _styler(cfg: AdaptConfig, rng, images: list, particle: list):
    """The restyling of a rendered crop (``cfg.render_style``; None for ``none``), ``(crop, targets) -> crop``.

    The real images differ from the renders in particle density (the shared SEM fields hold 2-20 % particles),
    so neither style may carry the density: ``histogram`` maps the render's particles (its exact labels:
    foreground or border) to the gray values of a random image's particles (by the base model) and its
    background to that image's background; ``fourier`` takes the low-frequency amplitude of a crop of the
    images of about the render crop's particle share (the closest of ``style_candidates`` random crops) and
    keeps the render's own mean.
    """
    from .style import class_quantiles, fourier_style, match_histogram_by_class

    if cfg.render_style == "none":
        return None
    if cfg.render_style == "histogram":
        refs = [class_quantiles(x, m > 0) for x, m in zip(images, particle)]

        def style(crop, y):
            fg = (y[0] > 0.5) | (y[1] > 0.5)
            return match_histogram_by_class(crop, fg, *refs[int(rng.integers(len(refs)))])
        return style

    def style(crop, y):
        share, best = float((y[0] > 0.5).mean()), None
        for _ in range(cfg.style_candidates):
            i = int(rng.integers(len(images)))
            sl = _crop(rng, images[i], crop.shape[0])
            gap = abs(float(particle[i][sl].mean()) - share)
            if best is None or gap < best[0]:
                best = (gap, images[i][sl])
        return fourier_style(crop, best[1], cfg.style_beta, keep_mean=True)
    return style


def adapt_segmenter(cfg: AdaptConfig, out_dir: str | os.PathLike, *,
                    progress: Callable[[dict], None] | None = None) -> dict:
    """Self-train from ``cfg.base`` on ``cfg.images``; write ``out_dir/model.onnx`` + ``training.json``."""
    import torch
    import torch.nn.functional as F

    from ...analysis import detect_databar, load_image, to_gray_float
    from ...errors import UserInputError
    from ...inference import SHIPPED, OnnxSegmenter, model_dir
    from ...inference.tta import flip_mean
    from .model import ModelConfig, export_onnx, normalize

    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    base = Path(cfg.base) if cfg.base else model_dir(SHIPPED[cfg.modality])
    meta = json.loads((base / "training.json").read_text())
    if meta.get("outputs") != ["particle", "border"]:
        raise UserInputError(f"{base}: adaptation needs a particle + border model, got outputs {meta.get('outputs')}")
    mcfg = ModelConfig(**meta["config"]["model"])
    seg = OnnxSegmenter(base.parent.name, version=int(base.name), repo=base.parent.parent, threads=cfg.threads)
    # the renders first: a bad dataset is reported before the pseudo-labels are made
    rendered = []
    if cfg.renders and cfg.render_share > 0:
        from .data import load_pairs

        for root in cfg.renders:
            for pair in load_pairs(root, image_file=cfg.render_image):
                y, w = instance_targets(pair.instances)
                x = 1 - pair.image if cfg.dark else pair.image
                if min(x.shape) < cfg.patch:
                    raise UserInputError(f"{root}/{pair.name}: render smaller than the training crop ({cfg.patch} px)")
                rendered.append((x.astype(np.float32), y, w))
    n_rendered = cfg.render_crops()
    data = []
    particle_share = []  # per image: the base model's particle pixels (p >= threshold), for density-matched styles
    for p in cfg.images:
        img = load_image(p)
        rows = detect_databar(img.pixels)
        gray = to_gray_float(img.pixels)[:rows].astype(np.float32)
        probs = (flip_mean(seg.predict_channels, gray, cfg.teacher_flips)
                 if not cfg.reference_masks or cfg.render_style != "none" else None)
        if cfg.renders_only:  # the image is an appearance reference only: no labels of it are made
            y, w = None, None
        elif cfg.reference_masks:
            y, w = _human_targets(Path(cfg.reference_masks), Path(p).stem, rows)
        else:
            y, w = pseudo_labels(probs, cfg, img.calibration.pixel_size_nm, gray)
        if cfg.render_style != "none":
            particle_share.append((probs[0] >= cfg.threshold).astype(np.float32)[: gray.shape[0] if y is None
                                                                                  else y.shape[1]])
        x = (1 - gray if cfg.dark else gray)[: gray.shape[0] if y is None else y.shape[1]]  # dark particles inverted
        if min(x.shape) < cfg.patch:
            raise UserInputError(f"{p}: image smaller than the training crop ({cfg.patch} px)")
        data.append((x, y, w))
    t_data = time.perf_counter() - t0
    net = torch_from_onnx(base / "model.onnx", mcfg)
    net.train()
    if cfg.freeze_encoder:
        for prm in net.encoder.parameters():
            prm.requires_grad_(False)
    opt = torch.optim.AdamW([q for q in net.parameters() if q.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
    style = _styler(cfg, rng, [d[0] for d in data], particle_share)

    def draw(b):
        # the first batch - n_rendered crops from the real images, the rest from renders (same draws as
        # before when there are no renders)
        if b < cfg.batch - n_rendered:
            return _augment(rng, *data[int(rng.integers(len(data)))], cfg.patch)
        return _augment(rng, *rendered[int(rng.integers(len(rendered)))], cfg.patch, style)

    curve = []
    for step in range(1, cfg.steps + 1):
        xs, ys, ws = zip(*(draw(b) for b in range(cfg.batch)))
        x = torch.from_numpy(normalize(np.stack(xs)[:, None]))
        y, w = torch.from_numpy(np.stack(ys)), torch.from_numpy(np.stack(ws))
        logits = net(x)
        l_fg = (F.binary_cross_entropy_with_logits(logits[:, 0], y[:, 0], reduction="none") * w).sum() / w.sum().clamp(min=1)
        bw = w * (1 + (cfg.border_weight - 1) * y[:, 1])
        l_b = (F.binary_cross_entropy_with_logits(logits[:, 1], y[:, 1], reduction="none") * bw).sum() / bw.sum().clamp(min=1)
        loss = l_fg + l_b
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        curve.append({"step": step, "loss": round(loss.item(), 5)})
        if progress and (step % 20 == 0 or step == cfg.steps):
            progress({"step": step, "loss": float(np.mean([c["loss"] for c in curve[-20:]])),
                      "elapsed_s": round(time.perf_counter() - t0, 1)})
    net.eval()
    export_onnx(net, out / "model.onnx")
    record = json.loads(json.dumps(meta))
    record.setdefault("input", {})["normalization_in_graph"] = False  # exported plain; baked below
    record.update({
        "adaptation": {"route": _route(cfg), "base": str(base),
                       "base_record": meta.get("config"), "images": [str(p) for p in cfg.images],
                       "config": asdict(cfg), "curve": curve[:: max(1, len(curve) // 200)],
                       "seconds": {"pseudo_labels": round(t_data, 1),
                                   "train": round(time.perf_counter() - t0 - t_data, 1)},
                       "machine": f"{platform.machine()}, torch {torch.__version__}, {cfg.threads} threads",
                       "human_masks_used": bool(cfg.reference_masks),
                       "rendered_scenes": len(rendered), "render_crops_per_batch": n_rendered},
        "onnx_bytes": (out / "model.onnx").stat().st_size,
    })
    (out / "training.json").write_text(json.dumps(record, indent=1))
    from ...inference.onnx_graph import bake_normalization

    bake_normalization(out)  # the served file takes the plain gray image, as every shipped model
    record = json.loads((out / "training.json").read_text())
    record["onnx_bytes"] = (out / "model.onnx").stat().st_size
    (out / "training.json").write_text(json.dumps(record, indent=1))
    return record


def _route(cfg: AdaptConfig) -> str:
    look = {"none": "", "histogram": ", restyled to the images by histogram matching",
            "fourier": ", restyled to the images by Fourier amplitude matching"}[cfg.render_style]
    teacher = f" (teacher: mean over {cfg.teacher_flips} flips)" if cfg.teacher_flips > 1 else ""
    if cfg.renders_only:
        return f"fine-tuning on renders only{look}"
    if cfg.renders and cfg.render_share > 0:
        return f"self-training on confident pseudo-labels{teacher} beside renders{look}"
    return f"self-training on confident pseudo-labels{teacher}"


IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".dm3", ".dm4")


def _next_version(folder: Path) -> int:
    vs = [int(p.name) for p in folder.glob("*") if p.is_dir() and p.name.isdigit()] if folder.is_dir() else []
    return max(vs, default=0) + 1


def adapt_command(images: str, modality: str, out: str, *, folds: int = 0, base: str = "", steps: int = 600,
                  batch: int = 4, patch: int = 192, seed: int = 0, threads: int = 1, freeze_encoder: bool = True,
                  pseudo: dict | None = None, reference_masks: str = "", renders: list[str] | None = None,
                  render_share: float = 0.0, render_image: str = "se.png", render_style: str = "none",
                  style_beta: float = 0.02, border_weight: float = 5.0,
                  progress: Callable[[str], None] | None = None) -> dict:
    """``semforge adapt``: new version(s) of the model folder ``out`` adapted to the images of ``images``.

    ``folds`` = 0: one version from all images. ``folds`` = k >= 2: k versions, version i trained on
    every image outside fold i (contiguous blocks of the sorted names), and ``out/folds.json`` saying
    which images each version saw -- so that each image can be scored by a version that never saw it.
    ``renders`` / ``render_share``: rendered datasets whose exact labels fill that share of every batch
    beside the pseudo-labelled real images (e.g. the ``se-grains`` recipe: separations of small touching grains);
    ``render_share`` 1: renders only, no pseudo-labels. ``render_style``: rendered crops restyled toward random crops
    of the images (``histogram`` / ``fourier``, :mod:`.style`): the appearance-matching route.
    """
    import shutil

    from ...errors import UserInputError
    from ...inference import SHIPPED, model_dir

    src = Path(images)
    if not src.is_dir():
        raise FileNotFoundError(f"no image folder {src}")
    paths = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {src}")
    if folds == 1 or folds < 0 or folds > len(paths):
        raise UserInputError(f"--folds must be 0 or 2..{len(paths)}, got {folds}", field="folds")
    base_dir = Path(base) if base else model_dir(SHIPPED[modality]) if modality in SHIPPED else None
    if base_dir is None:
        raise UserInputError(f"unknown modality {modality!r}; use se, him, stem or tem", field="modality")

    def config(plan: list[Path]) -> AdaptConfig:
        return AdaptConfig(images=[str(p) for p in plan], modality=modality, base=str(base_dir), steps=steps,
                           batch=batch, patch=patch, seed=seed, threads=threads, freeze_encoder=freeze_encoder,
                           reference_masks=reference_masks, renders=list(renders or []), render_share=render_share,
                           render_image=render_image, render_style=render_style, style_beta=style_beta,
                           border_weight=border_weight, **(pseudo or {}))

    config(paths).validate()  # a bad option is refused before anything is written
    if not (base_dir / "model.onnx").is_file() or not (base_dir / "training.json").is_file():
        raise UserInputError(f"no model version at {base_dir} (model.onnx + training.json); give a version folder "
                             "such as models_repo/semforge_unetpp_se/1", field="base")
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    # servable by Triton like the base: its configs (renamed) and, per version, its model.py
    for cfg_file in [base_dir.parent / "config.pbtxt", *sorted((base_dir.parent / "configs").glob("*.pbtxt"))]:
        target = dest / cfg_file.relative_to(base_dir.parent)
        if cfg_file.exists() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(cfg_file.read_text().replace(f'"{base_dir.parent.name}"', f'"{dest.name}"'))
    if folds:
        bounds = np.linspace(0, len(paths), folds + 1).round().astype(int)
        groups = [paths[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        plans = [[p for p in paths if p not in g] for g in groups]
    else:
        plans = [paths]
    versions = {}
    for plan in plans:
        v = _next_version(dest)
        cfg = config(plan)
        say = (lambda ev, v=v: progress(f"version {v}: step {ev['step']}/{steps} loss {ev['loss']:.4f} "
                                        f"({ev['elapsed_s']:.0f} s)")) if progress else None
        adapt_segmenter(cfg, dest / str(v), progress=say)
        if (base_dir / "model.py").exists():
            shutil.copy(base_dir / "model.py", dest / str(v) / "model.py")
        versions[str(v)] = [p.stem for p in plan]
    if folds:
        (dest / "folds.json").write_text(json.dumps({"key": dest.name, "modality": modality, "versions": versions},
                                                    indent=1))
    return {"out": str(dest), "versions": versions}
