"""Cross-validated segmentation figures on the real annotated SEM and TSEM images (make segcheck).

Usage:
  python tests/bench/segmentation_cv.py [--modality se|tem|both] [--adapted DIR ...] [--routes NAME,...]
                                        [--no-refine] [--write docs/segmentation_cv.md]

Per modality (SE: ../shared/data/bam-tio2-sem, transmission: ../shared/data/bam-tio2-tsem) and per
route (a network, or the classical Otsu segmenter, at an inference scale):

* ``fixed``: the analysis defaults (threshold 0.5, watershed h 0.5, or UECS) -- nothing tuned;
* ``CV``: threshold, separation (watershed h / seeded growth from the border channel / UECS), boundary
  offset and (transmission) spurious-object filter chosen on 4 folds of a 5-fold split (contiguous
  blocks of the sorted image ids), scored on the 5th; the held-out figures of the 5 folds are pooled;
* ``CV + boundary refinement`` (network routes, unless ``--no-refine``): the same grid with one more
  dimension, the gray-level boundary refinement of ``analysis/_refine.refine_boundaries`` (none, or
  method x band width, see :data:`REFINE`), applied after the spurious-object filter and before the
  boundary offset;
* ``RECOMMENDED base`` (``--routes shipped-rec``): threshold, separation and filter fixed at the
  shipped defaults (``RECOMMENDED`` in analysis/_separate.py), only the boundary correction chosen
  by CV: offset -1 / 0 / +1 px, or offset and refinement; and ``RECOMMENDED exactly (fixed)``, the
  shipped default itself, nothing chosen. Adapted models (``--adapted``) get these rows too.

Network outputs and per-image statistics are cached under out/cv/ (delete it to recompute).
An adapted model directory (``semforge adapt`` output with ``folds.json``) is scored image by image
with the version that did not see the image, even unlabeled.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "services"))

from dataclasses import dataclass  # noqa: E402

from semforge.analysis._refine import refine_boundaries  # noqa: E402
from semforge.inference import SHIPPED, OnnxSegmenter, ThresholdSegmenter  # noqa: E402
from semforge.training.segmentation.crossval import (BIN_NAMES, PostParams, _refine_labels, aggregate,  # noqa: E402
                                            cross_validate, image_stats, instance_features,
                                            instances_from_probabilities, load_annotated, predict_probabilities)

DATA = {"se": REPO.parent / "shared/data/bam-tio2-sem", "tem": REPO.parent / "shared/data/bam-tio2-tsem"}
CACHE = REPO / "out" / "cv"


@dataclass(frozen=True)
class Refine:
    """Boundary refinement of the separated (and filtered) instances on the gray image."""

    method: str = "mid"
    band_px: int = 2
    level: float = 0.5
    sigma: float = 0.0
    scope: str = "particle"

    def label(self) -> str:
        s = f"refine({self.method}, band={self.band_px}px"
        if self.method == "mid" and self.level != 0.5:
            s += f", level={self.level:g}"
        if self.sigma:
            s += f", sigma={self.sigma:g}"
        if self.scope != "particle":
            s += f", {self.scope}"
        return s + ")"


#: The refinement dimension of the CV grid. The first five were fixed after a look at 4 images per
#: modality (the first 4 sorted ids = fold 1; shipped model, one post-processing): sigma 0 beat 1 and
#: the midway threshold beat Otsu's on both modalities there; band widths 1-4 px are all kept. The
#: last two (one threshold per agglomerate; smoothing sigma 1) were added after the first CV run.
REFINE = (Refine("mid", 1), Refine("mid", 2), Refine("mid", 3), Refine("mid", 4), Refine("otsu", 3),
          Refine("mid", 2, scope="agglomerate"), Refine("mid", 2, sigma=1.0))


@dataclass(frozen=True)
class Variant:
    """A post-processing variant (``PostParams``) with an optional boundary refinement."""

    post: PostParams
    refine: Refine | None = None

    def __getattr__(self, name):  # the PostParams fields (threshold, separate, h, ...)
        if name in ("post", "refine") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.post, name)

    def label(self) -> str:
        base = self.post.label()
        return base if self.refine is None else f"{base} {self.refine.label()}"


def refined_grid(modality: str, classes: int) -> list[Variant]:
    """:func:`grid` plus, for its watershed variants (the only separation ever chosen), every
    refinement of :data:`REFINE`."""
    out: list[Variant] = []
    for v in grid(modality, classes):
        out.append(Variant(v))
        if v.separate == "watershed":
            out += [Variant(v, r) for r in REFINE]
    return out


def recommended_grid(modality: str, refine: bool) -> list[Variant]:
    """The shipped base post-processing of the modality (threshold, separation, watershed h and contrast
    filter of ``RECOMMENDED`` in analysis/_separate.py) with only the boundary correction left to
    choose: offset -1 / 0 / +1 px and, with ``refine``, every refinement of :data:`REFINE`."""
    from semforge.analysis._separate import RECOMMENDED

    rec = RECOMMENDED[modality]
    base = PostParams(threshold=rec["threshold"], separate=rec["separate"], h=rec.get("watershed_h", 0.5),
                      min_contrast=rec.get("min_contrast", 0.0))
    out = []
    for off in (-1, 0, 1):
        v = PostParams(**{**base.__dict__, "offset_px": off})
        out.append(Variant(v))
        if refine:
            out += [Variant(v, r) for r in REFINE]
    return out


def recommended_variant(modality: str) -> Variant:
    """Exactly the shipped default post-processing of the modality (``RECOMMENDED``, refinement included):
    nothing chosen, a fixed row."""
    from semforge.analysis._separate import RECOMMENDED

    rec = RECOMMENDED[modality]
    post = PostParams(threshold=rec["threshold"], separate=rec["separate"], h=rec.get("watershed_h", 0.5),
                      min_contrast=rec.get("min_contrast", 0.0), offset_px=rec.get("grow_px", 0))
    band = rec.get("refine_px", 0)
    return Variant(post, Refine("mid", band) if band else None)


SE_H = (0.5, 1.0)  # the SE watershed h values of the grid (--se-h widens it)


def grid(modality: str, classes: int) -> list[PostParams]:
    """The candidate post-processing variants.

    SE: fixed before looking at any figure. Transmission: the contrast filter's values were first
    0.04 only (a guess of the units); after the contrast of the shipped model's objects on 10 of
    the images was seen (human particles >= 0.42 at the 5th percentile, unmatched ones <= 0.17 at
    the 95th) they became 0.1 / 0.2 / 0.3, and for CPU the watershed h 1.0 (never chosen: merges
    are rare in TSEM) was dropped.
    """
    hs = SE_H if modality == "se" else (0.5,)
    bases = [PostParams(threshold=t, separate="watershed", h=h) for t in (0.4, 0.5, 0.6) for h in hs]
    if classes == 2:
        bases += [PostParams(threshold=t, separate="seeded", marker=m) for t in (0.4, 0.5) for m in (0.8, 0.95)]
    bases += [PostParams(threshold=0.5, separate="uecs")]
    out = []
    for b in bases:
        for off in (-1, 0, 1):
            out.append(PostParams(**{**b.__dict__, "offset_px": off}))
            if modality == "tem":
                out += [PostParams(**{**b.__dict__, "offset_px": off, "min_contrast": c}) for c in (0.1, 0.2, 0.3)]
    return out


FIXED = {"watershed": PostParams(), "uecs": PostParams(separate="uecs")}


class Model:
    def __init__(self, key: str, modality: str, channels, *, per_image=None, cache: str | None = None):
        self.key, self.modality, self.channels, self.per_image = key, modality, channels, per_image
        self.cache = cache or key  # the name of its cached outputs (carries a hash of the weights)

    def probs(self, s, scale: float) -> np.ndarray:
        d = CACHE / "probs" / self.modality / f"{self.cache}@{scale:g}"
        f = d / f"{s.name}.npy"
        if f.exists():
            return np.load(f).astype(np.float32)
        fn = self.per_image(s.name) if self.per_image else self.channels
        t0 = time.perf_counter()
        p = predict_probabilities(fn, s.gray, scale=scale)
        dt = time.perf_counter() - t0
        d.mkdir(parents=True, exist_ok=True)
        np.save(f, p.astype(np.float16))
        times = d / "seconds.json"
        rec = json.loads(times.read_text()) if times.exists() else {}
        rec[s.name] = dt
        times.write_text(json.dumps(rec))
        return p


class MeanOfScales(Model):
    """Mean of a model's probabilities at several input scales (test-time multi-scale fusion)."""

    def __init__(self, model: Model, scales: tuple[float, ...]):
        tag = "-mean" + "+".join(f"{x:g}" for x in scales)
        super().__init__(model.key + tag, model.modality, None, cache=model.cache + tag)
        self.model, self.scales = model, scales

    def probs(self, s, scale: float) -> np.ndarray:
        return np.mean([self.model.probs(s, x * scale) for x in self.scales], axis=0)


