"""Render scenes: Blender worker processes, post-processing, datasets in the object store.

Blender (``bpy``) needs numpy < 2, the rest of semforge numpy 2, so Blender runs
in its own Python (``.venv-blender``, made by ``make setup``; elsewhere set
``SEMFORGE_BLENDER_PYTHON``).  A :class:`BlenderWorker` is one long-lived
process of that Python running :mod:`semforge.training.scenes._blender_worker` with one
thread; a batch keeps one worker per process slot, so Blender is imported once
per worker, not once per scene.

A dataset is a prefix in the object store::

    datasets/<name>/manifest.json            spec, scene list, figures (rewritten as scenes finish)
    datasets/<name>/scene_00000/scene.json   per-particle truth; written last: its presence means "done"
    datasets/<name>/scene_00000/{height.tif, height_nm.tif, height_noisy.tif, instances.tif, mask.png,
                                 borders.png, thickness_nm.tif, se.png, transmission.png}

A restarted batch skips every scene whose ``scene.json`` exists (resumable).
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import tifffile
from PIL import Image

from ...storage import ObjectStore, validate_key
from . import appearance
from .geometry import physics_report, placed_particles, thickness_map
from .spec import SceneSpec

__all__ = ["RenderUnavailable", "RenderError", "BlenderWorker", "blender_python", "render_scene",
           "render_batch", "scene_seed", "SCENE_FILES"]

log = logging.getLogger("semforge.render")

SCENE_FILES = ("height.tif", "height_nm.tif", "height_noisy.tif", "instances.tif", "mask.png", "borders.png",
               "thickness_nm.tif", "se.png", "transmission.png", "scene.json")
_SERVICES_DIR = Path(__file__).resolve().parents[3]


class RenderUnavailable(RuntimeError):
    """No Python with Blender (bpy) can be found."""


class RenderError(RuntimeError):
    """Blender failed on a scene."""


def blender_python() -> str:
    """The Python that has ``bpy``: $SEMFORGE_BLENDER_PYTHON, else ``<repo>/.venv-blender/bin/python``."""
    env = os.environ.get("SEMFORGE_BLENDER_PYTHON")
    cand = Path(env) if env else _SERVICES_DIR.parent / ".venv-blender" / "bin" / "python"
    if not cand.exists():
        where = f"SEMFORGE_BLENDER_PYTHON={env}" if env else str(cand)
        raise RenderUnavailable(f"rendering needs Blender's Python ({where} not found): run `make setup` "
                                "or set SEMFORGE_BLENDER_PYTHON to a Python with bpy==5.0.1, numpy<2, OpenEXR")
    return str(cand)


class BlenderWorker:
    """One Blender process with one thread; render jobs go in one at a time."""

    def __init__(self, python: str | None = None, *, timeout_s: float = 600.0):
        self.python = python or blender_python()
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None
        self._tail: deque[str] = deque(maxlen=30)
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(_SERVICES_DIR) + os.pathsep + env.get("PYTHONPATH", "")
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen([self.python, "-m", "semforge.training.scenes._blender_worker"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                      bufsize=1)
        return self._proc

    def render_raw(self, spec: SceneSpec, raw_dir: str) -> dict:
        """Simulate and render ``spec`` into ``raw_dir`` (raw.npz, poses.json); return the timings."""
        with self._lock:
            proc = self._proc if self._proc and self._proc.poll() is None else self._start()
            proc.stdin.write(json.dumps({"spec": spec.to_dict(), "out": raw_dir}) + "\n")
            proc.stdin.flush()
            deadline = time.monotonic() + self.timeout_s
            timer = threading.Timer(self.timeout_s, proc.kill)
            timer.start()
            try:
                for line in proc.stdout:
                    if line.startswith("SEMFORGE-DONE "):
                        return json.loads(line[len("SEMFORGE-DONE "):])["timings"]
                    if line.startswith("SEMFORGE-FAIL "):
                        err = json.loads(line[len("SEMFORGE-FAIL "):])
                        log.debug("blender trace: %s", err.get("trace"))
                        raise RenderError(f"Blender failed on scene seed {spec.seed}: {err['error']}")
                    self._tail.append(line.rstrip())
            finally:
                timer.cancel()
            self.close()
            why = "timed out" if time.monotonic() >= deadline else "exited"
            raise RenderError(f"Blender worker {why} while rendering seed {spec.seed}; last output: "
                              + " | ".join(list(self._tail)[-5:]))

    def peak_rss_mb(self) -> float:
        """Peak resident memory of the Blender process so far (Linux VmHWM), 0 if unknown."""
        try:
            with open(f"/proc/{self._proc.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except (OSError, AttributeError):
            pass
        return 0.0

    def close(self) -> None:
        p, self._proc = self._proc, None
        if p is None:
            return
        try:
            p.stdin.close()
            p.wait(timeout=10)
        except Exception:
            p.kill()
            p.wait()

    def __enter__(self) -> "BlenderWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def scene_seed(base_seed: int, index: int) -> int:
    """Seed of scene ``index`` of a batch: independent streams, stable across runs."""
    return int(np.random.SeedSequence([int(base_seed) & 0xFFFFFFFF, index]).generate_state(1)[0])


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _tif(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, compression="zlib", metadata=None)
    return buf.getvalue()


def finish_scene(spec: SceneSpec, raw_dir: str, timings: dict) -> dict[str, bytes]:
    """From Blender's raw passes and final poses to every output file of a scene (name -> bytes)."""
    t0 = time.perf_counter()
    raw = np.load(os.path.join(raw_dir, "raw.npz"))
    with open(os.path.join(raw_dir, "poses.json")) as fh:
        poses = json.load(fh)
    height_nm, ids, borders = raw["height_nm"], raw["ids"], raw["borders"]
    placed = placed_particles(poses["particles"])
    thick, facts = thickness_map(placed, spec.size_px, spec.pixel_size_nm)
    physics = physics_report(placed)
    timings = dict(timings)
    physics["residual_nm_per_frame"] = timings.pop("residual_nm_per_frame", None)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed & 0xFFFFFFFF, 7]))
    hmax = float(height_nm.max())
    height01 = (height_nm / hmax if hmax > 0 else height_nm).astype(np.float32)
    visible = np.bincount(ids.ravel(), minlength=len(placed) + 1)
    particles = []
    for p in placed:
        f = facts[p.id]
        vis = int(visible[p.id]) if p.id < len(visible) else 0
        particles.append({
            "id": p.id, "shape": p.shape, "dimensions_nm": p.dims, "size_nm": p.size_nm, "aspect": p.aspect,
            "location_nm": [round(float(x), 4) for x in p.location_nm],
            "rotation_wxyz": [round(float(x), 6) for x in p.rotation_wxyz],
            "footprint_px": f["footprint_px"], "visible_px": vis,
            # rendered edge pixels are sampled at jittered points, the footprint at pixel centres: cap at 1
            "visible_fraction": round(min(1.0, vis / f["footprint_px"]), 4) if f["footprint_px"] else 0.0,
            "cut_by_border": f["cut_by_border"],
        })
    files = {
        "height.tif": _tif(height01),
        "height_nm.tif": _tif(height_nm.astype(np.float32)),
        "height_noisy.tif": _tif(appearance.noisy_height(height01, rng)),
        "instances.tif": _tif(ids.astype(np.uint16)),
        "mask.png": _png(((ids > 0) * 255).astype(np.uint8)),
        "borders.png": _png(appearance.to_uint8(borders)),
        "thickness_nm.tif": _tif(thick),
        "se.png": _png(appearance.to_uint8(appearance.se_image(height_nm, ids, spec.pixel_size_nm, rng))),
        "transmission.png": _png(appearance.to_uint8(appearance.transmission_image(thick, rng))),
    }
    timings = dict(timings, post_s=time.perf_counter() - t0)
    scene = {"format": "semforge.scene/1", "spec": spec.to_dict(), "pixel_size_nm": spec.pixel_size_nm,
             "size_px": spec.size_px, "height_max_nm": hmax, "unit_nm": poses["unit_nm"], "physics": physics,
             "timings_s": {k: round(v, 3) if isinstance(v, float) else v for k, v in timings.items()},
             "particles": particles}
    files["scene.json"] = json.dumps(scene, indent=1).encode()
    return files


