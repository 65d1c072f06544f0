"""Training and evaluation data for the segmenters: pairs, targets, weight maps, patches.

Two layouts are read, from a directory or from the object store:

* rendered datasets (``semforge render``): ``.../scene_NNNNN/{se.png|transmission.png, instances.tif}``
  found anywhere under the given root;
* annotated pairs: ``images/NAME.tif`` with ``masks/NAME_m.tif`` (binary; touching particles
  separated by background lines, instances = 4-connected components) — the layout of the
  facility's annotated reference images. The instrument data bar is cut automatically.

Targets follow the seed method: the foreground with a 2-px gap wherever two particles touch
(label erosion), and the pixel weight map of eqn (1),
``w(x) = w0 exp(-(d1 + d2)^2 / (2 sigma^2)) + gamma I_c(x) + 1`` on background pixels
(``d1``, ``d2``: distances to the nearest and second-nearest particle; ``I_c``: normalized
intensity, bright = particle-like) and 1 on particles. Weight maps are expensive, so they are
cached on disk by the hash of the instance image and the parameters.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label

from ...analysis import detect_databar, load_image, to_gray_float

__all__ = ["Pair", "load_pairs", "touching_gaps", "narrow_gaps", "weight_map", "cached_weight_map", "PatchSampler"]


@dataclass
class Pair:
    name: str
    image: np.ndarray  # float32 gray in [0, 1]
    instances: np.ndarray  # int32 ids, 0 = background
    pixel_size_nm: float | None = None


def _read_gray(path: Path) -> tuple[np.ndarray, float | None, int]:
    img = load_image(path)
    gray = to_gray_float(img.pixels).astype(np.float32)
    rows = detect_databar(img.pixels)
    return gray, img.calibration.pixel_size_nm, rows


def load_pairs(root: str | os.PathLike, *, image_file: str = "se.png", limit: int | None = None,
               names: list[str] | None = None, exclude: list[str] | None = None) -> list[Pair]:
    """Image/instance pairs under ``root`` (either layout; see the module doc); ``names`` / ``exclude``: image stems."""
    import tifffile

    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no training data at {root}")
    pairs: list[Pair] = []
    if (root / "images").is_dir() and (root / "masks").is_dir():
        for ip in sorted((root / "images").iterdir()):
            if (names is not None and ip.stem not in names) or (exclude and ip.stem in exclude):
                continue
            mp = root / "masks" / f"{ip.stem}_m{ip.suffix}"
            if not mp.exists():
                continue
            gray, px, rows = _read_gray(ip)
            mask = tifffile.imread(mp)[:rows] > 0
            inst = label(mask, connectivity=1).astype(np.int32)
            pairs.append(Pair(ip.stem, gray[:rows], inst, px))
            if limit and len(pairs) >= limit:
                break
    else:
        for scene in sorted(root.rglob("scene.json")):
            d = scene.parent
            if not (d / image_file).exists():
                raise FileNotFoundError(f"{d} has no {image_file}")
            gray = to_gray_float(np.asarray(load_image(d / image_file).pixels)).astype(np.float32)
            inst = tifffile.imread(d / "instances.tif").astype(np.int32)
            import json

            px = json.loads(scene.read_text()).get("pixel_size_nm")
            pairs.append(Pair(f"{d.parent.name}/{d.name}", gray, inst, px))
            if limit and len(pairs) >= limit:
                break
    if not pairs:
        raise FileNotFoundError(f"no image/mask pairs under {root} (expected scene_*/scene.json with {image_file}, "
                                "or images/ + masks/NAME_m.tif)")
    return pairs


def touching_gaps(instances: np.ndarray) -> np.ndarray:
    """Pixels of a particle that touch a different particle (3x3 neighbourhood): the gap to cut."""
    ids = instances
    big = np.where(ids > 0, ids, np.iinfo(np.int32).max)
    lo = ndi.minimum_filter(big, size=3, mode="nearest")
    hi = ndi.maximum_filter(ids, size=3, mode="nearest")
    return (ids > 0) & ((lo != ids) & (lo != np.iinfo(np.int32).max) | (hi != ids))


def narrow_gaps(instances: np.ndarray, size: int = 5) -> np.ndarray:
    """Background pixels with two different particles within a ``size`` window: the lines between them."""
    ids = instances
    big = np.where(ids > 0, ids, np.iinfo(np.int32).max)
    lo = ndi.minimum_filter(big, size=size, mode="nearest")
    hi = ndi.maximum_filter(ids, size=size, mode="nearest")
    return (ids == 0) & (lo != np.iinfo(np.int32).max) & (hi > 0) & (lo != hi)


def weight_map(instances: np.ndarray, *, w0: float = 10.0, sigma: float = 7.0, gamma: float = 0.0,
               intensity: np.ndarray | None = None) -> np.ndarray:
    """Eqn (1) of the seed paper; background only, particles weigh 1 (see the module doc)."""
    ids = np.asarray(instances)
    fg = ids > 0
    h, w = ids.shape
    reach = int(np.ceil(4 * sigma))
    d1 = np.full((h, w), np.inf, np.float32)
    d2 = np.full((h, w), np.inf, np.float32)
    for k, sl in enumerate(ndi.find_objects(ids), start=1):
        if sl is None:
            continue
        y0, y1 = max(sl[0].start - reach, 0), min(sl[0].stop + reach, h)
        x0, x1 = max(sl[1].start - reach, 0), min(sl[1].stop + reach, w)
        win = ids[y0:y1, x0:x1] == k
        d = ndi.distance_transform_edt(~win).astype(np.float32)
        a, b = d1[y0:y1, x0:x1], d2[y0:y1, x0:x1]
        closer = d < a
        b[:] = np.where(closer, a, np.minimum(b, d))
        a[:] = np.where(closer, d, a)
    both = np.isfinite(d2)
    s = np.where(both, d1 + d2, np.inf)
    wmap = np.ones((h, w), np.float32)
    bg = ~fg
    wmap[bg] += (w0 * np.exp(-(s[bg] ** 2) / (2 * sigma ** 2))).astype(np.float32)
    if gamma and intensity is not None:
        ic = np.asarray(intensity, np.float32)
        ic = (ic - ic.min()) / max(float(ic.max() - ic.min()), 1e-6)
        wmap[bg] += gamma * ic[bg]
    return wmap


def cached_weight_map(instances: np.ndarray, cache_dir: str | os.PathLike | None, **params) -> np.ndarray:
    if cache_dir is None or params.get("intensity") is not None:
        return weight_map(instances, **params)
    h = hashlib.sha256(np.ascontiguousarray(instances, np.int32).tobytes())
    h.update(repr(sorted(params.items())).encode() + repr(instances.shape).encode())
    path = Path(cache_dir) / f"w_{h.hexdigest()[:32]}.npy"
    if path.exists():
        return np.load(path)
    wmap = weight_map(instances, **params)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, wmap)
    os.replace(tmp, path)
    return wmap



def jitter_intensity(im: np.ndarray, rng: np.random.Generator, *, gamma: float, contrast: tuple[float, float],
                     offset: float, blur: tuple[float, float], noise_p: float, noise_sd: float,
                     blur_p: float = 0.3) -> np.ndarray:
    """Gray-level augmentation of a training crop in [0, 1]: gamma exp(U(-gamma, gamma)), contrast U(contrast)
    about the mean, offset U(-offset, offset), a Gaussian blur of sigma U(blur) with probability ``blur_p``,
    Gaussian noise of sd U(0, noise_sd) with probability ``noise_p``; clipped to [0, 1], float32. The draws are
    made in this order (a recipe's seed gives the same crops as before this was shared)."""
    im = np.clip(im, 0, 1) ** np.exp(rng.uniform(-gamma, gamma))
    im = (im - im.mean()) * rng.uniform(*contrast) + im.mean() + rng.uniform(-offset, offset)
    if rng.random() < blur_p:
        im = ndi.gaussian_filter(im, rng.uniform(*blur))
    if rng.random() < noise_p:
        im = im + rng.normal(0, rng.uniform(0.0, noise_sd), im.shape)
    return np.clip(im, 0, 1).astype(np.float32)

class PatchSampler:
    """Random augmented patches: image (1, P, P), targets (C, P, P), weights (P, P).

    Augmentation: flips, 90-degree turns, small rotation + shear + zoom (one affine map),
    gamma, contrast and brightness, Gaussian blur, Gaussian noise. Targets: channel 0 the
    foreground with gaps between touching particles; with ``border_channel`` channel 1 the
    gap pixels themselves plus background lines narrower than ~4 px between two particles.
    """

    def __init__(self, pairs: list[Pair], *, patch: int = 256, border_channel: bool = False,
                 dark_particles: bool = False, w0: float = 10.0, sigma: float = 7.0, gamma: float = 0.0,
                 cache_dir: str | None = None, seed: int = 0):
        self.pairs = pairs
        self.patch = patch
        self.border_channel = border_channel
        self.dark = dark_particles
        self.rng = np.random.default_rng(seed)
        self.targets = []
        for p in pairs:
            gaps = touching_gaps(p.instances)
            fg = (p.instances > 0) & ~gaps
            gaps = gaps | narrow_gaps(p.instances)
            inten = (1 - p.image if self.dark else p.image) if gamma else None
            wmap = cached_weight_map(p.instances, cache_dir, w0=w0, sigma=sigma, gamma=gamma, intensity=inten)
            self.targets.append((fg.astype(np.float32), gaps.astype(np.float32), wmap))

    def _affine(self, arrs, orders):
        r = self.rng
        ang = r.uniform(-np.pi, np.pi) if r.random() < 0.5 else 0.0
        zoom = np.exp(r.uniform(np.log(0.8), np.log(1.25)))
        shear = r.uniform(-0.15, 0.15)
        c, s = np.cos(ang), np.sin(ang)
        m = np.array([[c, -s], [s, c]]) @ np.array([[1, shear], [0, 1]]) / zoom
        centre = np.array(arrs[0].shape) / 2
        offset = centre - m @ centre
        return [ndi.affine_transform(a, m, offset=offset, order=o, mode="reflect") for a, o in zip(arrs, orders)]

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        P = self.patch
        xs, ys, ws = [], [], []
        for _ in range(batch):
            k = int(self.rng.integers(len(self.pairs)))
            img = self.pairs[k].image
            fg, gaps, wmap = self.targets[k]
            big = int(P * 1.5)  # crop larger, transform, then cut the centre: no empty corners
            h, w = img.shape
            if h < big or w < big:
                pad = ((0, max(big - h, 0)), (0, max(big - w, 0)))
                img, fg, gaps, wmap = (np.pad(a, pad, mode="reflect") for a in (img, fg, gaps, wmap))
                h, w = img.shape
            y0, x0 = int(self.rng.integers(h - big + 1)), int(self.rng.integers(w - big + 1))
            sl = (slice(y0, y0 + big), slice(x0, x0 + big))
            arrs = [img[sl], fg[sl], gaps[sl], wmap[sl]]
            if self.rng.random() < 0.7:
                arrs = self._affine(arrs, [1, 0, 0, 1])
            q = (big - P) // 2
            arrs = [a[q:q + P, q:q + P] for a in arrs]
            if self.rng.random() < 0.5:
                arrs = [a[:, ::-1] for a in arrs]
            kr = int(self.rng.integers(4))
            arrs = [np.rot90(a, kr) for a in arrs]
            im, f, g, wm = (np.ascontiguousarray(a, np.float32) for a in arrs)
            im = self._intensity(im)
            xs.append(im[None])
            ys.append(np.stack([f, g]) if self.border_channel else f[None])
            ws.append(wm)
        return np.stack(xs), np.stack(ys), np.stack(ws)

    def _intensity(self, im: np.ndarray) -> np.ndarray:
        return jitter_intensity(im, self.rng, gamma=0.35, contrast=(0.7, 1.4), offset=0.1, blur=(0.3, 1.2),
                                noise_p=0.6, noise_sd=0.05)


def fetch_dataset(store, prefix: str, dest: str | os.PathLike, *,
                  files: tuple[str, ...] = ("se.png", "transmission.png", "instances.tif", "scene.json")) -> Path:
    """Copy a rendered dataset (``datasets/<name>/``) from an object store into ``dest`` for training.

    Only the files training reads are fetched; files already there with the same size are kept.
    """
    prefix = prefix.rstrip("/") + "/"
    dest = Path(dest)
    keys = [k for k in store.list(prefix) if k.rsplit("/", 1)[-1] in files]
    if not keys:
        raise FileNotFoundError(f"no rendered scenes under {prefix} in the object store")
    for key in keys:
        path = dest / key
        if path.exists() and path.stat().st_size == store.stat(key).size:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(key, path)
    return dest / prefix