def with_flips(model: Model, flips: int) -> Model:
    """The same network, its outputs the mean over ``flips`` mirrored inputs (test-time augmentation)."""
    from semforge.inference.tta import flip_mean

    tag = f"-flip{flips}"
    if model.per_image:
        per = lambda name: (lambda g, fn=model.per_image(name): flip_mean(fn, g, flips))  # noqa: E731
        return Model(model.key + tag, model.modality, None, per_image=per, cache=model.cache + tag)
    return Model(model.key + tag, model.modality, lambda g: flip_mean(model.channels, g, flips),
                 cache=model.cache + tag)


def seconds_of(model: Model, scale: float) -> float:
    if isinstance(model, MeanOfScales):
        return sum(seconds(model.model, x * scale) for x in model.scales)
    return seconds(model, scale)


def shipped(modality: str) -> Model:
    """The shipped model of the modality; its cache key carries the hash of model.onnx (replaced models never mix)."""
    import hashlib

    from semforge.inference import model_dir

    digest = hashlib.md5((model_dir(SHIPPED[modality]) / "model.onnx").read_bytes()).hexdigest()[:8]
    seg = OnnxSegmenter(SHIPPED[modality], threads=1)
    return Model(f"shipped-{digest}", modality, seg.predict_channels)


def classical(modality: str) -> Model:
    seg = ThresholdSegmenter()
    return Model("classical", modality, lambda g: seg.predict(g, modality=modality)[None])


