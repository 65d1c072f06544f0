"""How real do synthetic images look? Figures without any downloaded network.

* ``histogram_distance`` — Wasserstein-1 distance between the gray-value
  distributions (0 = identical, in units of the full gray range).
* ``spectrum_distance`` — RMS difference of the radially averaged log power
  spectra (texture, noise and blur at every scale), each image mean-normalized.
* ``discriminator_accuracy`` — a small CNN trained to tell real from synthetic
  64 px crops on one half of the images, scored on the other half: 0.5 means it
  cannot tell them apart (realistic), 1.0 trivially separable.
"""

from __future__ import annotations

import numpy as np

__all__ = ["histogram_distance", "radial_spectrum", "spectrum_distance", "discriminator_accuracy"]


def histogram_distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    qa = np.quantile(np.concatenate([x.ravel() for x in a]), np.linspace(0, 1, 513))
    qb = np.quantile(np.concatenate([x.ravel() for x in b]), np.linspace(0, 1, 513))
    return float(np.mean(np.abs(qa - qb)))


def radial_spectrum(img: np.ndarray, bins: int = 64) -> np.ndarray:
    g = np.asarray(img, np.float64)
    g = (g - g.mean()) / max(g.std(), 1e-9)
    n = min(g.shape)
    g = g[:n, :n] * np.outer(np.hanning(n), np.hanning(n))
    p = np.abs(np.fft.fftshift(np.fft.fft2(g))) ** 2
    yy, xx = np.indices(p.shape) - n // 2
    r = np.sqrt(yy ** 2 + xx ** 2) / (n / 2)
    idx = np.clip((r * bins).astype(int), 0, bins)
    s = np.bincount(idx.ravel(), weights=p.ravel(), minlength=bins + 1)[:bins]
    c = np.bincount(idx.ravel(), minlength=bins + 1)[:bins]
    return np.log10(s / np.maximum(c, 1) + 1e-12)


def spectrum_distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    sa = np.mean([radial_spectrum(x) for x in a], axis=0)
    sb = np.mean([radial_spectrum(x) for x in b], axis=0)
    return float(np.sqrt(np.mean((sa - sb) ** 2)))


def discriminator_accuracy(real: list[np.ndarray], fake: list[np.ndarray], *, crop: int = 64, steps: int = 300,
                           seed: int = 0) -> float:
    """Held-out accuracy of a small real-vs-synthetic CNN (images split in halves: train / test)."""
    import torch
    from torch import nn

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)

    def crops(images, n):
        out = []
        for _ in range(n):
            a = images[int(rng.integers(len(images)))]
            y, x = int(rng.integers(a.shape[0] - crop + 1)), int(rng.integers(a.shape[1] - crop + 1))
            out.append(a[y:y + crop, x:x + crop])
        return torch.from_numpy(np.stack(out)[:, None].astype(np.float32))

    half_r, half_f = max(1, len(real) // 2), max(1, len(fake) // 2)
    tr_r, te_r, tr_f, te_f = real[:half_r], real[half_r:] or real, fake[:half_f], fake[half_f:] or fake
    net = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                        nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(steps):
        x = torch.cat([crops(tr_r, 16), crops(tr_f, 16)])
        y = torch.cat([torch.ones(16, 1), torch.zeros(16, 1)])
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()
    with torch.no_grad():
        pr = (net(crops(te_r, 200)) > 0).float().mean().item()
        pf = (net(crops(te_f, 200)) <= 0).float().mean().item()
    return (pr + pf) / 2
