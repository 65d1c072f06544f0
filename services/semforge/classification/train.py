"""Training of the shape classifier (``semforge train classifier``).

Seeded and resumable: crops are cut once from rendered scenes (:mod:`.data`,
cached as ``crops.npz`` in the work folder), scenes are split into training and
validation by a fixed rule (every ``val_every``-th scene), and the network is
trained with AdamW, a cosine schedule and class weights ~ 1/sqrt(frequency)
on randomly flipped/rotated crops with gray-level noise.  The checkpoint
(model, optimiser, step, curve, random states) is written to the work folder
at every evaluation, so an interrupted run continues where it stopped.  The best
evaluation (macro F1 over the classes on the validation scenes) is exported
to ONNX (softmax included) into a Triton model version folder beside
``training.json`` (resolved config, data, seed, curve, validation confusion
matrix, timings).
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

from .classes import CLASSES, COVERED_BELOW, FRAGMENT_BELOW, modality_set
from .crops import CROP_MARGIN, CROP_SIZE

__all__ = ["ClassifierTrainConfig", "train_classifier", "export_onnx", "write_triton_model", "confusion",
           "per_class_figures"]

FORMAT = "semforge.classifier/1"


@dataclass
class ClassifierTrainConfig:
    data: list[str] = field(default_factory=list)  # rendered dataset roots / scene folders, or crops .npz files
    modality: str = "se"
    name: str | None = None  # model name in the repository (default semforge_classifier_<se|transmission>)
    version: int | None = None
    repo: str | None = None
    workdir: str = "out/classifier/run"  # crops cache + checkpoint (resume)
    arch: str = "shapenet"
    width: int = 16
    size: int = CROP_SIZE
    segmented: bool = True  # also cut crops from the particles the shipped segmenter finds
    batch: int = 64
    steps: int = 3000
    eval_every: int = 250
    lr: float = 3e-3
    weight_decay: float = 1e-4
    val_every: int = 6  # every 6th scene is a validation scene
    seed: int = 0
    threads: int = 1
    time_budget_s: float | None = None

    def validate(self) -> None:
        if not self.data:
            raise ValueError("no training data given (rendered dataset roots, scene folders or crops .npz)")
        modality_set(self.modality)
        if self.steps < 1 or self.eval_every < 1 or self.batch < 2:
            raise ValueError("steps and eval_every must be >= 1 and batch >= 2")
        if self.size < 16:
            raise ValueError(f"crop size must be >= 16, got {self.size}")
        from .model import ARCHS

        if self.arch not in ARCHS:
            raise ValueError(f"unknown classifier architecture {self.arch!r}; valid: {', '.join(ARCHS)}")

    @property
    def model_name(self) -> str:
        return self.name or f"semforge_classifier_{modality_set(self.modality)}"


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """``C[i, j]``: how many of class i were predicted as j."""
    c = np.zeros((n, n), np.int64)
    np.add.at(c, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return c


def per_class_figures(c: np.ndarray, classes: list[str]) -> dict:
    tp = np.diag(c).astype(float)
    prec = tp / np.maximum(c.sum(0), 1)
    rec = tp / np.maximum(c.sum(1), 1)
    f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
    present = c.sum(1) > 0
    return {"accuracy": float(tp.sum() / max(c.sum(), 1)),
            "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
            "per_class": {k: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                              "support": int(c[i].sum())} for i, k in enumerate(classes)}}


def _load_crops(cfg: ClassifierTrainConfig, progress) -> dict:
    from .data import build_dataset, load_dataset

    npz = [d for d in cfg.data if str(d).endswith(".npz")]
    scenes = [d for d in cfg.data if not str(d).endswith(".npz")]
    parts = [load_dataset(p) for p in npz]
    if scenes:
        cache = Path(cfg.workdir) / "crops.npz"
        if not cache.exists():
            seg = None
            if cfg.segmented:
                from ..inference import create_segmenter

                seg = create_segmenter("unetpp", threads=cfg.threads or None)
            info = build_dataset(scenes, cache, cfg.modality, segmenter=seg, size=cfg.size,
                                 progress=lambda i, n, d: progress(f"crops {i}/{n}: {d}"))
            progress(f"crops: {info['crops']} from {info['scenes']} scenes {info['counts']}")
        parts.append(load_dataset(cache))
    classes = CLASSES[modality_set(cfg.modality)]
    for p in parts:
        if list(p["classes"]) != classes:
            raise ValueError(f"crops were made for classes {list(p['classes'])}, not {classes}")
        if p["X"].shape[-1] != cfg.size:
            raise ValueError(f"crops are {p['X'].shape[-1]} px, config says {cfg.size}")
    return {k: np.concatenate([p[k] for p in parts]) for k in ("X", "y", "scene", "source")}


def _augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    k = int(rng.integers(4))
    x = np.rot90(x, k, axes=(2, 3))
    if rng.random() < 0.5:
        x = x[:, :, :, ::-1]
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    gain = rng.uniform(0.7, 1.3, (n, 1, 1)).astype(np.float32)
    noise = rng.normal(0, 1, x[:, 0].shape).astype(np.float32) * rng.uniform(0, 0.3, (n, 1, 1)).astype(np.float32)
    x[:, 0] = x[:, 0] * gain + noise
    return x


def export_onnx(model, path: str | Path, size: int, in_ch: int = 2) -> None:
    """ONNX of ``model`` with softmax: ``image`` [N, 2, S, S] -> ``probabilities`` [N, C] (dynamic N, opset 17)."""
    import torch

    model.eval()
    model.softmax = True
    try:
        torch.onnx.export(model, torch.zeros(1, in_ch, size, size), str(path), input_names=["image"],
                          output_names=["probabilities"], dynamic_axes={"image": {0: "n"}, "probabilities": {0: "n"}},
                          opset_version=17, dynamo=False)
    finally:
        model.softmax = False


def write_triton_model(model_root: str | Path, name: str, *, classes: int, size: int, max_batch: int = 512) -> None:
    """``config.pbtxt`` (GPU) + ``configs/cpu.pbtxt`` and the Python-backend ``model.py`` in every version.

    The same ``model.py`` as the segmenters (``semforge/inference/triton_backend.py``); unlike theirs, a
    classifier's ``model.onnx`` takes the crops as they are (no gray normalization is baked into it).
    """
    import shutil

    from ..inference.triton_repo import write_configs

    root = Path(model_root)
    write_configs(root, name, writer="semforge.classification.train.write_triton_model", max_batch=max_batch,
                  input_comment="image: particle crops, channel 0 gray normalised over the crop, channel 1 the "
                                "particle's mask",
                  input_dims=f"2, {size}, {size}",
                  output_comment='probabilities: one per class, in the order of training.json "classes" '
                                 "(softmax in the graph)",
                  output_dims=str(classes), delay_us=1000)
    src = Path(__file__).resolve().parents[1] / "inference" / "triton_backend.py"
    for v in root.iterdir():
        if v.is_dir() and v.name.isdigit():
            shutil.copyfile(src, v / "model.py")


def _evaluate(model, X, y, n_cls, batch=512):
    import torch

    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(X), batch):
            preds.append(model(torch.from_numpy(X[i:i + batch].astype(np.float32))).argmax(1).numpy())
    model.train()
    p = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    return confusion(y, p, n_cls)


def train_classifier(cfg: ClassifierTrainConfig, *, progress: Callable[[str], None] | None = None) -> dict:
    """Train, export the best evaluation to ``<repo>/<name>/<version>/`` and return the training record."""
    import torch

    from ..inference import MODELS_REPO
    from .model import create_model

    cfg.validate()
    say = progress or (lambda s: None)
    t_start = time.perf_counter()
    torch.set_num_threads(max(1, cfg.threads or os.cpu_count() or 1))
    work = Path(cfg.workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    data = _load_crops(cfg, say)
    classes = CLASSES[modality_set(cfg.modality)]
    n_cls = len(classes)
    scenes = sorted(set(data["scene"].tolist()))
    val_scenes = set(scenes[cfg.val_every - 1::cfg.val_every]) if len(scenes) >= cfg.val_every else set()
    is_val = np.array([s in val_scenes for s in data["scene"]])
    Xtr, ytr = data["X"][~is_val], data["y"][~is_val]
    Xva, yva = data["X"][is_val], data["y"][is_val]
    if len(ytr) == 0:
        raise ValueError("no training crops")
    counts = np.bincount(ytr, minlength=n_cls)
    weights = 1.0 / np.sqrt(np.maximum(counts, 1))
    weights = weights / (weights * counts).sum() * counts.sum()
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, classes=n_cls, width=cfg.width)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32), label_smoothing=0.05)
    rng = np.random.default_rng(cfg.seed)
    step, history, best = 0, [], {"macro_f1": -1.0}
    ckpt = work / "checkpoint.pt"
    if ckpt.exists():
        st = torch.load(ckpt, weights_only=False)
        free = ("name", "version", "repo", "time_budget_s", "workdir")  # where it goes and when it stops
        if {k: v for k, v in st["config"].items() if k not in free} != {k: v for k, v in asdict(cfg).items()
                                                                       if k not in free}:
            raise ValueError(f"{ckpt} was made with another configuration; use another work folder")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        step, history, best = st["step"], st["history"], st["best"]
        rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        say(f"resuming at step {step}")
    model.train()
    t_train = time.perf_counter()
    stopped = "steps"
    while step < cfg.steps:
        idx = rng.integers(0, len(ytr), cfg.batch)
        x = torch.from_numpy(_augment(Xtr[idx], rng))
        loss = loss_fn(model(x), torch.from_numpy(ytr[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.steps:
            c = _evaluate(model, Xva, yva, n_cls) if len(yva) else confusion(ytr[:0], ytr[:0], n_cls)
            fig = per_class_figures(c, classes)
            history.append({"step": step, "loss": loss.item(), "val_accuracy": fig["accuracy"],
                            "val_macro_f1": fig["macro_f1"], "seconds": round(time.perf_counter() - t_start, 1)})
            say(f"step {step}: loss {loss.item():.3f}, val accuracy {fig['accuracy']:.3f}, macro F1 {fig['macro_f1']:.3f}")
            if fig["macro_f1"] > best["macro_f1"] or not len(yva):
                best = {"step": step, "macro_f1": fig["macro_f1"], "accuracy": fig["accuracy"],
                        "confusion": c.tolist(), "per_class": fig["per_class"]}
                torch.save(model.state_dict(), work / "best.pt")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "step": step, "history": history, "best": best, "rng": rng.bit_generator.state,
                        "torch_rng": torch.get_rng_state(), "config": asdict(cfg)}, ckpt)
            if cfg.time_budget_s and time.perf_counter() - t_start > cfg.time_budget_s and step < cfg.steps:
                stopped = "time_budget"
                break
    train_s = time.perf_counter() - t_train
    model.load_state_dict(torch.load(work / "best.pt"))
    repo = Path(cfg.repo) if cfg.repo else MODELS_REPO
    root = repo / cfg.model_name
    existing = [int(p.name) for p in root.glob("*") if p.is_dir() and p.name.isdigit()] if root.is_dir() else []
    version = cfg.version or (max(existing, default=0) + 1)
    vdir = root / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    export_onnx(model, vdir / "model.onnx", cfg.size)
    write_triton_model(root, cfg.model_name, classes=n_cls, size=cfg.size)
    src_counts = {s: int((data["source"] == s).sum()) for s in sorted(set(data["source"].tolist()))}
    record = {
        "format": FORMAT, "architecture": f"{cfg.arch} (width {cfg.width}, "
                                          f"{sum(p.numel() for p in model.parameters())} parameters)",
        "modality": modality_set(cfg.modality), "classes": classes,
        "input": {"channels": ["gray, (x - mean) / std over the crop", "mask: 1 particle, 0.5 other particles"],
                  "size": cfg.size, "margin": CROP_MARGIN},
        "labels": {"covered_below_visible_fraction": COVERED_BELOW, "fragment_below": FRAGMENT_BELOW},
        "config": asdict(cfg),
        "data": {"roots": list(cfg.data), "scenes": len(scenes), "val_scenes": len(val_scenes),
                 "train_crops": int(len(ytr)), "val_crops": int(len(yva)), "sources": src_counts,
                 "train_counts": {k: int(v) for k, v in zip(classes, counts)},
                 "trained_on_real_masks": False},
        "history": history, "best": best, "stopped": stopped, "steps_done": step,
        "timings_s": {"total": round(time.perf_counter() - t_start, 1), "train": round(train_s, 1)},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": cfg.threads},
    }
    (vdir / "training.json").write_text(json.dumps(record, indent=1))
    record["path"] = str(vdir)
    return record


def cli_train(args) -> int:
    """``semforge train classifier``: the shared ``train`` flags mapped onto :class:`ClassifierTrainConfig`.

    ``--data`` rendered dataset roots (or crops .npz), ``--modality``, ``--name`` (default
    semforge_classifier_<se|transmission>), ``--version``, ``--repo``, ``--out`` (work folder with the crop
    cache and the checkpoint; an interrupted run resumes from it), ``--batch``, ``--steps``, ``--eval-every``,
    ``--lr``, ``--seed``, ``--time-budget-s``, ``--json``.
    """
    import sys

    data = list(args.data or [])
    if not data:
        raise ValueError("give the rendered scenes with --data DIR ... (the recipes in "
                         "semforge.classification.recipes render them; see docs/classification.md)")
    for d in data:
        if not Path(d).exists():
            raise FileNotFoundError(f"no such training data: {d}")
    name = None if args.name == "semforge_unetpp_se" else args.name  # the shared flag's default is the segmenter's
    cfg = ClassifierTrainConfig(data=data, modality=args.modality, name=name, version=args.version, repo=args.repo,
                                workdir=args.out or f"out/classifier/{modality_set(args.modality)}", batch=args.batch,
                                steps=args.steps, eval_every=args.eval_every, lr=args.lr, seed=args.seed,
                                threads=int(os.environ.get("OMP_NUM_THREADS", "0") or 0),
                                time_budget_s=args.time_budget_s)

    def say(msg: str) -> None:
        if not args.quiet:
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()

    rec = train_classifier(cfg, progress=say)
    if args.json:
        Path(args.json).write_text(json.dumps(rec, indent=1))
    print(f"classifier: {rec['path']} (best step {rec['best']['step']}: validation accuracy "
          f"{rec['best']['accuracy']:.3f}, macro F1 {rec['best']['macro_f1']:.3f}; {rec['stopped']})")
    return 0