def adapted(path: Path, modality: str) -> Model:
    """``path/folds.json``: {"versions": {"1": [image names it saw], ...}} -> use a version that did not see it."""
    rec = json.loads((path / "folds.json").read_text())
    segs = {}

    def per_image(name: str):
        for v, seen in sorted(rec["versions"].items()):
            if name not in seen:
                if v not in segs:
                    segs[v] = OnnxSegmenter(path.name, version=int(v), repo=path.parent, threads=1)
                return segs[v].predict_channels
        raise ValueError(f"every version of {path} saw {name}")
    # the cache key carries the hash of every version's weights: a model re-made under the same folder name
    # never reuses the outputs of the old one
    import hashlib

    h = hashlib.md5()
    for v in sorted(rec["versions"]):
        h.update((path / v / "model.onnx").read_bytes())
    key = rec.get("key", path.name)
    return Model(key, modality, None, per_image=per_image, cache=f"{key}-{h.hexdigest()[:8]}")


def table(model: Model, samples, scale: float, variants: list[PostParams], log) -> dict:
    f = CACHE / "tables" / model.modality / f"{model.cache}@{scale:g}.pkl"
    tab: dict = pickle.loads(f.read_bytes()) if f.exists() else {}
    dark = model.modality == "tem"
    todo = [v for v in variants if v.label() not in tab or any(s.name not in tab[v.label()] for s in samples)]
    if todo:
        for i, s in enumerate(samples):
            p = model.probs(s, scale)
            base_cache: dict = {}
            for v in todo:
                if s.name in tab.get(v.label(), {}):
                    continue
                key = (v.threshold, v.separate, v.h, v.marker)
                if key not in base_cache:  # separation once per base; offsets/filters reuse it
                    b = instances_from_probabilities(
                        p, PostParams(threshold=v.threshold, separate=v.separate, h=v.h, marker=v.marker),
                        pixel_size_nm=s.pixel_size_nm)
                    base_cache[key] = (b, instance_features(b, p, s.gray, dark) if dark else None)
                b, feats = base_cache[key]
                r = v.refine if isinstance(v, Variant) else None
                post = v.post if isinstance(v, Variant) else v
                if r is None:
                    lab = _refine_labels(b, p, s.gray, post, dark, feats)
                else:  # filter -> refinement -> offset; the refined labels are shared by the offsets
                    rkey = (key, post.min_area_px, post.min_mean_prob, post.min_contrast, r)
                    if rkey not in base_cache:
                        f0 = _refine_labels(b, p, s.gray, PostParams(**{**post.__dict__, "offset_px": 0}), dark, feats)
                        base_cache[rkey] = refine_boundaries(f0, s.gray, dark=dark, band_px=r.band_px,
                                                             method=r.method, level=r.level, sigma=r.sigma,
                                                             scope=r.scope)
                    lab = _refine_labels(base_cache[rkey], p, s.gray, PostParams(offset_px=post.offset_px), dark)
                tab.setdefault(v.label(), {})[s.name] = image_stats(lab, s.truth, s.pixel_size_nm)
            log(f"  {model.modality} {model.key}@{scale:g}: {i + 1}/{len(samples)} {s.name}")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(pickle.dumps(tab))
    return {v.label(): tab[v.label()] for v in variants}


