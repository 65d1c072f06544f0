"""Scene specifications and the seeded sampling of particles (numpy only).

A :class:`SceneSpec` says what to drop: a mixture of shape components, each
with its own size distribution, how many particles, the image size and pixel
size, and a seed.  :func:`sample_particles` turns it into concrete particles
and their levitated start poses, in layers above the holder, deterministically
for a given spec.  Imported by Blender's Python too, so numpy only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from .shapes import SHAPES, default_aspect, make_shape

__all__ = ["ShapeComponent", "SceneSpec", "Particle", "sample_particles", "spec_from_dict"]

DISTRIBUTIONS = ("normal", "lognormal")


@dataclass
class ShapeComponent:
    shape: str
    fraction: float = 1.0
    size_nm: float = 40.0  # mean characteristic diameter (rods: diameter)
    sd_nm: float = 4.0
    distribution: str = "normal"
    aspect: float | None = None  # rods: length/diameter; plates/discs: thickness/width

    def validate(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; known: {', '.join(SHAPES)}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown size distribution {self.distribution!r}; use normal or lognormal")
        if not self.size_nm > 0 or self.sd_nm < 0:
            raise ValueError(f"{self.shape}: size_nm must be > 0 and sd_nm >= 0")
        if not self.fraction > 0:
            raise ValueError(f"{self.shape}: fraction must be > 0")
        if self.aspect is not None and not self.aspect > 0:
            raise ValueError(f"{self.shape}: aspect must be > 0")


@dataclass
class SceneSpec:
    particles: int = 300
    size_px: int = 512
    pixel_size_nm: float = 2.0
    seed: int = 0
    components: list[ShapeComponent] = field(default_factory=lambda: [ShapeComponent("sphere")])
    holder_margin: float = 0.15  # holder extends this fraction of the field beyond each image edge
    frames: int = 90  # rigid-body frames simulated (24 fps)
    borders: bool = True  # Freestyle border pass
    cluster: float = 0.0  # share of particles started next to an earlier one (agglomerates)

    def validate(self) -> None:
        if not 1 <= self.particles <= 5000:
            raise ValueError(f"particles must be 1..5000, got {self.particles}")
        if not 32 <= self.size_px <= 4096:
            raise ValueError(f"size_px must be 32..4096, got {self.size_px}")
        if not self.pixel_size_nm > 0:
            raise ValueError(f"pixel_size_nm must be > 0, got {self.pixel_size_nm}")
        if not self.components:
            raise ValueError("a scene needs at least one shape component")
        if not 10 <= self.frames <= 2000:
            raise ValueError(f"frames must be 10..2000, got {self.frames}")
        if not 0 <= self.cluster <= 1:
            raise ValueError(f"cluster must be 0..1, got {self.cluster}")
        if not 0 <= self.holder_margin <= 1:
            raise ValueError("holder_margin must be 0..1")
        for c in self.components:
            c.validate()

    @property
    def field_nm(self) -> float:
        return self.size_px * self.pixel_size_nm

    @property
    def holder_nm(self) -> float:
        return self.field_nm * (1 + 2 * self.holder_margin)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def simple(cls, shapes: list[str], *, size_nm: float = 40.0, sd_nm: float = 4.0, **kw) -> "SceneSpec":
        """Equal mixture of ``shapes`` with one size distribution."""
        comps = [ShapeComponent(s, 1.0, size_nm, sd_nm) for s in shapes]
        return cls(components=comps, **kw)


def spec_from_dict(d: dict) -> SceneSpec:
    d = dict(d)
    comps = [ShapeComponent(**c) if isinstance(c, dict) else c for c in d.pop("components", [])]
    unknown = set(d) - set(SceneSpec.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown scene spec field(s): {', '.join(sorted(unknown))}")
    spec = SceneSpec(components=comps or [ShapeComponent("sphere")], **d)
    spec.validate()
    return spec


@dataclass
class Particle:
    id: int  # 1.. ; also the instance id in the label image
    shape: str
    size_nm: float
    aspect: float
    start_location_nm: tuple[float, float, float]
    start_rotation: tuple[float, float, float, float]  # unit quaternion w, x, y, z


def _random_quaternion(rng: np.random.Generator) -> tuple[float, float, float, float]:
    u1, u2, u3 = rng.random(3)
    q = (np.sqrt(u1) * np.cos(2 * np.pi * u3), np.sqrt(1 - u1) * np.sin(2 * np.pi * u2),
         np.sqrt(1 - u1) * np.cos(2 * np.pi * u2), np.sqrt(u1) * np.sin(2 * np.pi * u3))
    return tuple(float(x) for x in q)


def _draw_size(c: ShapeComponent, rng: np.random.Generator) -> float:
    if c.sd_nm == 0:
        return c.size_nm
    if c.distribution == "lognormal":
        s2 = np.log(1 + (c.sd_nm / c.size_nm) ** 2)
        return float(np.exp(rng.normal(np.log(c.size_nm) - s2 / 2, np.sqrt(s2))))
    return float(max(c.size_nm * 0.2, rng.normal(c.size_nm, c.sd_nm)))


def bounding_radius(shape: str, size_nm: float, aspect: float) -> float:
    v = make_shape(shape, size_nm, aspect).vertices
    return float(np.linalg.norm(v, axis=1).max())


def sample_particles(spec: SceneSpec) -> list[Particle]:
    """Shapes, sizes and levitated start poses, stacked in loose layers.

    Particles are placed one by one (largest first) at the lowest of a few random
    spots on the holder where their bounding sphere clears every sphere already
    placed, with a small gap; so nothing overlaps at the start and the stack stays
    a few layers high, which keeps the fall (and the simulation) short.  With
    ``cluster`` > 0 that share of particles looks for its spot right beside an
    earlier particle, so they settle into touching agglomerates.
    """
    spec.validate()
    rng = np.random.default_rng(spec.seed)
    weights = np.array([c.fraction for c in spec.components], float)
    weights /= weights.sum()
    which = rng.choice(len(spec.components), size=spec.particles, p=weights)
    drawn = []
    for k in which:
        c = spec.components[k]
        aspect = default_aspect(c.shape) if c.aspect is None else c.aspect
        drawn.append((c.shape, _draw_size(c, rng), aspect))
    radii = np.array([bounding_radius(*d) for d in drawn])
    half = spec.holder_nm / 2
    centres = np.zeros((spec.particles, 3))
    order = np.argsort(-radii, kind="stable")
    placed: list[int] = []
    for n, i in enumerate(order):
        r = radii[i] * 1.04
        xy = rng.uniform(-half + r, half - r, size=(12, 2)) if half > r else np.zeros((12, 2))
        if placed and rng.random() < spec.cluster:  # start beside an earlier particle: agglomerates
            k = placed[int(rng.integers(len(placed)))]
            ang = rng.uniform(0, 2 * np.pi, 12)
            dist = (radii[k] + radii[i]) * rng.uniform(0.75, 1.0, 12)
            xy = np.clip(centres[k, :2] + dist[:, None] * np.c_[np.cos(ang), np.sin(ang)], -half + r, half - r)
        z = np.full(len(xy), r)
        if placed:
            pc, pr = centres[placed], radii[placed] * 1.04
            d2 = ((xy[:, None, :] - pc[None, :, :2]) ** 2).sum(-1)
            reach = (r + pr[None, :]) ** 2
            lift = np.where(d2 < reach, pc[None, :, 2] + np.sqrt(np.clip(reach - d2, 0, None)), 0.0)
            z = np.maximum(z, lift.max(axis=1))
        best = int(np.argmin(z))
        centres[i] = (xy[best, 0], xy[best, 1], z[best])
        placed.append(int(i))
    centres[:, 2] += 0.25 * float(np.median(radii))  # levitated: a short free fall first
    return [Particle(i + 1, shape, size, aspect, tuple(float(x) for x in centres[i]), _random_quaternion(rng))
            for i, (shape, size, aspect) in enumerate(drawn)]
