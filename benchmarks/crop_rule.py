"""How the face detectors' settings were chosen: YuNet's confidence threshold and scan
size, and each detector's crop rule, measured on faces found in photos.

    python benchmarks/crop_rule.py --data fer.npz                 # 1,200 PublicTest faces
    python benchmarks/crop_rule.py --data fer.npz --n 300 --model bundled-int8

Tables:
- threshold: YuNet's recall on PublicTest faces pasted into photos (benchmarks/pasted.py)
  and its false boxes there and on 60 face-free crops, per confidence threshold;
- scan size: recall and ms per photo per size the smallest face is scanned at;
- crop rule: for each detector, the classification accuracy of the faces it found, per
  rule (square side as a multiple of the box's width or height, centre moved by dy of
  the box's height), beside the "truth" crop (the pasted square itself: FER2013's
  framing). The rule closest to the truth's accuracy is the one to ship.

Validation faces only (PublicTest): the withheld test split is never looked at.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from inference import cpu_name  # noqa: E402
from pasted import face_free_crops, on_face, pasted_photos  # noqa: E402

from ferlab.data import load_dataset  # noqa: E402
from ferlab.data.preprocess import to_gray48  # noqa: E402
from ferlab.inference.classifier import load_classifier  # noqa: E402
from ferlab.photos.detection.haar import HaarDetector  # noqa: E402
from ferlab.photos.detection.yunet import SCAN_PX, YuNetDetector  # noqa: E402
from ferlab.photos.faces import CropRule, FaceBox, crop_box  # noqa: E402


def match(boxes: list[FaceBox], truth: list[int]) -> tuple[FaceBox | None, int]:
    """(the box on the face or None, number of boxes on no face): see pasted.on_face."""
    hits = [on_face(b.to_list(), truth) for b in boxes]
    best = max((b for b, hit in zip(boxes, hits) if hit), key=lambda b: b.w * b.h, default=None)
    return best, hits.count(False)


def threshold_table(photos, free, scan_px: int, thresholds=(30, 40, 50, 60, 70, 80)) -> None:
    det = YuNetDetector(threshold=20, scan_px=scan_px)
    raw = [det.raw(g) for g, _, _ in photos]
    raw_free = [det.raw(g) for g in free]
    print(f"\nYuNet confidence threshold ({len(photos)} pasted faces, {len(free)} face-free crops, "
          f"smallest face scanned at {scan_px} px)\n"
          f"{'threshold':<12}{'recall':>8}{'false (pasted)':>16}{'false (free)':>14}")
    for t in thresholds:
        found = false = 0
        for (gray, truth, _), boxes in zip(photos, raw):
            min_px = min(gray.shape) * det.min_size
            hit, bad = match([b for b, c in boxes if c >= t and b.h >= min_px], truth)
            found, false = found + (hit is not None), false + bad
        free_false = sum(c >= t for boxes in raw_free for _, c in boxes)
        print(f"{t:<12}{found / len(photos):>8.3f}{false:>16}{free_false:>14}")


def scan_table(photos, sizes=(24, 32, 40, 44, 48, 64)) -> None:
    print(f"\nYuNet scan size of the smallest face sought (min face 0.15)\n"
          f"{'scan px':<12}{'recall':>8}{'false':>7}{'ms/photo':>10}")
    for px in sizes:
        det = YuNetDetector(scan_px=px)
        start, found, false = time.perf_counter(), 0, 0
        for gray, truth, _ in photos:
            hit, bad = match(det.detect(gray), truth)
            found, false = found + (hit is not None), false + bad
        ms = (time.perf_counter() - start) / len(photos) * 1000
        print(f"{px:<12}{found / len(photos):>8.3f}{false:>7}{ms:>10.1f}")


def rules_for(name: str) -> list[CropRule]:
    if name == "haar":
        return [CropRule(side=s, dy=dy) for s in (1.0, 1.1, 1.2, 1.3, 1.4) for dy in (-0.05, 0.0, 0.05)]
    return ([CropRule(side=s, basis="height", dy=dy) for s in (1.0, 1.1, 1.2, 1.3)
             for dy in (-0.1, -0.05, 0.0, 0.05)]
            + [CropRule(side=s, basis="width") for s in (1.2, 1.3, 1.4)])


def crop_table(photos, clf, tta) -> None:
    size = clf.preprocessing.image_size
    labels = np.array([label for _, _, label in photos])
    truth = np.stack([to_gray48(g[y : y + s, x : x + s], size) for g, (x, y, s, _), _ in photos])
    right = clf.predict_proba(truth, tta=tta).argmax(1) == labels
    print(f"\ncrop rule: accuracy of the faces each detector found ({Path(clf.path).name}, TTA {tta}); "
          f"truth: the pasted square itself")
    print(f"{'detector':<8}{'rule':<34}{'found':>7}{'acc (found)':>13}{'truth (found)':>15}{'acc (all)':>11}")
    for det in (YuNetDetector(), HaarDetector()):
        hits = [(k, match(det.detect(g), t)[0]) for k, (g, t, _) in enumerate(photos)]
        hits = [(k, b) for k, b in hits if b is not None]
        idx = np.array([k for k, _ in hits])
        rows = []
        for rule in rules_for(det.name):
            crops = []
            for k, box in hits:
                c = crop_box(photos[k][0].shape, box, rule)
                crops.append(to_gray48(photos[k][0][c.y : c.y + c.h, c.x : c.x + c.w], size))
            ok = clf.predict_proba(np.stack(crops), tta=tta).argmax(1) == labels[idx]
            rows.append((ok.mean(), rule, ok.sum()))
        for acc, rule, n_ok in sorted(rows, key=lambda r: -r[0]):
            desc = f"side {rule.side:.1f} x {rule.basis}, dy {rule.dy:+.2f}"
            print(f"{det.name:<8}{desc:<34}{len(idx):>7}{acc:>13.4f}{right[idx].mean():>15.4f}"
                  f"{n_ok / len(photos):>11.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a FER2013 cache or source")
    ap.add_argument("--n", type=int, default=1200, help="pasted faces")
    ap.add_argument("--model", default="ensemble-int8")
    ap.add_argument("--tta", default=None, help="default: the model's own")
    ap.add_argument("--only", default="threshold,scan,crop")
    ap.add_argument("--scan-px", type=int, action="append", help="threshold table at these scan sizes "
                    "(default: the shipped one)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    args.scan_px = args.scan_px or [SCAN_PX]
    print(f"CPU: {cpu_name()}")
    photos = pasted_photos(load_dataset(args.data)[0].split("PublicTest"), args.n)
    if "threshold" in only:
        for px in args.scan_px:
            threshold_table(photos, face_free_crops(), px)
    if "scan" in only:
        scan_table(photos)
    if "crop" in only:
        clf = load_classifier(args.model)
        crop_table(photos, clf, args.tta or clf.tta)


if __name__ == "__main__":
    main()