def seconds(model: Model, scale: float) -> float:
    f = CACHE / "probs" / model.modality / f"{model.cache}@{scale:g}" / "seconds.json"
    return float(np.median(list(json.loads(f.read_text()).values()))) if f.exists() else float("nan")


def row(label: str, fig: dict, chosen: str, secs: float) -> str:
    a = fig["anatomy"]
    rb = fig["recall_by_size"]
    return (f"| {label} | {fig['foreground_iou']:.3f} | **{fig['instance_f1']:.3f}** | {fig['ap50_95']:.3f} | "
            f"{fig['count_pred']} / {fig['count_true']} ({fig['count_error'] * 100:+.0f} %) | "
            f"{fig['median_ecd_pred']:.0f} / {fig['median_ecd_true']:.0f} ({fig['median_ecd_error'] * 100:+.1f} %) | "
            f"{fig['boundary_offset_px']:+.2f} | "
            f"{a['matched'] * 100:.0f} / {a['merged'] * 100:.0f} / {a['split'] * 100:.0f} / {a['missed'] * 100:.0f} / "
            f"{a['misshaped'] * 100:.0f} | {fig['spurious'] * 100:.0f} | "
            + " / ".join(f"{rb[b]:.2f}" for b in BIN_NAMES) + f" | {secs:.2f} | {chosen} |")


HEAD = ("| route | fg IoU | F1@0.5 | AP@0.5:0.95 | count pred / human | median ECD nm pred / human | "
        "boundary offset px | human particles: matched / merged / split / missed / misshaped % | spurious % of "
        "predictions | recall@0.5 by human ECD <100 / 100-150 / 150-250 / >=250 nm | s / image (network, 1 thread) | "
        "post-processing (CV: chosen per fold; final = chosen on all 20) |\n" + "|" + "---|" * 12)