def render_scene(spec: SceneSpec, *, worker: BlenderWorker | None = None) -> dict[str, bytes]:
    """Simulate, render and post-process one scene; returns the output files (name -> bytes)."""
    spec.validate()
    own = worker is None
    worker = worker or BlenderWorker()
    try:
        with tempfile.TemporaryDirectory(prefix="semforge-render-") as raw_dir:
            timings = worker.render_raw(spec, raw_dir)
            return finish_scene(spec, raw_dir, timings)
    finally:
        if own:
            worker.close()


def _scene_prefix(dataset: str, index: int) -> str:
    return f"datasets/{dataset}/scene_{index:05d}/"


def render_batch(spec: SceneSpec, scenes: int, store: ObjectStore, dataset: str, *, workers: int | None = None,
                 progress: Callable[[int, int, dict], None] | None = None,
                 cancelled: Callable[[], bool] = lambda: False) -> dict:
    """Render ``scenes`` scenes of ``spec`` (scene i seeded by :func:`scene_seed`) into ``datasets/<dataset>/``.

    Scenes already finished (their ``scene.json`` exists) are skipped, so a batch that
    was interrupted resumes where it stopped.  ``progress(done, total, info)`` is called
    after each scene.  Returns the manifest.
    """
    spec.validate()
    if scenes < 1:
        raise ValueError("scenes must be >= 1")
    validate_key(f"datasets/{dataset}/manifest.json")
    workers = max(1, min(workers or os.cpu_count() or 1, scenes))
    todo, entries = [], {}
    for i in range(scenes):
        if store.exists(_scene_prefix(dataset, i) + "scene.json"):
            entries[i] = {"index": i, "seed": scene_seed(spec.seed, i), "prefix": _scene_prefix(dataset, i),
                          "skipped": True}
        else:
            todo.append(i)
    done = len(entries)
    if progress:
        progress(done, scenes, {"resumed": done})
    pool = [BlenderWorker() for _ in range(workers)]
    free = list(pool)
    free_lock = threading.Lock()
    t_start = time.perf_counter()

    def one(i: int) -> dict:
        if cancelled():
            return {"index": i, "cancelled": True}
        with free_lock:
            w = free.pop()
        try:
            s = replace(spec, seed=scene_seed(spec.seed, i))
            files = render_scene(s, worker=w)
        finally:
            with free_lock:
                free.append(w)
        prefix = _scene_prefix(dataset, i)
        for name in SCENE_FILES:  # scene.json last: it marks the scene as done
            store.put_bytes(prefix + name, files[name])
        info = json.loads(files["scene.json"])
        return {"index": i, "seed": s.seed, "prefix": prefix, "particles": len(info["particles"]),
                "timings_s": info["timings_s"], "physics": info["physics"]}

    def manifest(complete: bool) -> dict:
        m = {"format": "semforge.dataset/1", "dataset": dataset, "spec": spec.to_dict(), "scenes": scenes,
             "complete": complete, "files": list(SCENE_FILES), "rendered_now": len(todo),
             "wall_s": round(time.perf_counter() - t_start, 2), "entries": [entries[i] for i in sorted(entries)]}
        store.put_bytes(f"datasets/{dataset}/manifest.json", json.dumps(m, indent=1).encode())
        return m

    try:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            futures = [ex.submit(one, i) for i in todo]
            for fut in as_completed(futures):
                entry = fut.result()
                if entry.get("cancelled"):
                    continue
                entries[entry["index"]] = entry
                done += 1
                manifest(False)
                if progress:
                    progress(done, scenes, entry)
    finally:
        for w in pool:
            w.close()
    return manifest(len(entries) == scenes)
