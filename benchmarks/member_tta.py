"""Where an ensemble's test-time views pay: each member alone under each TTA, and every
combination of members and TTAs, on a validation split.

    python benchmarks/member_tta.py --data fer.npz ensemble                # the shipped one
    python benchmarks/member_tta.py --data fer.npz runs/ens3.pt --tta flip,tencrop

Each member runs once per TTA with its own calibration temperature (what the ensemble
applies); a combination averages those probabilities, exactly as the `ensemble` model
does. The cost of a combination is its views a face (flip 2, ten-crop 10); choose with
`ferlab ensemble ... --tta MODE,MODE,...` and time photos with benchmarks/everyday.py.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from inference import cpu_name  # noqa: E402

from ferlab.data import load_dataset  # noqa: E402
from ferlab.inference.classifier import load_classifier  # noqa: E402
from ferlab.inference.ensemble_file import ensemble_members  # noqa: E402
from ferlab.inference.torch_proba import predict_proba  # noqa: E402
from ferlab.inference.tta import VIEW_COUNT  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="an ensemble checkpoint (or 'ensemble')")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="PublicTest")
    ap.add_argument("--tta", default="flip,tencrop", help="the TTA modes to try, comma-separated")
    args = ap.parse_args()
    modes = args.tta.split(",")
    data, _ = load_dataset(args.data)
    part = data.split(args.split).labeled()
    ens = load_classifier(args.model, device="cpu")
    members = ensemble_members(ens)
    if not members:
        sys.exit(f"error: {args.model}: not an ensemble checkpoint (build one with `ferlab ensemble`)")
    print(f"CPU: {cpu_name()}; {args.split}, {len(part.labels)} faces; {len(members)} members")
    probs = {}
    print("\n| member | " + " | ".join(modes) + " |\n|---|" + "---|" * len(modes))
    for i, (name, m) in enumerate(members):
        cells = []
        for tta in modes:
            m.tta = tta
            probs[i, tta] = predict_proba(m, part.images, ens.preprocessing, ens.runtime, tta="none",
                                          batch_size=64, num_classes=len(ens.class_names))
            cells.append(f"{100 * (probs[i, tta].argmax(1) == part.labels).mean():.2f}%")
        print(f"| {i}: {name} | " + " | ".join(cells) + " |")
    print("\n| members' TTA (- : left out) | views a face | accuracy |\n|---|---|---|")
    for combo in itertools.product([*modes, None], repeat=len(members)):
        keys = [(i, t) for i, t in enumerate(combo) if t]
        if len(keys) < 2:
            continue
        acc = (np.mean([probs[k] for k in keys], 0).argmax(1) == part.labels).mean()
        views = sum(VIEW_COUNT[t] for _, t in keys)
        print(f"| {', '.join(t or '-' for t in combo)} | {views} | {100 * acc:.2f}% |")


if __name__ == "__main__":
    main()
