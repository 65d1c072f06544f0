"""CycleGAN training (``semforge train translator``): rendered height maps (A) <-> real SEM images (B).

Domain A: ``height_noisy.tif`` of rendered scenes (normalized height + Gaussian noise
sigma 0.01, as the seed). Domain B: unlabeled real micrographs of the target
instrument, data bar cut. Losses: least-squares adversarial, cycle consistency
(lambda 10) and identity (0.5 lambda); a pool of 50 earlier fakes per discriminator;
Adam (2e-4, beta1 0.5) with the learning rate constant for the first half and decaying
linearly to zero over the second. Seeded. Every ``checkpoint_every`` iterations the
four networks, both optimizers, the iteration and the resolved config are saved to
``out/checkpoint.pt`` (atomically), so a stopped run resumes where it was; the loss
curve goes to ``out/curve.json``. The A->B generator alone is exported as
``out/generator.pt`` (state dict + config) for the translate service; with
``snapshot_every`` earlier generators are kept as ``out/snapshots/generator_NNNNNN.pt``
so that the content check can be followed along the run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["TranslatorConfig", "train_translator", "load_generator", "translate"]


@dataclass
class TranslatorConfig:
    heightmaps: list[str] = field(default_factory=list)  # rendered dataset roots
    real: str = ""  # folder of real images (data bar cut automatically)
    size: int = 128  # training crop
    ngf: int = 32
    n_blocks: int = 6
    ndf: int = 64
    iterations: int = 1000
    lr: float = 2e-4
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    pool: int = 50
    seed: int = 0
    threads: int = 0
    checkpoint_every: int = 100
    snapshot_every: int = 0  # also keep generator_NNNNN.pt every so many iterations (0: never)
    time_budget_s: float | None = None

    def validate(self) -> None:
        if not self.heightmaps:
            raise ValueError("no rendered height maps given")
        if not self.real:
            raise ValueError("no folder of real images given")
        if self.size % 4 or self.size < 32:
            raise ValueError("size must be a multiple of 4, >= 32")
        if self.iterations < 1:
            raise ValueError("iterations must be >= 1")


def _load_a(roots: list[str]) -> list[np.ndarray]:
    import tifffile

    out = []
    for r in roots:
        for p in sorted(Path(r).rglob("height_noisy.tif")):
            out.append(np.clip(tifffile.imread(p).astype(np.float32), 0, 1))
    if not out:
        raise FileNotFoundError(f"no height_noisy.tif under {', '.join(roots)}")
    return out


def _load_b(folder: str) -> list[np.ndarray]:
    from ...analysis import detect_databar, load_image, to_gray_float

    out = []
    for p in sorted(Path(folder).iterdir()):
        if p.suffix.lower() not in (".tif", ".tiff", ".png", ".jpg"):
            continue
        img = load_image(p)
        out.append(to_gray_float(img.pixels)[: detect_databar(img.pixels)].astype(np.float32))
    if not out:
        raise FileNotFoundError(f"no images in {folder}")
    return out


class _Pool:
    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.items, self.rng = size, [], rng

    def __call__(self, x):
        if self.size == 0:
            return x
        if len(self.items) < self.size:
            self.items.append(x.detach().clone())
            return x
        if self.rng.random() < 0.5:
            k = int(self.rng.integers(self.size))
            old, self.items[k] = self.items[k], x.detach().clone()
            return old
        return x


def _crop(images: list[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    a = images[int(rng.integers(len(images)))]
    if a.shape[0] < size or a.shape[1] < size:
        a = np.pad(a, ((0, max(size - a.shape[0], 0)), (0, max(size - a.shape[1], 0))), mode="reflect")
    y, x = int(rng.integers(a.shape[0] - size + 1)), int(rng.integers(a.shape[1] - size + 1))
    c = a[y:y + size, x:x + size]
    if rng.random() < 0.5:
        c = c[:, ::-1]
    return np.ascontiguousarray(c)[None, None] * 2 - 1  # [-1, 1]


def _networks(cfg: TranslatorConfig):
    from .networks import PatchDiscriminator, ResnetGenerator, init_weights

    nets = {"g_ab": ResnetGenerator(cfg.ngf, cfg.n_blocks), "g_ba": ResnetGenerator(cfg.ngf, cfg.n_blocks),
            "d_a": PatchDiscriminator(cfg.ndf), "d_b": PatchDiscriminator(cfg.ndf)}
    for n in nets.values():
        init_weights(n)
    return nets


def train_translator(cfg: TranslatorConfig, out_dir: str | os.PathLike, *,
                     progress: Callable[[dict], None] | None = None) -> dict:
    import itertools

    import torch

    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    torch.manual_seed(cfg.seed)
    data_a, data_b = _load_a(cfg.heightmaps), _load_b(cfg.real)
    nets = _networks(cfg)
    opt_g = torch.optim.Adam(itertools.chain(nets["g_ab"].parameters(), nets["g_ba"].parameters()),
                             lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(itertools.chain(nets["d_a"].parameters(), nets["d_b"].parameters()),
                             lr=cfg.lr, betas=(0.5, 0.999))
    start, curve = 0, []
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():  # resume
        state = torch.load(ckpt, weights_only=False)
        free = ("iterations", "time_budget_s", "checkpoint_every", "snapshot_every")  # may change between runs
        if {k: v for k, v in state["config"].items() if k not in free} != \
                {k: v for k, v in asdict(cfg).items() if k not in free}:
            raise ValueError(f"{ckpt} was made with another configuration; use a new output folder")
        for k, n in nets.items():
            n.load_state_dict(state[k])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        start = state["iteration"]
        curve = json.loads((out / "curve.json").read_text()) if (out / "curve.json").exists() else []
    rng = np.random.default_rng([cfg.seed, start])  # a resumed run continues its stream from the iteration
    pool_a, pool_b = _Pool(cfg.pool, rng), _Pool(cfg.pool, rng)
    mse, l1 = torch.nn.MSELoss(), torch.nn.L1Loss()
    half = cfg.iterations // 2

    def lr_at(i: int) -> float:
        return cfg.lr if i < half else cfg.lr * max(0.0, 1 - (i - half) / max(cfg.iterations - half, 1))

    def save(i: int) -> None:
        state = {k: n.state_dict() for k, n in nets.items()}
        state.update(opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict(), iteration=i, config=asdict(cfg))
        torch.save(state, f"{ckpt}.tmp")
        os.replace(f"{ckpt}.tmp", ckpt)
        torch.save({"state_dict": nets["g_ab"].state_dict(), "config": asdict(cfg), "iteration": i},
                   f"{out / 'generator.pt'}.tmp")
        os.replace(f"{out / 'generator.pt'}.tmp", out / "generator.pt")
        (out / "curve.json").write_text(json.dumps(curve))
        if cfg.snapshot_every and i % cfg.snapshot_every == 0:
            snap = out / "snapshots"
            snap.mkdir(exist_ok=True)
            torch.save({"state_dict": nets["g_ab"].state_dict(), "config": asdict(cfg), "iteration": i},
                       snap / f"generator_{i:06d}.pt")

    t0 = time.perf_counter()
    i = start
    for i in range(start, cfg.iterations):
        for g in opt_g.param_groups + opt_d.param_groups:
            g["lr"] = lr_at(i)
        real_a = torch.from_numpy(_crop(data_a, cfg.size, rng))
        real_b = torch.from_numpy(_crop(data_b, cfg.size, rng))
        fake_b, fake_a = nets["g_ab"](real_a), nets["g_ba"](real_b)
        for d in ("d_a", "d_b"):
            nets[d].requires_grad_(False)
        pred_b, pred_a = nets["d_b"](fake_b), nets["d_a"](fake_a)
        loss_gan = mse(pred_b, torch.ones_like(pred_b)) + mse(pred_a, torch.ones_like(pred_a))
        loss_cyc = l1(nets["g_ba"](fake_b), real_a) + l1(nets["g_ab"](fake_a), real_b)
        loss_idt = l1(nets["g_ab"](real_b), real_b) + l1(nets["g_ba"](real_a), real_a)
        loss_g = loss_gan + cfg.lambda_cycle * loss_cyc + cfg.lambda_cycle * cfg.lambda_identity * loss_idt
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        for d in ("d_a", "d_b"):
            nets[d].requires_grad_(True)
        loss_d = 0.0
        for d, real, fake in (("d_b", real_b, pool_b(fake_b)), ("d_a", real_a, pool_a(fake_a))):
            pr, pf = nets[d](real), nets[d](fake.detach())
            loss_d = loss_d + 0.5 * (mse(pr, torch.ones_like(pr)) + mse(pf, torch.zeros_like(pf)))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        curve.append({"iteration": i + 1, "g": loss_g.item(), "gan": loss_gan.item(), "cycle": loss_cyc.item(),
                      "identity": loss_idt.item(), "d": loss_d.item(), "lr": lr_at(i)})
        done = i + 1
        over = cfg.time_budget_s is not None and time.perf_counter() - t0 > cfg.time_budget_s
        if done % cfg.checkpoint_every == 0 or done == cfg.iterations or over:
            save(done)
            if progress:
                progress(dict(curve[-1], elapsed_s=round(time.perf_counter() - t0, 1)))
        if over:
            break
    record = {"format": "semforge.translator/1", "config": asdict(cfg), "iterations_done": curve[-1]["iteration"] if curve else start,
              "heightmaps": len(data_a), "real_images": len(data_b),
              "seconds": round(time.perf_counter() - t0, 1), "resumed_from": start}
    (out / "training.json").write_text(json.dumps(record, indent=1))
    return record


def load_generator(path: str | os.PathLike):
    """The A->B generator (height map -> SEM image) from ``generator.pt`` or a training folder."""
    import torch

    from .networks import ResnetGenerator

    p = Path(path)
    p = p / "generator.pt" if p.is_dir() else p
    if not p.exists():
        raise FileNotFoundError(f"no translator at {p}: train one with `semforge train translator`")
    state = torch.load(p, weights_only=False)
    cfg = state["config"]
    g = ResnetGenerator(cfg["ngf"], cfg["n_blocks"])
    g.load_state_dict(state["state_dict"])
    return g.eval(), state


def translate(generator, height01: np.ndarray, *, tile: int = 512, overlap: int = 64) -> np.ndarray:
    """Height map in [0, 1] -> SEM-like image in [0, 1], tiled with blended seams for large inputs."""
    import torch

    from ...inference.tiling import predict_tiled

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return (generator(torch.from_numpy(batch * 2 - 1)).numpy() + 1) / 2

    return np.clip(predict_tiled(run, np.asarray(height01, np.float32), tile=tile, overlap=overlap,
                                 max_side=max(tile, 1024))[0], 0, 1)
