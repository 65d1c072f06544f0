"""Does the per-particle confidence (#16, ``seg_confidence``) tell the wrong particles from the right ones?

On the shared annotated images (``bam-tio2-sem`` as SE, ``bam-tio2-tsem`` as TEM) the default in-process
analysis path (the shipped model through ``LocalStages`` prepare -> segment -> measure, no post-processing
option given: what ``semforge analyze`` does) gives every predicted particle its ``seg_confidence``. A predicted
particle is *matched* when its instance in the label image overlaps a human particle with IoU > 0.5 (unique
matching, as ``match_instances``), else *unmatched* (spurious, merged, split or misshaped). Per modality: the
number of particles, the share unmatched, the AUROC of ``seg_confidence`` for matched vs unmatched (1: every
matched particle more confident than every unmatched one; 0.5: no information) and the unmatched share among
the 10 % least confident particles vs the other 90 %; for all predicted particles and for those included in
the statistics. In-sample for the post-processing (chosen on these images), as ``default_path_check.py``.

Run (nice'd, one thread):
``OMP_NUM_THREADS=1 nice -n 10 python tests/bench/particle_confidence_check.py [--write TABLE.md] [--json F]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "services"))

import numpy as np  # noqa: E402

from semforge.analysis import MeasureOptions, instance_iou  # noqa: E402
from semforge.inference import create_segmenter  # noqa: E402
from semforge.pipeline import AnalysisOptions, LocalStages  # noqa: E402

SHARED = Path(os.environ.get("SEMFORGE_SHARED", REPO.parent / "shared"))
DATA = {"se": SHARED / "data" / "bam-tio2-sem", "tem": SHARED / "data" / "bam-tio2-tsem"}
LOW = 0.10  # the least confident share


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive scores above a negative) + half the ties (Mann-Whitney U / (n_pos n_neg))."""
    from scipy.stats import rankdata

    if not len(pos) or not len(neg):
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def image_particles(stages: LocalStages, path: Path, sample, opts: AnalysisOptions) -> list[dict]:
    """Every predicted particle of one image: seg_confidence, matched (IoU > 0.5 with a human particle), included."""
    prep = stages.prepare(path, path.stem, opts)
    measured = stages.measure(prep, stages.segment(prep, opts), opts)
    rows = min(prep.specimen_rows, sample.truth.shape[0])
    pred = measured.labels[:rows].astype(np.int64)
    iou = instance_iou(pred, sample.truth[:rows])  # (n_true, n_pred), ids 1..n
    best = iou.max(axis=0) if iou.size else np.zeros(int(pred.max(initial=0)))
    out = []
    for p in measured.table.particles:
        k = int(p["id"])
        if p["seg_confidence"] is None:
            raise RuntimeError("the shipped model gave no seg_confidence")
        out.append({"image": path.stem, "id": k, "seg_confidence": float(p["seg_confidence"]),
                    "matched": bool(k <= len(best) and best[k - 1] > 0.5), "included": not p["excluded"]})
    return out


def figures(parts: list[dict]) -> dict:
    conf = np.array([p["seg_confidence"] for p in parts], float)
    matched = np.array([p["matched"] for p in parts], bool)
    n = len(parts)
    order = np.argsort(conf, kind="stable")
    k = max(1, int(math.ceil(LOW * n))) if n else 0
    low = np.zeros(n, bool)
    low[order[:k]] = True
    share = lambda m: float((~matched[m]).mean()) if m.any() else float("nan")  # noqa: E731
    return {"n": n, "unmatched_share": share(np.ones(n, bool)), "auroc": auroc(conf[matched], conf[~matched]),
            "low_n": int(k), "low_cut": float(conf[order[k - 1]]) if n else float("nan"),
            "unmatched_low": share(low), "unmatched_rest": share(~low),
            "median_conf_matched": float(np.median(conf[matched])) if matched.any() else float("nan"),
            "median_conf_unmatched": float(np.median(conf[~matched])) if (~matched).any() else float("nan")}


HEAD = ("| modality | particles | n | unmatched % | AUROC (matched vs unmatched) | unmatched % in lowest 10 % "
        "(seg_confidence <= cut) | unmatched % in the other 90 % | median seg_confidence matched / unmatched |\n"
        "|---|---|---|---|---|---|---|---|")


def row(mod: str, which: str, f: dict) -> str:
    return (f"| {mod} | {which} | {f['n']} | {100 * f['unmatched_share']:.1f} | {f['auroc']:.3f} | "
            f"{100 * f['unmatched_low']:.1f} (n {f['low_n']}, cut {f['low_cut']:.3f}) | "
            f"{100 * f['unmatched_rest']:.1f} | "
            f"{f['median_conf_matched']:.3f} / {f['median_conf_unmatched']:.3f} |")


def run(modality: str, log) -> dict:
    from semforge.training.segmentation.crossval import load_annotated

    samples = {s.name: s for s in load_annotated(DATA[modality])}
    seg = create_segmenter("unetpp", threads=1)
    stages = LocalStages(seg)
    opts = AnalysisOptions(MeasureOptions(modality=modality, classify=False))  # nothing chosen: the defaults
    parts = []
    for i, ip in enumerate(sorted((DATA[modality] / "images").glob("*.tif"))):
        t0 = time.perf_counter()
        parts += image_particles(stages, ip, samples[ip.stem], opts)
        log(f"  {modality} {i + 1}/{len(samples)} {ip.stem} ({time.perf_counter() - t0:.1f} s)")
    applied = stages.segmenter(opts).model_version(modality)
    return {"model": applied, "all": figures(parts), "included": figures([p for p in parts if p["included"]]),
            "particles": parts}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modality", default="both", choices=("se", "tem", "both"))
    ap.add_argument("--write", help="write the printed table to this file")
    ap.add_argument("--json", help="figures and every particle (image, id, seg_confidence, matched) as JSON")
    args = ap.parse_args()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    out, lines = {}, []
    for mod in ("se", "tem") if args.modality == "both" else (args.modality,):
        if not (DATA[mod] / "images").is_dir():
            log(f"no annotated data at {DATA[mod]}; skipping {mod}")
            continue
        out[mod] = run(mod, log)
    if out:
        lines = ["Per-particle confidence (seg_confidence) vs human annotation, default in-process path; matched = "
                 "IoU > 0.5 with a human particle. Models: " + ", ".join(f"{m} {r['model']}" for m, r in out.items()),
                 "", HEAD]
        for mod, r in out.items():
            lines += [row(mod, "all predicted", r["all"]), row(mod, "included in statistics", r["included"])]
        text = "\n".join(lines)
        print(text)
        if args.write:
            Path(args.write).write_text(text + "\n")
    else:
        print("no annotated data found; nothing measured")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