def run_modality(modality: str, routes: list[tuple[str, Model, float, str]], log) -> tuple[str, dict]:
    """``how``: ``cv`` (the grid), ``cv+refine`` (the grid with the refinement dimension), ``rec`` /
    ``rec+refine`` (:func:`recommended_grid`) or a key of FIXED."""
    samples = load_annotated(DATA[modality])
    names = [s.name for s in samples]
    lines, out = [HEAD], {}
    for label, model, scale, how in routes:
        classes = 1 if model.key == "classical" else 2
        if how in ("cv", "cv+refine", "rec", "rec+refine"):
            if how.startswith("rec"):
                variants = recommended_grid(modality, how == "rec+refine")
            else:
                variants = grid(modality, classes) if how == "cv" else refined_grid(modality, classes)
            tab = table(model, samples, scale, variants, log)
            cv = cross_validate(tab, names)
            fig = cv["figures"]
            from collections import Counter

            chosen = "; ".join(f"{n}x {v}" for v, n in Counter(cv["chosen"]).most_common()) + f"; final: {cv['final']}"
            out[label] = {"figures": fig, "chosen": cv["chosen"], "final": cv["final"]}
        else:
            v = recommended_variant(modality) if how == "recommended" else FIXED[how]
            tab = table(model, samples, scale, [v], log)
            fig = aggregate([tab[v.label()][n] for n in names])
            chosen = f"fixed: {v.label()}"
            out[label] = {"figures": fig, "fixed": v.label()}
        lines.append(row(label, fig, chosen, seconds_of(model, scale)))
        log(lines[-1])
    return "\n".join(lines), out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modality", default="both", choices=("se", "tem", "both"))
    ap.add_argument("--adapted", nargs="*", default=[], help="semforge adapt output folders (with folds.json)")
    ap.add_argument("--scales", default="1,1.5")
    ap.add_argument("--only-adapted", action="store_true", help="rows of the --adapted models only")
    ap.add_argument("--routes", default="",
                    help="comma list of the non-adapted rows to compute (default all): classical-fixed, "
                         "classical-cv, shipped-uecs, shipped-watershed, shipped-cv, shipped-refine, "
                         "shipped-rec, scales")
    ap.add_argument("--flips", type=int, default=1, choices=(1, 2, 4, 8),
                    help="also score the networks with test-time flips (mean over that many mirrored inputs)")
    ap.add_argument("--se-h", default="0.5,1",
                    help="SE watershed h values of the CV grid (default 0.5,1: the grid fixed before any figure)")
    ap.add_argument("--no-refine", action="store_true", help="no 'CV + boundary refinement' rows")
    ap.add_argument("--write")
    ap.add_argument("--json")
    args = ap.parse_args()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    global SE_H
    try:
        SE_H = tuple(float(x) for x in args.se_h.split(",") if x.strip())
    except ValueError:
        ap.error(f"--se-h wants comma-separated numbers, got {args.se_h!r}")
    if not SE_H or min(SE_H) <= 0:
        ap.error(f"--se-h wants positive watershed h values, got {args.se_h!r}")
    if "flips" in {x.strip() for x in args.routes.split(",")} and args.flips == 1:
        ap.error("route 'flips' needs --flips 2, 4 or 8")
    mods = ("se", "tem") if args.modality == "both" else (args.modality,)
    parts, results = [], {}
    for mod in mods:
        if not (DATA[mod] / "images").is_dir():
            log(f"no data at {DATA[mod]}; skipping {mod}")
            continue
        sh, cl = shipped(mod), classical(mod)
        named = [("classical-fixed", ("classical Otsu / watershed (fixed)", cl, 1.0, "watershed")),
                 ("classical-cv", ("classical Otsu (CV)", cl, 1.0, "cv")),
                 ("shipped-uecs", ("shipped / uecs (fixed)", sh, 1.0, "uecs")),
                 ("shipped-watershed", ("shipped / watershed (fixed)", sh, 1.0, "watershed")),
                 ("shipped-cv", ("shipped (CV)", sh, 1.0, "cv"))]
        if not args.no_refine:
            named.append(("shipped-refine", ("shipped (CV + boundary refinement)", sh, 1.0, "cv+refine")))
            named.append(("shipped-rec", ("shipped, RECOMMENDED base, CV of the offset only", sh, 1.0, "rec")))
            named.append(("shipped-rec", ("shipped, RECOMMENDED base, CV of offset + boundary refinement",
                                          sh, 1.0, "rec+refine")))
            named.append(("shipped-rec", ("shipped, RECOMMENDED exactly (fixed)", sh, 1.0, "recommended")))
        extra = [float(x) for x in args.scales.split(",") if float(x) != 1.0]
        for s in extra:
            named.append(("scales", (f"shipped, input x{s:g} (CV)", sh, s, "cv")))
        if extra:
            ms = MeanOfScales(sh, (1.0, *extra))
            named.append(("scales", (f"shipped, mean of inputs x1 and x{'/'.join(f'{x:g}' for x in extra)} (CV)",
                                     ms, 1.0, "cv")))
        if args.flips > 1:
            shf = with_flips(sh, args.flips)
            named.append(("flips", (f"shipped, flips {args.flips} (CV + boundary refinement)", shf, 1.0, "cv+refine")))
        want = {x.strip() for x in args.routes.split(",") if x.strip()}
        unknown = want - {k for k, _ in named} - {"shipped-refine", "shipped-rec", "scales", "flips"}
        if unknown:
            ap.error(f"unknown route(s) {', '.join(sorted(unknown))}")
        routes = [r for k, r in named if not want or k in want]
        if args.only_adapted:
            routes = []
        for a in args.adapted:
            p = Path(a)
            if (p / "folds.json").exists() and json.loads((p / "folds.json").read_text()).get("modality") == mod:
                m = adapted(p, mod)
                if args.flips > 1:
                    mf = with_flips(m, args.flips)
                    routes.append((f"{mf.key} (CV + boundary refinement)", mf, 1.0, "cv+refine"))
                    routes.append((f"{mf.key}, RECOMMENDED exactly (fixed)", mf, 1.0, "recommended"))
                routes.append((f"{m.key} / watershed (fixed)", m, 1.0, "watershed"))
                routes.append((f"{m.key} (CV)", m, 1.0, "cv"))
                if not args.no_refine:
                    routes.append((f"{m.key} (CV + boundary refinement)", m, 1.0, "cv+refine"))
                    routes.append((f"{m.key}, RECOMMENDED base, CV of the offset only", m, 1.0, "rec"))
                    routes.append((f"{m.key}, RECOMMENDED base, CV of offset + boundary refinement", m, 1.0,
                                   "rec+refine"))
                    routes.append((f"{m.key}, RECOMMENDED exactly (fixed)", m, 1.0, "recommended"))
        text, res = run_modality(mod, routes, log)
        parts.append((mod, text))
        results[mod] = res
    for mod, text in parts:
        print(f"\n## {mod}\n\n{text}\n")
    if args.write:
        Path(args.write).write_text("\n".join(f"## {m}\n\n{t}\n" for m, t in parts))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
