"""Inference speed: face crops/s (PyTorch eager fp32 and bf16, ONNX Runtime fp32 and int8)
and photos/s end to end.

    python benchmarks/inference.py                      # the bundled models (default and fast)
    python benchmarks/inference.py --model runs/x       # any checkpoints or run folders

Everything is timed in one process, one after another, on this machine. The int8
rows quantize the model with `ferlab.inference.export.quantize_onnx` (calibrated on the
benchmark's crops: calibration sets the scales, not the amount of work). If the
`fer` package (and TensorFlow) happens to be installed, its bundled model is
timed on the same crops for comparison; it is not a dependency.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ferlab.inference.checkpoint import load_checkpoint
from ferlab.inference.classifier import load_classifier
from ferlab.inference.export import export_onnx, quantize_onnx
from ferlab.inference.shipped import BUNDLED_FAST, SAMPLE_PHOTO, default_model_path
from ferlab.photos.recognizer import EmotionRecognizer

FER_PUBLISHED = 2200  # crops/s of the fer package's Keras model on this machine type (NOTES.md)


ROUNDS = 3  # each figure is the median of this many timed rounds (set by --rounds)


def cpu_name() -> str:
    """The CPU model, for the line every benchmark prints above its table."""
    import os
    import platform

    info = Path("/proc/cpuinfo")
    names = [x.split(":", 1)[1].strip() for x in info.read_text().splitlines()
             if x.startswith("model name")] if info.exists() else []
    return f"{names[0] if names else platform.processor()}, {os.cpu_count()} cores"


def rate(fn, n_items: int, min_seconds: float = 3.0) -> float:
    """Items per second: the median of ROUNDS rounds of at least min_seconds each."""
    fn()  # warm-up
    rates = []
    for _ in range(ROUNDS):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < min_seconds:
            fn()
            count += n_items
        rates.append(count / (time.perf_counter() - start))
    return sorted(rates)[len(rates) // 2]


def fer_package_rate(crops: np.ndarray) -> float | None:
    try:
        from fer import FER  # noqa: F401
    except Exception:
        return None
    import cv2

    detector = FER()
    model = detector._FER__emotion_classifier  # the bundled mini-Xception (64x64 input)
    x = np.stack([cv2.resize(c, (64, 64)) for c in crops]).astype(np.float32)[..., None]
    x = (x / 255.0 - 0.5) * 2.0
    return rate(lambda: model.predict(x, batch_size=256, verbose=0), len(x))


def time_model(path: Path, crops: np.ndarray, seconds: float) -> list[tuple[str, str, float]]:
    loaded = load_checkpoint(path)
    rows = []
    for precision in ("fp32", "auto"):
        clf = load_classifier(path, device="cpu", precision=precision)
        for tta in ("none", clf.tta) if clf.tta != "none" else ("none",):
            r = rate(lambda clf=clf, tta=tta: clf.predict_proba(crops, tta=tta), len(crops), seconds)
            rows.append((f"PyTorch eager {clf.runtime.precision_name}", tta, r))
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(loaded, Path(tmp) / "m.onnx")
        int8 = quantize_onnx(fp32, Path(tmp) / "m-int8.onnx", crops)
        for label, file in (("ONNX Runtime fp32", fp32), ("ONNX Runtime int8", int8)):
            onnx = load_classifier(file)
            for tta in ("none", onnx.tta) if onnx.tta != "none" else ("none",):
                r = rate(lambda onnx=onnx, tta=tta: onnx.predict_proba(crops, tta=tta), len(crops), seconds)
                rows.append((label, tta, r))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="checkpoint or run folder; repeatable "
                    "(default: the bundled model and the bundled fast model)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=2.0, help="length of one timed round")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per figure (median reported)")
    args = ap.parse_args()
    global ROUNDS
    ROUNDS = max(1, args.rounds)

    paths = [Path(m) for m in args.model] if args.model else [default_model_path()] + (
        [BUNDLED_FAST] if BUNDLED_FAST.exists() else [])
    crops = np.random.default_rng(0).integers(0, 256, (args.batch, 48, 48), dtype=np.uint8)
    results = [(path, time_model(path, crops, args.seconds)) for path in paths]
    fer_rate = fer_package_rate(crops)

    rec = EmotionRecognizer(paths[0], device="cpu")
    photo = np.asarray(Image.open(SAMPLE_PHOTO).convert("RGB"))
    photos = rate(lambda: rec.detect_emotions(photo), 1, args.seconds)

    import torch

    print(f"batch {args.batch}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"median of {ROUNDS} rounds of {args.seconds:g} s")
    reference = fer_rate or FER_PUBLISHED
    print(f"{'model':<28}{'face crops, batch classification':<30}{'TTA':<9}{'crops/s':>9}"
          f"{'vs fer':>8}")
    for path, rows in results:
        for name, tta, r in rows:
            print(f"{path.name[:27]:<28}{name:<30}{tta:<9}{r:>9.0f}{r / reference:>7.2f}x")
    if fer_rate is not None:
        print(f"{'fer package (Keras)':<58}{'none':<9}{fer_rate:>9.0f}")
    else:
        print(f"fer package not installed: 'vs fer' uses its published figure here, "
              f"~{FER_PUBLISHED:,} crops/s (NOTES.md)")
    print(f"end to end (detect + classify, {paths[0].name}), {photo.shape[1]}x{photo.shape[0]} photo: "
          f"{photos:.1f} photos/s")


if __name__ == "__main__":
    main()
