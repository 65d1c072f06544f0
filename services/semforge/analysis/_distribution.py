"""Size distributions to ISO 9276 / ISO 13322-1 conventions.

Notation (ISO 9276-1): ``Q_r(x)`` is the cumulative distribution of the size
``x`` weighted by quantity type ``r``: ``r = 0`` by number (every particle
counts once), ``r = 3`` by volume (each particle weighted by ``x**3``, the
volume of the sphere of diameter ``x``; use the ECD for ``x``). The quantile
``x_{p,r}`` is the size below which the fraction ``p`` of the quantity lies:
``x_{50,0}`` is the number-weighted median ("D50 by number"), ``x_{50,3}``
the volume-weighted median. Both are always labelled with their weighting.

Quantiles: the particles sorted by size, each placed at the midpoint of its
own share of the cumulative weight (``(W_i - w_i / 2) / W``), linear
interpolation between them, clamped at the ends. With equal weights this is
the Hazen plotting position (numpy ``method="hazen"``).

Confidence intervals: percentile bootstrap (resampling particles with
replacement, 2000 resamples, fixed seed), for the quantiles and the mean.

Enough particles? A distribution-free confidence interval for the
``p``-quantile from order statistics (Hahn & Meeker, *Statistical
Intervals*, 1991, sec. 5.2; ISO 16269-7 for the median) reaches a 95 %
confidence level only if ``1 - p**n - (1 - p)**n >= 0.95``: 29 particles for
x10 or x90, 6 for x50, 59 for x5/x95. Below that the quantile's interval is
the whole observed range and :func:`distribution_summary` warns. For
volume-weighted quantiles the same rule is applied to Kish's effective number
``(sum w)**2 / sum(w**2)``, which is much smaller than the count when a few
large particles carry most of the volume.

Fits: normal and log-normal by maximum likelihood, with the
Kolmogorov-Smirnov distance ``D`` to the empirical number distribution, its
p-value (approximate: the parameters were fitted to the same data, which
makes it conservative, cf. Lilliefors) and the AIC (lower is better) to
compare the two.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["weighted_quantile", "quantile_label", "min_count_for_quantile", "effective_count", "bootstrap_ci",
           "fit_distributions", "cumulative_curve", "density_histogram", "distribution_summary", "WEIGHTINGS",
           "plot_distribution", "shape_class_counts"]

#: quantity types: name -> ISO 9276-1 index r
WEIGHTINGS = {"number": 0, "volume": 3}


def _weights(x: np.ndarray, weighting: str) -> np.ndarray:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; valid: {', '.join(WEIGHTINGS)}")
    return np.ones_like(x) if weighting == "number" else x**3


def _clean(sizes: Sequence[float]) -> np.ndarray:
    x = np.asarray(sizes, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if np.any(x < 0):
        raise ValueError("sizes must be >= 0")
    return x


def weighted_quantile(sizes: Sequence[float], p: float | Sequence[float], *, weighting: str = "number") -> np.ndarray:
    """Quantile(s) ``x_{p,r}`` of sizes weighted by number (r=0) or volume (r=3); ``p`` in [0, 1].

    Examples
    --------
    >>> float(weighted_quantile([1, 2, 3, 4], 0.5))
    2.5
    """
    x = _clean(sizes)
    ps = np.atleast_1d(np.asarray(p, dtype=np.float64))
    if np.any((ps < 0) | (ps > 1)):
        raise ValueError("quantile fractions must be in [0, 1]")
    if x.size == 0:
        return np.full(ps.shape, np.nan)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    w = _weights(xs, weighting)
    total = w.sum()
    if total <= 0:
        return np.full(ps.shape, np.nan)
    pos = (np.cumsum(w) - w / 2) / total
    out = np.interp(ps, pos, xs)
    return out if np.ndim(p) else out[0]


def quantile_label(p: float, weighting: str) -> str:
    """ISO 9276-1 label of a quantile: ``x50,0`` (number) / ``x50,3`` (volume)."""
    return f"x{100 * p:g},{WEIGHTINGS[weighting]}"


def min_count_for_quantile(p: float, level: float = 0.95) -> int:
    """Smallest n for which a distribution-free ``level`` confidence interval of the ``p``-quantile exists.

    The interval [min, max] covers the quantile with probability
    ``1 - p**n - (1 - p)**n``; see the module notes.

    Examples
    --------
    >>> min_count_for_quantile(0.1), min_count_for_quantile(0.5), min_count_for_quantile(0.9)
    (29, 6, 29)
    """
    if not 0 < p < 1:
        raise ValueError("p must be in (0, 1)")
    n = 1
    while 1 - p**n - (1 - p) ** n < level:
        n += 1
    return n


def effective_count(sizes: Sequence[float], weighting: str = "number") -> float:
    """Kish's effective number of particles ``(sum w)**2 / sum(w**2)`` (= the count by number)."""
    x = _clean(sizes)
    w = _weights(x, weighting)
    s2 = float((w**2).sum())
    return float(w.sum() ** 2 / s2) if s2 > 0 else 0.0


