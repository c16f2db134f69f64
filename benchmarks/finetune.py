"""Fine-tuning on "your own faces" versus training from scratch, at equal budget.

    python benchmarks/finetune.py                               # shared FER2013 zip
    python benchmarks/finetune.py --data fer.npz --per-class 300 --epochs 15 --seeds 2

Builds a small dataset with its own label set from FER2013 - positive (happy,
surprise), negative (angry, disgust, fear, sad), neutral - as image folders on
disk (`train/<class>/*.png` from FER2013 Training, `val/<class>/*.png` from
PublicTest), then trains on it through ferlab's usual path (`train()` with the
bundled `finetune` config, the folders read with `data.classes=folders`):

* scratch            - the shipped model's architecture, random weights, vgg-fast's lr;
* fine-tune head     - the shipped model, new 3-class classifier, base frozen;
* fine-tune last 2   - ... plus its last two conv stages;
* fine-tune all      - ... everything trains;

all for the same epochs on the same images; plus the shipped model with no
training at all, its seven probabilities summed into the three groups. The
validation images come from PublicTest, which the shipped model never trained on
(it was only used to pick its epoch), so the fine-tuned figures carry no leak.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ferlab.core.config import load_config
from ferlab.core.labels import EMOTIONS
from ferlab.data import load_dataset, stratified_subset
from ferlab.evaluation.scores import classification_metrics
from ferlab.inference.checkpoint import load_checkpoint
from ferlab.inference.classifier import load_classifier
from ferlab.training import train

GROUPS = {"positive": ("happy", "surprise"), "negative": ("angry", "disgust", "fear", "sad"),
          "neutral": ("neutral",)}
OWN = tuple(sorted(GROUPS))  # the order `data.classes=folders` gives: sorted folder names
TO_OWN = np.array([next(OWN.index(g) for g, ems in GROUPS.items() if e in ems) for e in EMOTIONS])
DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fer2013-dev.zip"


def write_own_dataset(data, root: Path, per_class: int, val_per_class: int, seed: int) -> None:
    for split, folder, n in (("Training", "train", per_class), ("PublicTest", "val", val_per_class)):
        part = data.split(split)
        own = TO_OWN[part.labels]
        rng = np.random.default_rng(seed)
        for c, name in enumerate(OWN):
            members = np.flatnonzero(own == c)
            # Within a group, keep FER2013's mix of emotions (stratified by the original label).
            chosen = members[stratified_subset(part.labels[members], min(n, len(members)), seed)]
            rng.shuffle(chosen)
            (root / folder / name).mkdir(parents=True, exist_ok=True)
            for i in chosen:
                Image.fromarray(part.images[i]).save(root / folder / name / f"face{i:05d}.png")


RUNS = {
    "scratch": ["train.init=null", "model.name=vgg", "model.widths=[32,64,128,256]",
                "model.depth=2", "model.dropout_rate=0.2", "train.lr=0.004"],
    "fine-tune head": ["train.finetune=head"],
    "fine-tune last 2 stages": ["train.finetune=2"],
    "fine-tune all": ["train.finetune=all"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="FER2013 source or ferlab cache")
    ap.add_argument("--per-class", type=int, default=300, help="training images per own class")
    ap.add_argument("--val-per-class", type=int, default=200, help="validation images per own class")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", type=int, default=1, help="repeat each run with this many seeds")
    ap.add_argument("--keep", type=Path, help="keep the dataset and runs in this folder")
    args = ap.parse_args()

    fer, _ = load_dataset(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        own_dir = root / "own-faces"
        write_own_dataset(fer, own_dir, args.per_class, args.val_per_class, seed=0)
        own, _ = load_dataset(own_dir, classes="folders")
        counts = own.class_counts()
        print(f"own dataset {own_dir}: classes {', '.join(own.class_names)}; "
              + "; ".join(f"{s} {c}" for s, c in counts.items()))

        val = own.split("val")
        shipped = load_classifier("bundled", device="auto")
        start = time.perf_counter()
        p7 = shipped.predict_proba(val.images, tta="flip")
        p3 = np.stack([p7[:, TO_OWN == c].sum(1) for c in range(len(OWN))], 1)
        zero = classification_metrics(val.labels, p3.argmax(1), OWN)
        rows = [("shipped model, no training (7 -> 3)", "-", [zero["accuracy"]], [zero["macro_f1"]],
                 None, time.perf_counter() - start)]

        for name, overrides in RUNS.items():
            accs, f1s, secs = [], [], []
            trainable = "-"
            for seed in range(args.seeds):
                out = root / "runs" / f"{name.replace(' ', '-')}-s{seed}"
                cfg = load_config("finetune", [*overrides, f"data.source={own_dir}",
                                               "data.classes=folders", f"train.epochs={args.epochs}",
                                               f"train.seed={seed}"])
                lines: list[str] = []
                history = train(cfg, out, log=lines.append)
                trainable = next((s.split("(")[-1].split(" of ")[0] for s in lines if " of " in s
                                  and "parameters" in s), "all")
                best = load_checkpoint(out / "best.pt")
                probs = load_classifier(out / "best.pt").predict_proba(val.images, tta="flip")
                m = classification_metrics(val.labels, probs.argmax(1), best.class_names)
                accs.append(m["accuracy"])
                f1s.append(m["macro_f1"])
                secs.append(history[-1]["elapsed_seconds"])
            rows.append((name, trainable, accs, f1s, secs, None))

    def fmt(values, pct=True):
        mean = statistics.mean(values) * (100 if pct else 1)
        if len(values) == 1:
            return f"{mean:.1f}" if pct else f"{mean:.0f}"
        sd = statistics.stdev(values) * (100 if pct else 1)
        return f"{mean:.1f} ± {sd:.1f}" if pct else f"{mean:.0f} ± {sd:.0f}"

    print(f"\n{args.per_class} train / {args.val_per_class} val images per class, {args.epochs} epochs, "
          f"{args.seeds} seed(s); validation with flip TTA")
    print(f"{'run':<38}{'trainable params':>18}{'val acc %':>14}{'macro F1 %':>14}{'train s':>12}")
    for name, trainable, accs, f1s, secs, _ in rows:
        seconds = fmt(secs, False) if secs else "-"
        print(f"{name:<38}{trainable:>18}{fmt(accs):>14}{fmt(f1s):>14}{seconds:>12}")


if __name__ == "__main__":
    main()
