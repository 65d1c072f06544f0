"""The annotation-free loop, end to end, with its figures: docs/translation.md.

    render (recipe se) -> translate (CycleGAN) -> content check -> train segmenter on accepted
    translations -> evaluate on the 20 real images, next to the segmenter trained on direct renders

Usage (after `semforge train translator ... --out out/translators/bam-tio2`):
    python tests/bench/translation_check.py --translator out/translators/bam-tio2 \
        --scenes <rendered se-tio2 datasets...> --write docs/translation.md [--train-budget-s 900]
The translator is trained on the shared real images, so neither it nor the
segmenter trained on its output is committed; the figures are.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "services"))

from semforge.analysis import detect_databar, load_image, to_gray_float  # noqa: E402
from semforge.translation.apply import find_scenes, translate_scenes  # noqa: E402
from semforge.translation.realism import discriminator_accuracy, histogram_distance, spectrum_distance  # noqa: E402
from semforge.translation.train import load_generator  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--translator", required=True)
    ap.add_argument("--scenes", nargs="+", required=True)
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/bam-tio2-sem"))
    ap.add_argument("--work", default="out/loop")
    ap.add_argument("--train-budget-s", type=float, default=900)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--write")
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "images").is_dir():
        print(f"no real data at {data}; nothing to check", file=sys.stderr)
        return 0
    work = Path(args.work)
    gen, gstate = load_generator(args.translator)
    grec = json.loads((Path(args.translator) / "training.json").read_text())
    scenes = find_scenes(args.scenes)
    summary = translate_scenes(gen, scenes, work / "translated",
                               progress=lambda i, n, c: print(f"  {i}/{n} {c['scene']} "
                                                              f"{'ok' if c['accepted'] else 'rejected'}", file=sys.stderr))
    real = []
    for p in sorted((data / "images").glob("*.tif")):
        img = load_image(p)
        real.append(to_gray_float(img.pixels)[: detect_databar(img.pixels)])
    trans = [np.asarray(Image.open(p), np.float64) / 255 for p in sorted((work / "translated").rglob("translated.png"))]
    direct = [np.asarray(Image.open(s / "se.png"), np.float64) / 255 for s in scenes]
    realism = {name: {"histogram": histogram_distance(real, imgs), "spectrum": spectrum_distance(real, imgs),
                      "discriminator": discriminator_accuracy(real, imgs)}
               for name, imgs in (("translated (CycleGAN)", trans), ("direct SE-like render", direct))}
    # the loop: a segmenter trained only on accepted translations, same recipe as the shipped one
    accepted = work / "translated"
    repo = work / "models"
    cmd = [sys.executable, "-m", "semforge.cli", "train", "segmenter", "--data", str(accepted), "--image",
           "translated.png", "--val", str(data), "--val-names", "1908248,1908258,1908268,1908278",
           "--repo", str(repo), "--name", "semforge_unetpp_se", "--version", "1",
           "--steps", str(args.steps), "--eval-every", "150", "--seed", "0", "--time-budget-s",
           str(args.train_budget_s), "--quiet"]
    subprocess.run(cmd, check=True, cwd=REPO)
    ev = subprocess.run([sys.executable, "-m", "semforge.cli", "evaluate", "--images", str(data / "images"),
                         "--masks", str(data / "masks"), "--segmenter", "unetpp", "--separate", "watershed,uecs",
                         "--quiet", "--json", str(work / "eval_translated.json")],
                        check=True, cwd=REPO, capture_output=True, text=True,
                        env={**__import__("os").environ, "SEMFORGE_MODELS_REPO": str(repo.resolve()),
                             "PYTHONPATH": str(REPO / "services")})
    ev_direct = subprocess.run([sys.executable, "-m", "semforge.cli", "evaluate", "--images", str(data / "images"),
                                "--masks", str(data / "masks"), "--segmenter", "unetpp", "--separate",
                                "watershed,uecs", "--quiet"], check=True, cwd=REPO, capture_output=True, text=True)
    loop_rec = json.loads((repo / "semforge_unetpp_se" / "1" / "training.json").read_text())
    lines = ["# Image translation (CycleGAN) and the annotation-free loop", "",
             "Reproduce: `semforge train translator --data <rendered se-tio2 datasets> --real "
             "../shared/data/bam-tio2-sem/images --out out/translators/bam-tio2`, then "
             "`python tests/bench/translation_check.py --translator out/translators/bam-tio2 --scenes <datasets> "
             "--write docs/translation.md`. The translator and the segmenter trained on its output are not "
             "committed (they are made from the shared real images).", "",
             f"Translator run: ResNet generator ngf {gstate['config']['ngf']} / {gstate['config']['n_blocks']} blocks, "
             f"{gstate['config']['size']} px crops, {grec['iterations_done']} iterations in {grec['seconds']:.0f} s "
             f"on this 2-core CPU (seed {gstate['config']['seed']}); {grec['heightmaps']} rendered height maps, "
             f"{grec['real_images']} real images. Loss curve: `curve.json` beside the weights.", "",
             "## Content check of every translated scene", "",
             f"{summary['scenes']} scenes translated, **{summary['accepted']} accepted**, rejection rate "
             f"**{summary['rejection_rate']:.0%}**; median foreground IoU {summary['median_foreground_iou']:.3f}, "
             f"median particle recall {summary['median_particle_recall']:.3f} (segmented with the shipped UNet++). "
             f"Thresholds: {json.dumps(summary['thresholds'])}.", "",
             "| reason | scenes |", "|---|---|"] + [f"| {k} | {v} |" for k, v in summary["reasons"].items()] + [
             "", "Per shape (pooled over all translated scenes): particles lost (< half found) or split into pieces.", "",
             "| shape | particles | lost | split | failed share |", "|---|---|---|---|---|"] + [
             f"| {s} | {d['particles']} | {d['lost']} | {d['split']} | {d['failed_fraction']:.1%} |"
             for s, d in summary["by_shape"].items()] + [
             "", "## Realism (vs the 20 real images; no downloaded networks)", "",
             "| synthetic images | gray-value W1 distance | log power spectrum RMS | real-vs-synthetic CNN accuracy |",
             "|---|---|---|---|"] + [
             f"| {k} | {v['histogram']:.4f} | {v['spectrum']:.3f} | {v['discriminator']:.3f} |" for k, v in realism.items()] + [
             "", "Accuracy 0.5 = indistinguishable; 1.0 = trivially separable (held-apart halves of both sets).", "",
             "## The loop: segmenter trained on accepted translations vs on direct renders (20 real images)", "",
             f"Trained on {loop_rec['training_pairs']} accepted translated scenes, {loop_rec['steps_done']} steps "
             f"(the shipped direct-render model: 1300 steps).", "",
             "Segmenter trained on translated images:", "", ev.stdout.strip(), "",
             "Shipped segmenter (direct SE-like renders):", "", ev_direct.stdout.strip(), ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        Path(args.write).write_text(text)
    (work / "summary.json").write_text(json.dumps({"content": summary, "realism": realism}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
