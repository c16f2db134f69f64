"""Inference speed: face crops/s (PyTorch eager fp32 and bf16, ONNX Runtime) and photos/s end to end.

    python benchmarks/inference.py                 # the bundled model
    python benchmarks/inference.py --model runs/x  # any checkpoint or run folder

Everything is timed in one process, one after another, on this machine. If the
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

from ferlab.checkpoint import load_checkpoint
from ferlab.export import export_onnx
from ferlab.recognizer import (
    SAMPLE_PHOTO,
    EmotionRecognizer,
    OnnxClassifier,
    TorchClassifier,
    default_model_path,
)


def rate(fn, n_items: int, min_seconds: float = 3.0) -> float:
    fn()  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        fn()
        count += n_items
    return count / (time.perf_counter() - start)


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint or run folder (default: bundled model)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()

    path = Path(args.model) if args.model else default_model_path()
    loaded = load_checkpoint(path)
    crops = np.random.default_rng(0).integers(0, 256, (args.batch, 48, 48), dtype=np.uint8)
    rows = []
    for precision in ("fp32", "auto"):
        clf = TorchClassifier(path, device="cpu", precision=precision)
        for tta in ("none", clf.tta) if clf.tta != "none" else ("none",):
            r = rate(lambda clf=clf, tta=tta: clf.predict_proba(crops, tta), len(crops), args.seconds)
            rows.append((f"PyTorch eager {clf.runtime.precision_name}", tta, r))
    with tempfile.TemporaryDirectory() as tmp:
        onnx = OnnxClassifier(export_onnx(loaded, Path(tmp) / "m.onnx"))
        for tta in ("none", onnx.tta) if onnx.tta != "none" else ("none",):
            r = rate(lambda tta=tta: onnx.predict_proba(crops, tta), len(crops), args.seconds)
            rows.append(("ONNX Runtime fp32", tta, r))
    fer_rate = fer_package_rate(crops)

    rec = EmotionRecognizer(path, device="cpu")
    photo = np.asarray(Image.open(SAMPLE_PHOTO).convert("RGB"))
    photos = rate(lambda: rec.detect_emotions(photo), 1, args.seconds)

    import torch

    print(f"model {loaded.description}; batch {args.batch}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'face crops, batch classification':<34}{'TTA':<8}{'crops/s':>10}")
    for name, tta, r in rows:
        print(f"{name:<34}{tta:<8}{r:>10.0f}")
    if fer_rate is not None:
        print(f"{'fer package (Keras)':<34}{'none':<8}{fer_rate:>10.0f}")
        best = max(r for *_, r in rows)
        print(f"best ferlab / fer: {best / fer_rate:.2f}x")
    else:
        print("fer package not installed: not compared (its published figure here: ~2,200 crops/s)")
    print(f"end to end (detect + classify), {photo.shape[1]}x{photo.shape[0]} photo: {photos:.1f} photos/s")


if __name__ == "__main__":
    main()
