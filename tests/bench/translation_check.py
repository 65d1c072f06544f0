"""The annotation-free loop, end to end, with its figures: docs/translation.md.

    render (recipes se, se-rods) -> translate (CycleGAN) -> content check -> train a segmenter on the
    accepted translations -> evaluate on the 20 real images, next to segmenters trained the same way
    (same scenes, same steps) on the direct SE-like renders and on all translations unchecked

Controls for the check itself: the same check on the direct renders (the checking segmenter's
own domain) and on the real images against the human masks (what a perfectly realistic
translation would score).  With ``OUT/snapshots`` from ``--snapshot-every``, the check and
the realism figures are also followed along the translator run.

Usage (after `semforge train translator ... --out out/translators/bam-tio2-long`):
    python tests/bench/translation_check.py --translator out/translators/bam-tio2-long \
        --scenes <rendered se-tio2 and se-rods datasets...> --write docs/translation.md
The translator is trained on the shared real images, so neither it nor the
segmenter trained on its output is committed; the figures are.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "services"))

from semforge.analysis import detect_databar, load_image, to_gray_float  # noqa: E402
from semforge.training.translation.apply import check_scene_images, find_scenes, summarize_checks, translate_scenes  # noqa: E402
from semforge.training.translation.content_check import CheckThresholds, content_check  # noqa: E402
from semforge.training.translation.realism import discriminator_accuracy, histogram_distance, spectrum_distance  # noqa: E402
from semforge.training.translation.train import load_generator  # noqa: E402


def _real(data: Path):
    import tifffile
    from skimage.measure import label

    out = []
    for p in sorted((data / "images").glob("*.tif")):
        img = load_image(p)
        rows = detect_databar(img.pixels)
        m = data / "masks" / f"{p.stem}_m.tif"
        inst = label(tifffile.imread(m)[:rows] > 0, connectivity=1) if m.exists() else None
        out.append((p.stem, to_gray_float(img.pixels)[:rows], inst))
    return out


def plot_curve(tdir: Path, png: Path, marks: dict | None = None) -> None:
    """Loss curves of a translator run (running means over 50 iterations), with optional per-snapshot marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = json.loads((tdir / "curve.json").read_text())
    it = np.array([c["iteration"] for c in curve])
    fig, ax = plt.subplots(1, 2 if marks else 1, figsize=(10 if marks else 6, 3.4), squeeze=False)
    k = np.ones(50) / 50
    for key, lab in (("gan", "G adversarial"), ("cycle", "cycle (L1)"), ("identity", "identity (L1)"), ("d", "D")):
        v = np.array([c[key] for c in curve])
        ax[0, 0].plot(it[len(k) - 1:], np.convolve(v, k, mode="valid"), label=lab)
    ax[0, 0].set_xlabel("iteration")
    ax[0, 0].set_yscale("log")
    ax[0, 0].legend(fontsize=7)
    ax[0, 0].set_title(f"{tdir.name}: losses (mean of 50)", fontsize=9)
    if marks:
        xs = sorted(marks)
        ax[0, 1].plot(xs, [marks[x]["median_foreground_iou"] for x in xs], "o-", label="median fg IoU")
        ax[0, 1].plot(xs, [marks[x]["median_particle_recall"] for x in xs], "s-", label="median particle recall")
        ax[0, 1].plot(xs, [1 - marks[x]["rejection_rate"] for x in xs], "^-", label="accepted share")
        ax[0, 1].set_xlabel("iteration")
        ax[0, 1].set_ylim(0, 1)
        ax[0, 1].legend(fontsize=7)
        ax[0, 1].set_title("content check along the run", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _realism(real, imgs):
    return {"histogram": histogram_distance(real, imgs), "spectrum": spectrum_distance(real, imgs),
            "discriminator": discriminator_accuracy(real, imgs)}


def _train(args, data_dir, image_file, repo, real_dir, log):
    cmd = [sys.executable, "-m", "semforge.cli", "train", "segmenter", "--data", *map(str, data_dir),
           "--image", image_file, "--val", str(real_dir), "--val-names", "1908248,1908258,1908268,1908278",
           "--repo", str(repo), "--name", "semforge_unetpp_se", "--version", "1",
           "--steps", str(args.steps), "--eval-every", str(args.eval_every), "--seed", "0", "--quiet"]
    print(f"  training: {' '.join(cmd[3:])}", file=sys.stderr)
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO / "services")})
    ev = subprocess.run([sys.executable, "-m", "semforge.cli", "evaluate", "--images", str(real_dir / "images"),
                         "--masks", str(real_dir / "masks"), "--segmenter", "unetpp", "--separate", "watershed,uecs",
                         "--quiet", "--json", str(repo / "eval.json")],
                        check=True, cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, "SEMFORGE_MODELS_REPO": str(repo.resolve()),
                             "PYTHONPATH": str(REPO / "services")})
    rec = json.loads((repo / "semforge_unetpp_se" / "1" / "training.json").read_text())
    log[repo.name] = {"eval": json.loads((repo / "eval.json").read_text()), "pairs": rec["training_pairs"],
                      "steps": rec["steps_done"], "seconds": rec["seconds"]["train"], "table": ev.stdout.strip()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--translator", required=True)
    ap.add_argument("--scenes", nargs="+", required=True)
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/bam-tio2-sem"))
    ap.add_argument("--work", default="out/loop")
    ap.add_argument("--steps", type=int, default=300, help="segmenter steps, the same for every route")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--snapshot-scenes", type=int, default=24, help="scenes checked per translator snapshot")
    ap.add_argument("--no-loop", action="store_true", help="content check and realism only")
    ap.add_argument("--compare", nargs="*", default=[], help="other translator runs checked on the same scenes")
    ap.add_argument("--routes", default="direct,accepted,direct_accepted,unchecked",
                    help="segmenters to train: direct, accepted, direct_accepted, unchecked")
    ap.add_argument("--write")
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "images").is_dir():
        print(f"no real data at {data}; nothing to check", file=sys.stderr)
        return 0
    work = Path(args.work)
    for sub in ("translated", "snapshots", "unchecked", "direct_accepted", "models"):  # derived: start clean
        shutil.rmtree(work / sub, ignore_errors=True)
    tdir = Path(args.translator)
    gen, gstate = load_generator(tdir)
    cfg = gstate["config"]
    grec = json.loads((tdir / "training.json").read_text())
    scenes = find_scenes(args.scenes)
    real = _real(data)
    real_imgs = [r[1] for r in real]
    from semforge.inference import create_segmenter

    seg = create_segmenter("unetpp")
    th = CheckThresholds()
    # controls: the checking segmenter on its own domain, and on the real images against the human masks
    print("controls ...", file=sys.stderr)
    control_direct = check_scene_images(scenes, "se.png", segmenter=seg, thresholds=th)
    real_checks = [dict(content_check(seg.predict(img, modality="se"), inst, th), scene=name)
                   for name, img, inst in real if inst is not None]
    control_real = summarize_checks(real_checks, th)
    # along the run: every snapshot on an evenly spread subset of scenes (also of other runs, for comparison)
    along: list[dict] = []
    subset = scenes[:: max(1, len(scenes) // args.snapshot_scenes)][: args.snapshot_scenes]
    for run in [tdir] + [Path(c) for c in args.compare]:
        snaps = sorted((run / "snapshots").glob("generator_*.pt")) if (run / "snapshots").is_dir() else []
        if not snaps:
            snaps = [run / "generator.pt"]
        for sp in snaps:
            g, st = load_generator(sp)
            print(f"{run.name} {sp.name} ...", file=sys.stderr)
            dest = work / "snapshots" / run.name / sp.stem
            summ = translate_scenes(g, subset, dest, segmenter=seg, thresholds=th)
            imgs = [np.asarray(Image.open(p), np.float64) / 255 for p in sorted(dest.rglob("translated.png"))]
            tr = st["config"]["heightmaps"]
            along.append({"run": run.name, "iteration": st["iteration"], "planned": st["config"]["iterations"],
                          "heightmaps": ", ".join(Path(h).name for h in tr),
                          "rejection_rate": summ["rejection_rate"], "accepted": summ["accepted"],
                          "median_foreground_iou": summ["median_foreground_iou"],
                          "median_particle_recall": summ["median_particle_recall"],
                          **_realism(real_imgs, imgs)})
    print("translating all scenes ...", file=sys.stderr)
    summary = translate_scenes(gen, scenes, work / "translated", segmenter=seg, thresholds=th,
                               progress=lambda i, n, c: print(f"  {i}/{n} {c['scene']} "
                                                              f"{'ok' if c['accepted'] else 'rejected'}", file=sys.stderr))
    trans = [np.asarray(Image.open(p), np.float64) / 255 for p in sorted((work / "translated").rglob("translated.png"))]
    direct = [np.asarray(Image.open(s / "se.png"), np.float64) / 255 for s in scenes]
    realism = {"translated (CycleGAN)": _realism(real_imgs, trans), "direct SE-like render": _realism(real_imgs, direct)}
    loop: dict = {}
    if not args.no_loop:
        # route 1: the direct renders of the same scenes; route 2: accepted translations; route 3: all translations
        unchecked = work / "unchecked"
        for sc in scenes:
            name = f"{sc.parent.name}/{sc.name}"
            src = work / "translated" / name
            src = src if src.exists() else work / "translated" / "rejected" / name
            dst = unchecked / name
            dst.mkdir(parents=True, exist_ok=True)
            for f, base in (("translated.png", src), ("instances.tif", sc), ("scene.json", sc)):
                shutil.copyfile(base / f, dst / f)
        accepted_dirs = [p for p in (work / "translated").iterdir() if p.is_dir() and p.name not in ("rejected",)]
        # the direct renders of just the accepted scenes: translation vs render at equal data
        direct_acc = work / "direct_accepted"
        for sc in scenes:
            name = f"{sc.parent.name}/{sc.name}"
            if (work / "translated" / name / "scene.json").exists():
                (direct_acc / name).mkdir(parents=True, exist_ok=True)
                for f in ("se.png", "instances.tif", "scene.json"):
                    shutil.copyfile(sc / f, direct_acc / name / f)
        routes = (("direct", sorted({s.parent for s in scenes}), "se.png"),
                  ("accepted", accepted_dirs, "translated.png"),
                  ("direct_accepted", [direct_acc], "se.png"),
                  ("unchecked", [unchecked], "translated.png"))
        for name, dirs, image in routes:
            if name not in args.routes.split(","):
                continue
            if name in ("accepted", "direct_accepted") and not summary["accepted"]:
                continue
            _train(args, dirs, image, work / "models" / name, data, loop)
    def train_cmd(run: Path) -> str:
        c = load_generator(run)[1]["config"]
        names = " ".join(f"$DATA/{Path(h).name}" for h in c["heightmaps"])
        return (f"semforge train translator --data {names} --real ../shared/data/bam-tio2-sem/images --out {run} "
                f"--steps {c['iterations']} --snapshot-every {c.get('snapshot_every', 0)} "
                f"--time-budget-s {c['time_budget_s']:.0f}")

    lines = ["# Image translation (CycleGAN) and the annotation-free loop", "",
             "Reproduce with `make translation-loop` (about 3.5 h on 2 cores; every step resumes), which runs "
             "(DATA=out/training-data/datasets):", "", "```",
             "semforge render --recipe se --out out/training-data",
             "semforge render --recipe se-rods --out out/training-data"] + [
             train_cmd(r) for r in [Path(c) for c in args.compare] + [tdir]] + [
             "python tests/bench/translation_check.py " + " ".join(
                 a if not a.startswith("/") else "$DATA/" + Path(a).name for a in sys.argv[1:]), "```", "",
             "The translator and every segmenter trained here are made from the shared real images, so none is "
             "committed; the figures are.", "",
             f"Translator run: ResNet generator ngf {cfg['ngf']} / {cfg['n_blocks']} blocks, {cfg['size']} px crops, "
             f"{grec['iterations_done']} iterations in {grec['seconds']:.0f} s ({grec['seconds'] / 3600:.1f} h) on "
             f"this 2-core CPU, seed {cfg['seed']}; {grec['heightmaps']} rendered height maps (recipe `se`), "
             f"{grec['real_images']} real images (data bar cut). Loss curve: `curve.json` beside the weights.", "",
             "## Content check of every translated scene", "",
             f"{summary['scenes']} scenes translated (recipes `se` and the held-out `se-rods`), "
             f"**{summary['accepted']} accepted**, rejection rate **{summary['rejection_rate']:.0%}**; median "
             f"foreground IoU {summary['median_foreground_iou']:.3f}, median particle recall "
             f"{summary['median_particle_recall']:.3f} (segmented with the shipped UNet++). "
             f"Thresholds (defaults of `CheckThresholds`): {json.dumps(th.to_dict())}.", "",
             "The same check on images whose content is known to be right tells the translator's faults from the "
             "checking segmenter's:", "",
             "| images checked | n | accepted | median fg IoU | median particle recall |", "|---|---|---|---|---|"] + [
             f"| {k} | {v['scenes']} | {v['accepted']} ({1 - v['rejection_rate']:.0%}) | {v['median_foreground_iou']:.3f} "
             f"| {v['median_particle_recall']:.3f} |"
             for k, v in (("CycleGAN translations", summary), ("direct SE-like renders of the same scenes", control_direct),
                          ("the 20 real images vs their human masks", control_real))] + [
             "", "| rejection reason (translations) | scenes |", "|---|---|"] + [
             f"| {k} | {v} |" for k, v in summary["reasons"].items()] + [
             "", "Per shape (pooled over all translated scenes): particles lost (< half found) or split into pieces; "
             "the direct-render column is the same figure for the control.", "",
             "| shape | particles | lost | split | failed (lost or split) | failed share | direct renders: failed share |",
             "|---|---|---|---|---|---|---|"] + [
             f"| {s} | {d['particles']} | {d['lost']} | {d['split']} | {d['failed']} | {d['failed_fraction']:.1%} | "
             f"{control_direct['by_shape'].get(s, {}).get('failed_fraction', float('nan')):.1%} |"
             for s, d in summary["by_shape"].items()] + [
             "", "## Realism (vs the 20 real images; no downloaded networks)", "",
             "| synthetic images | gray-value W1 distance | log power spectrum RMS | real-vs-synthetic CNN accuracy |",
             "|---|---|---|---|"] + [
             f"| {k} | {v['histogram']:.4f} | {v['spectrum']:.3f} | {v['discriminator']:.3f} |" for k, v in realism.items()] + [
             "", "Accuracy 0.5 = indistinguishable; 1.0 = trivially separable (held-apart halves of both sets)."]
    if along:
        lines += ["", f"### Along the run, and other runs ({len(subset)} evenly spread scenes per generator)", "",
                  "| run (trained on) | iteration / planned | accepted | median fg IoU | median particle recall | W1 | "
                  "spectrum RMS | CNN accuracy |", "|---|---|---|---|---|---|---|---|"] + [
                  f"| {a['run']} ({a['heightmaps']}) | {a['iteration']} / {a['planned']} | {a['accepted']} | "
                  f"{a['median_foreground_iou']:.3f} | {a['median_particle_recall']:.3f} | {a['histogram']:.4f} | "
                  f"{a['spectrum']:.3f} | {a['discriminator']:.3f} |" for a in along]
    if loop:
        lines += ["", "## The loop: which synthetic route trains the better segmenter (20 real images)", "",
                  f"Each segmenter: the shipped recipe (UNet++ mobilenet_v2, 256 px patches, batch 8, seed 0), "
                  f"{args.steps} steps, checkpoint chosen on 4 real images (1908248/58/68/78) as for the shipped model; "
                  "trained on images made from the same rendered scenes.", "",
                  "| route | training scenes | steps | fg IoU | inst. F1 (watershed) | AP@0.5 | median ECD error | "
                  "inst. F1 (UECS) |", "|---|---|---|---|---|---|---|---|"]
        for name, label in (("direct", "direct SE-like renders, all scenes"),
                            ("accepted", "translations passing the check"),
                            ("direct_accepted", "direct SE-like renders of the accepted scenes only"),
                            ("unchecked", "all translations, no check")):
            if name not in loop:
                continue
            r = loop[name]
            w = next(e for e in r["eval"] if e["separation"] == "watershed")
            u = next(e for e in r["eval"] if e["separation"] == "uecs")
            lines.append(f"| {label} | {r['pairs']} | {r['steps']} | {w['foreground_iou']:.3f} | **{w['instance_f1']:.3f}** | "
                         f"{w['ap50']:.3f} | {w['median_ecd_error']:+.1%} | {u['instance_f1']:.3f} |")
        lines += ["", "Full tables (`semforge evaluate`):", ""]
        for name, r in loop.items():
            lines += [f"Route `{name}`:", "", r["table"], ""]
    if args.write:
        png = Path(args.write).parent / "images" / f"translator_{tdir.name}.png"
        plot_curve(tdir, png, {a["iteration"]: a for a in along if a["run"] == tdir.name} or None)
        for c in args.compare:
            cp = Path(args.write).parent / "images" / f"translator_{Path(c).name}.png"
            plot_curve(Path(c), cp, {a["iteration"]: a for a in along if a["run"] == Path(c).name} or None)
            lines.append(f"Curves of `{Path(c).name}`: `{cp.relative_to(Path(args.write).parent)}`.")
        lines += ["", f"Curves: `{png.relative_to(Path(args.write).parent)}`."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        Path(args.write).write_text(text)
    work.mkdir(parents=True, exist_ok=True)
    (work / "summary.json").write_text(json.dumps({"content": summary, "control_direct": control_direct,
                                                   "control_real": control_real, "along": along, "realism": realism,
                                                   "loop": {k: {kk: vv for kk, vv in v.items() if kk != "table"}
                                                            for k, v in loop.items()}},
                                                  indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
