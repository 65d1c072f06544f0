"""Training of the UNet++ segmenter (``semforge train segmenter``).

Seeded; random augmented patches from rendered scenes (or any image/mask pairs);
loss = pixel-weighted binary cross-entropy (weights of eqn 1) + soft Dice on the
particle channel, plus binary cross-entropy on the border channel when there is
one; AdamW with a cosine learning-rate schedule. Every ``eval_every`` steps the
model is run on the validation images (real micrographs) as the analysis would
run it, and the best one by instance F1 at IoU 0.5 is kept. The output directory
is a Triton model version folder: ``model.onnx`` and ``training.json`` (resolved
config, data, seed, curves, best figures, timings) side by side.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .data import PatchSampler, load_pairs
from .model import ModelConfig, build_model, export_onnx, normalize

__all__ = ["TrainConfig", "train_segmenter", "validate"]


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=list)  # roots of rendered datasets or image/mask folders
    image_file: str = "se.png"  # which rendered image to learn from (se.png or transmission.png)
    modality: str = "se"  # se/him: bright particles; stem/tem: dark particles
    val: str | None = None  # image/mask folder for validation and model selection
    val_names: list[str] | None = None  # subset of the validation folder (None: all)
    exclude_names: list[str] | None = None  # image stems never to train on (e.g. the validation images)
    model: ModelConfig = field(default_factory=ModelConfig)
    patch: int = 256
    batch: int = 8
    steps: int = 600
    eval_every: int = 100
    lr: float = 2e-3
    weight_decay: float = 1e-4
    w0: float = 10.0
    sigma: float = 7.0
    gamma: float = 0.0  # 0 for SE (distance-based weights), 2 for transmission (intensity-based)
    border_weight: float = 5.0
    seed: int = 0
    threads: int = 0  # 0: all cores
    limit: int | None = None  # at most this many training pairs
    cache_dir: str | None = None
    time_budget_s: float | None = None  # stop early (at an evaluation) when exceeded

    def validate(self) -> None:
        if not self.data:
            raise ValueError("no training data given")
        if self.modality not in ("se", "him", "stem", "tem"):
            raise ValueError(f"unknown modality {self.modality!r}")
        if self.patch % 32 or self.patch < 64:
            raise ValueError("patch must be a multiple of 32, >= 64")
        if self.steps < 1 or self.batch < 1 or self.eval_every < 1:
            raise ValueError("steps, batch and eval_every must be >= 1")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: all cores), got {self.threads}")
        self.model.validate()

    @property
    def dark(self) -> bool:
        return self.modality in ("stem", "tem")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        model = ModelConfig(**d.pop("model", {}))
        return cls(model=model, **d)


def _torch_runner(net):
    import torch

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(net(torch.from_numpy(normalize(batch)))).numpy()
    return run


def validate(run, pairs, *, dark: bool) -> dict:
    """Instance F1@0.5 and foreground IoU of a runner on real pairs (connected components of the mask)."""
    from skimage.measure import label

    from ...analysis import match_instances
    from ...inference.tiling import combine, predict_tiled

    tp = fp = fn = 0
    inter = union = 0.0
    for p in pairs:
        gray = 1 - p.image if dark else p.image
        prob = combine(predict_tiled(run, gray))
        mask = prob >= 0.5
        m = match_instances(label(mask, connectivity=1), p.instances)
        tp, fp, fn = tp + m["tp"], fp + m["fp"], fn + m["fn"]
        t = p.instances > 0
        inter += float((mask & t).sum())
        union += float((mask | t).sum())
    prec = tp / max(tp + fp, 1)
    rec = tp / max(tp + fn, 1)
    return {"f1": 2 * prec * rec / max(prec + rec, 1e-12), "precision": prec, "recall": rec,
            "iou": inter / max(union, 1.0)}


def train_segmenter(cfg: TrainConfig, out_dir: str | os.PathLike, *,
                    progress: Callable[[dict], None] | None = None) -> dict:
    """Train, select on validation, export ``out_dir/model.onnx`` + ``out_dir/training.json``; return the record."""
    import torch
    import torch.nn.functional as F

    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = cfg.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    t_start = time.perf_counter()
    pairs = []
    for root in cfg.data:
        pairs += load_pairs(root, image_file=cfg.image_file, exclude=cfg.exclude_names)
    if cfg.limit:
        pairs = pairs[: cfg.limit]
    # dark-particle modalities are learned and run inverted, so particles are bright for the network
    if cfg.dark:
        for p in pairs:
            p.image = 1 - p.image
    sampler = PatchSampler(pairs, patch=cfg.patch, border_channel=cfg.model.classes == 2, w0=cfg.w0,
                           sigma=cfg.sigma, gamma=cfg.gamma, cache_dir=cfg.cache_dir, seed=cfg.seed)
    # validation: annotated real pairs, or (no real data for a modality) held-out rendered scenes
    val_pairs = load_pairs(cfg.val, image_file=cfg.image_file, names=cfg.val_names,
                           limit=None if cfg.val_names else 6) if cfg.val else []
    t_data = time.perf_counter() - t_start
    net = build_model(cfg.model)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    curve, evals = [], []
    # -inf, not -1: without validation the score is -loss, and a loss above 1 must still be recorded (#16)
    best = {"score": float("-inf")}
    best_state = None
    run = _torch_runner(net)
    t_train = time.perf_counter()
    step = 0
    for step in range(1, cfg.steps + 1):
        net.train()
        x, y, w = sampler.sample(cfg.batch)
        x, y, w = torch.from_numpy(normalize(x)), torch.from_numpy(y), torch.from_numpy(w)
        logits = net(x)
        fg_logit, fg = logits[:, 0], y[:, 0]
        loss_bce = (F.binary_cross_entropy_with_logits(fg_logit, fg, reduction="none") * w).sum() / w.sum()
        p = torch.sigmoid(fg_logit)
        dice = 1 - (2 * (p * fg).sum() + 1) / (p.sum() + fg.sum() + 1)
        loss = loss_bce + dice
        if cfg.model.classes == 2:
            bw = 1 + (cfg.border_weight - 1) * y[:, 1]
            loss = loss + F.binary_cross_entropy_with_logits(logits[:, 1], y[:, 1], weight=bw)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        curve.append({"step": step, "loss": loss.item(), "lr": float(sched.get_last_lr()[0])})
        last = step == cfg.steps
        over = cfg.time_budget_s is not None and time.perf_counter() - t_start > cfg.time_budget_s
        if step % cfg.eval_every == 0 or last or over:
            net.eval()
            ev = {"step": step, "loss": float(np.mean([c["loss"] for c in curve[-cfg.eval_every:]])),
                  "elapsed_s": round(time.perf_counter() - t_start, 1)}
            if val_pairs:
                ev.update(validate(run, val_pairs, dark=cfg.dark))
            score = ev.get("f1", -ev["loss"])
            evals.append(ev)
            if score > best["score"]:
                best = dict(ev, score=score)
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            if progress:
                progress(dict(ev, best_step=best["step"]))
            if over:
                break
    t_train = time.perf_counter() - t_train
    net.load_state_dict(best_state)
    net.eval()
    export_onnx(net, out / "model.onnx")
    record = {
        "format": "semforge.segmenter/1", "architecture": "UnetPlusPlus (segmentation-models-pytorch)",
        "input": {"channels": 1, "normalize": "(x - 0.5) / 0.25, x gray in [0, 1]",
                  "invert": cfg.dark, "multiple_of": 32},
        "outputs": ["particle"] + (["border"] if cfg.model.classes == 2 else []),
        "modality": cfg.modality, "config": asdict(cfg), "training_pairs": len(pairs),
        "training_pair_names": [p.name for p in pairs][:2000],
        "validation_pairs": [p.name for p in val_pairs],
        "best": best, "evaluations": evals, "curve": curve[:: max(1, len(curve) // 400)],
        "steps_done": step, "seconds": {"data": round(t_data, 1), "train": round(t_train, 1)},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} threads",
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "onnx_bytes": (out / "model.onnx").stat().st_size,
    }
    (out / "training.json").write_text(json.dumps(record, indent=1))
    return record