_BOOT_BLOCK = 4_000_000  # resampled indices held at once (int64: 32 MB)


def bootstrap_ci(sizes: Sequence[float], stat: Callable[[np.ndarray], float], *, n_boot: int = 2000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of ``stat`` (particles resampled with replacement)."""
    x = _clean(sizes)
    if x.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    # resamples drawn a block of rows at a time (the same numbers as one (n_boot, N) draw, in the same order),
    # so memory stays ~32 MB however many particles a sample has (one draw: 16 bytes x n_boot x N)
    rows = max(1, min(n_boot, _BOOT_BLOCK // x.size))
    vals = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        idx = rng.integers(0, x.size, (min(rows, n_boot - start), x.size))
        vals[start:start + len(idx)] = [stat(x[i]) for i in idx]
    a = (1 - level) / 2
    lo, hi = np.quantile(vals, [a, 1 - a])
    return float(lo), float(hi)


def fit_distributions(sizes: Sequence[float]) -> dict[str, dict[str, float]]:
    """Normal and log-normal maximum-likelihood fits with KS distance, p-value and AIC.

    Returns
    -------
    dict
        ``{"normal": {"mean", "sd", "ks_d", "ks_p", "aic"},
        "lognormal": {"mu", "sigma", "median", "geometric_sd", "ks_d", "ks_p", "aic"}}``
        (``mu``, ``sigma`` of ln x; ``median = exp(mu)``, ``geometric_sd = exp(sigma)``).
    """
    from scipy import stats

    x = _clean(sizes)
    out: dict[str, dict[str, float]] = {}
    if x.size < 3:
        return out
    mean, sd = float(x.mean()), float(x.std(ddof=0))
    if sd > 0:
        ks = stats.kstest(x, "norm", args=(mean, sd))
        ll = float(stats.norm.logpdf(x, mean, sd).sum())
        out["normal"] = {"mean": mean, "sd": sd, "ks_d": float(ks.statistic), "ks_p": float(ks.pvalue),
                         "aic": 4.0 - 2.0 * ll}
    pos = x[x > 0]
    if pos.size >= 3:
        lx = np.log(pos)
        mu, sigma = float(lx.mean()), float(lx.std(ddof=0))
        if sigma > 0:
            ks = stats.kstest(pos, "lognorm", args=(sigma, 0, math.exp(mu)))
            ll = float(stats.lognorm.logpdf(pos, sigma, 0, math.exp(mu)).sum())
            out["lognormal"] = {"mu": mu, "sigma": sigma, "median": math.exp(mu), "geometric_sd": math.exp(sigma),
                                "ks_d": float(ks.statistic), "ks_p": float(ks.pvalue), "aic": 4.0 - 2.0 * ll}
    return out


def cumulative_curve(sizes: Sequence[float], *, weighting: str = "number") -> tuple[np.ndarray, np.ndarray]:
    """Steps of the empirical ``Q_r``: sorted sizes and the cumulative fraction up to and including each."""
    x = np.sort(_clean(sizes))
    w = _weights(x, weighting)
    q = np.cumsum(w) / w.sum() if w.sum() > 0 else np.zeros_like(x)
    return x, q


def density_histogram(sizes: Sequence[float], *, weighting: str = "number", bins: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Density ``q*_r`` per unit of ln x on log-spaced classes (ISO 9276-1 logarithmic density).

    Returns the class edges (``bins + 1``) and the densities (``bins``);
    ``sum(density * diff(ln edges)) = 1``. Default class count: Sturges,
    ``ceil(log2 n) + 1``.
    """
    x = _clean(sizes)
    x = x[x > 0]
    if x.size < 2 or x.min() == x.max():
        return np.array([]), np.array([])
    k = bins or int(math.ceil(math.log2(x.size)) + 1)
    edges = np.geomspace(x.min(), x.max() * (1 + 1e-12), k + 1)
    w = _weights(x, weighting)
    h, _ = np.histogram(x, bins=edges, weights=w)
    return edges, h / w.sum() / np.diff(np.log(edges))


def distribution_summary(sizes: Sequence[float], *, quantiles: Sequence[float] = (0.1, 0.5, 0.9),
                         weightings: Sequence[str] = ("number", "volume"), measure: str = "ecd", unit: str = "nm",
                         n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Everything a size distribution report needs, labelled.

    Parameters
    ----------
    sizes : sequence of float
        One size per included particle (the ECD for volume weighting).
    quantiles : fractions in (0, 1)
        Which quantiles (default x10, x50, x90).
    weightings : ``number`` and/or ``volume``
    measure, unit : str
        Written into the result and the warnings.

    Returns
    -------
    dict
        ``count``, ``mean`` with ``mean_ci``, ``sd``, ``quantiles`` (a list of
        ``{label, p, weighting, value, ci_low, ci_high, effective_count,
        min_count}``), ``fits`` (:func:`fit_distributions`), ``warnings``
        (strings), ``level``, ``method`` (text naming the conventions).
    """
    x = _clean(sizes)
    qs = list(quantiles)
    rows = []
    warnings = []
    for wname in weightings:
        n_eff = effective_count(x, wname) if x.size else 0.0
        for p in qs:
            need = min_count_for_quantile(p, level)
            value = float(weighted_quantile(x, p, weighting=wname)) if x.size else float("nan")
            lo, hi = bootstrap_ci(x, lambda s, p=p, wname=wname: float(weighted_quantile(s, p, weighting=wname)),
                                  n_boot=n_boot, level=level, seed=seed)
            label = quantile_label(p, wname)
            rows.append({"label": label, "p": p, "weighting": wname, "value": value, "ci_low": lo, "ci_high": hi,
                         "effective_count": n_eff, "min_count": need})
            if n_eff < need:
                eff = "" if wname == "number" else f" (effective number {n_eff:.1f} by volume)"
                warnings.append(f"{label} of {measure} ({wname}-weighted) needs at least {need} particles for a "
                                f"{100 * level:g} % distribution-free confidence interval; {x.size} measured{eff}")
    mean = float(x.mean()) if x.size else float("nan")
    return {
        "measure": measure, "unit": unit, "count": int(x.size), "level": level,
        "mean": mean, "mean_ci": bootstrap_ci(x, np.mean, n_boot=n_boot, level=level, seed=seed),
        "sd": float(x.std(ddof=1)) if x.size > 1 else float("nan"),
        "quantiles": rows, "fits": fit_distributions(x), "warnings": warnings,
        "method": ("ISO 9276-1 quantiles x_{p,r} (r=0 number, r=3 volume = ECD^3), midpoint plotting positions; "
                   f"{100 * level:g} % percentile-bootstrap intervals ({n_boot} resamples, seed {seed}); "
                   "ML normal/log-normal fits with Kolmogorov-Smirnov D"),
    }


def plot_distribution(summary: dict[str, Any], sizes: Sequence[float], path: str, *, title: str = "") -> None:
    """Cumulative (number and volume) and log-density plots with the fitted curves, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    from scipy import stats

    x = _clean(sizes)
    unit, measure = summary["unit"], summary["measure"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for wname, colour in (("number", "C0"), ("volume", "C3")):
        cx, cq = cumulative_curve(x, weighting=wname)
        a1.step(cx, cq, where="post", color=colour, label=f"Q{WEIGHTINGS[wname]} ({wname})")
        for q in summary["quantiles"]:
            if q["weighting"] == wname:
                a1.errorbar(q["value"], q["p"], xerr=[[q["value"] - q["ci_low"]], [q["ci_high"] - q["value"]]],
                            fmt="o", color=colour, ms=3, capsize=3)
    grid = np.linspace(max(x.min() * 0.8, 1e-9), x.max() * 1.1, 300)
    fits = summary["fits"]
    if "lognormal" in fits:
        f = fits["lognormal"]
        a1.plot(grid, stats.lognorm.cdf(grid, f["sigma"], 0, f["median"]), "k--", lw=1,
                label=f"log-normal fit (KS D={f['ks_d']:.3f})")
    if "normal" in fits:
        f = fits["normal"]
        a1.plot(grid, stats.norm.cdf(grid, f["mean"], f["sd"]), "k:", lw=1, label=f"normal fit (KS D={f['ks_d']:.3f})")
    a1.set_xlabel(f"{measure} / {unit}")
    a1.set_ylabel("cumulative fraction Q_r")
    a1.legend(fontsize=8)
    edges, dens = density_histogram(x)
    if dens.size:
        a2.stairs(dens, edges, color="C0", label="q*0 (number, per ln x)")
        if "lognormal" in fits:
            f = fits["lognormal"]
            a2.plot(grid, stats.norm.pdf(np.log(grid), f["mu"], f["sigma"]), "k--", lw=1, label="log-normal fit")
        a2.set_xscale("log")
        a2.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    a2.set_xlabel(f"{measure} / {unit} (log scale)")
    a2.set_ylabel("density per ln x")
    a2.legend(fontsize=8)
    fig.suptitle(title or f"{measure}: n = {summary['count']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def shape_class_counts(particles: Sequence[dict[str, Any]], *, image_key: str = "image") -> dict[str, dict[str, int]]:
    """Included particles per shape class, per image and pooled (``"all"``), with the share left ``unknown``.

    Returns ``{image: {shape: count, ...}, ..., "all": {...}}``; shapes are sorted by pooled count.
    """
    from collections import Counter

    per: dict[str, Counter] = {}
    pooled: Counter = Counter()
    for p in particles:
        if p.get("excluded", False):
            continue
        shape = p.get("shape") or "unknown"
        per.setdefault(str(p.get(image_key, "")), Counter())[shape] += 1
        pooled[shape] += 1
    order = [s for s, _ in pooled.most_common()]
    out = {img: {s: c[s] for s in order if c[s]} for img, c in sorted(per.items())}
    out["all"] = {s: pooled[s] for s in order}
    return out
