"""Test-time augmentation: the mean of a network's outputs over flips of its input.

``flip_mean(fn, gray, flips)`` with ``fn(gray) -> (C, H, W)``: ``flips`` = 1 (the plain output),
2 (+ left-right mirror), 4 (the four mirrors: none, left-right, up-down, both) or 8 (those four and
their transposes: the whole dihedral group of the square). Each output is mapped back to the
image's orientation before the mean, so for a network that were exactly equivariant the result
equals the plain output; for a real one it averages out orientation-dependent errors at the cost
of ``flips`` x the network time.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["FLIPS", "flip_mean"]

FLIPS = (1, 2, 4, 8)


def _views(flips: int):
    """(forward, inverse) pairs on (..., H, W) arrays."""
    ident = lambda a: a  # noqa: E731
    lr = lambda a: a[..., :, ::-1]  # noqa: E731
    ud = lambda a: a[..., ::-1, :]  # noqa: E731
    both = lambda a: a[..., ::-1, ::-1]  # noqa: E731
    views = [(ident, ident), (lr, lr), (ud, ud), (both, both)][: min(flips, 4)]
    if flips == 8:
        t = lambda a: np.swapaxes(a, -1, -2)  # noqa: E731
        views += [(lambda a, f=f: t(f(a)), lambda a, f=f: f(t(a))) for f, _ in list(views)]
    return views


def flip_mean(fn: Callable[[np.ndarray], np.ndarray], gray: np.ndarray, flips: int = 4) -> np.ndarray:
    """Mean of ``fn`` over ``flips`` mirrored views of ``gray``, each brought back to the image's orientation."""
    if flips not in FLIPS:
        raise ValueError(f"flips must be one of {FLIPS}, got {flips!r}")
    g = np.asarray(gray, np.float32)
    if flips == 1:
        return np.asarray(fn(g), np.float32)
    acc = None
    for fwd, inv in _views(flips):
        out = inv(np.asarray(fn(np.ascontiguousarray(fwd(g))), np.float32))
        acc = out.copy() if acc is None else acc + out
    return (acc / flips).astype(np.float32)
