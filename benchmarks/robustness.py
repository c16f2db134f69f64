"""Accuracy under the degradations of users' photos: each model on a validation split, clean
and degraded (blur, JPEG, low resolution, noise, dim light, low contrast), side by side.

    python benchmarks/robustness.py --data fer.npz bundled runs/robust/best.pt --tta flip
    python benchmarks/robustness.py --data fer.npz bundled ensemble --tta own   # each model's own TTA

Each degradation is applied at one fixed strength to every face (the same faces for
every model), with augment.py's own functions, then the faces are re-quantised to uint8
as a decoded photo would be.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ferlab.data import load_dataset
from ferlab.inference.classifier import load_classifier
from ferlab.training.augment import gaussian_blur, jpeg_like


def degrade(images: np.ndarray, kind: str) -> np.ndarray:
    p = torch.from_numpy(images).float()[:, None] / 255
    n = len(p)
    if kind == "blur (sigma 1.5 px)":
        p = gaussian_blur(p, torch.full((n,), 1.5))
    elif kind == "JPEG quality 15":
        p = jpeg_like(p, torch.full((n,), 15.0))
    elif kind == "low resolution (16 px)":
        small = torch.nn.functional.interpolate(p, size=(16, 16), mode="bilinear", antialias=True)
        p = torch.nn.functional.interpolate(small, size=(48, 48), mode="bilinear")
    elif kind == "noise (std 0.08)":
        p = p + torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.08
    elif kind == "dim (gamma 2)":
        p = p.clamp(0, 1) ** 2
    elif kind == "low contrast (x0.4)":
        mean = p.mean((1, 2, 3), keepdim=True)
        p = (p - mean) * 0.4 + mean
    return (p.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()


KINDS = ("clean", "blur (sigma 1.5 px)", "JPEG quality 15", "low resolution (16 px)", "noise (std 0.08)",
         "dim (gamma 2)", "low contrast (x0.4)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="PublicTest")
    ap.add_argument("--tta", default="flip",
                    help="none | flip | tencrop, or own: each model's default (an ensemble's members "
                         "carry theirs inside)")
    args = ap.parse_args()
    data, _ = load_dataset(args.data)
    part = data.split(args.split).labeled()
    classifiers = [load_classifier(m) for m in args.models]
    print(f"{args.split}, {len(part.labels)} faces, tta {args.tta}")
    print(f"| degradation | {' | '.join(args.models)} |")
    print("|---|" + "---|" * len(args.models))
    for kind in KINDS:
        faces = degrade(part.images, kind)
        tta = None if args.tta == "own" else args.tta
        accs = [(c.predict_proba(faces, tta=tta).argmax(1) == part.labels).mean() for c in classifiers]
        print(f"| {kind} | " + " | ".join(f"{a:.2%}" for a in accs) + " |", flush=True)


if __name__ == "__main__":
    main()
