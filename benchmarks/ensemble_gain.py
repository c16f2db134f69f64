"""What each added ensemble member buys: validation accuracy of every subset of the given
models, averaged by subset size, beside the single models.

    python benchmarks/ensemble_gain.py --data fer.npz bundled runs/robust runs/m3 runs/m4

Each model is run once on the split with its own shipped TTA and calibration temperature
(what `ferlab ensemble` keeps for it); an ensemble of a subset averages those
probabilities, exactly as the `ensemble` model kind does (its fp16 weights move a
probability by < 5e-3). The table gives, per number of members k, the mean and the best
accuracy over all subsets of size k, and the subset in the order given (the first k).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from inference import cpu_name  # noqa: E402

from ferlab.data import load_dataset  # noqa: E402
from ferlab.inference.classifier import load_classifier  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="checkpoints, run folders or bundled names")
    ap.add_argument("--data", required=True, help="a FER2013 cache or source")
    ap.add_argument("--split", default="PublicTest")
    args = ap.parse_args()
    part = load_dataset(args.data)[0].split(args.split)
    print(f"CPU: {cpu_name()}; {args.split}, {len(part.labels)} faces")
    probs, names = [], []
    for ref in args.models:
        try:
            clf = load_classifier(ref)
        except (OSError, ValueError) as e:  # ferlab's loader names the file and the reason
            raise SystemExit(f"error: {e}") from None
        start = time.perf_counter()
        probs.append(clf.predict_proba(part.images, tta=clf.tta))
        names.append(str(ref))
        acc = float((probs[-1].argmax(1) == part.labels).mean())
        print(f"  {ref:<40} TTA {clf.tta:<8} {acc:.4f}  ({time.perf_counter() - start:.0f} s)")
    print(f"\n{'members':>8}{'mean':>9}{'best':>9}{'first k':>9}  best subset")
    for k in range(1, len(probs) + 1):
        scores = {}
        for subset in itertools.combinations(range(len(probs)), k):
            mean = np.mean([probs[i] for i in subset], axis=0)
            scores[subset] = float((mean.argmax(1) == part.labels).mean())
        best = max(scores, key=scores.get)
        first = scores[tuple(range(k))]
        print(f"{k:>8}{np.mean(list(scores.values())):>9.4f}{scores[best]:>9.4f}{first:>9.4f}  "
              f"{', '.join(names[i] for i in best)}")


if __name__ == "__main__":
    main()
