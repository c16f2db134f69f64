"""The seed report's whole pipeline on this machine: ferlab beside the report's own Keras stack.

    python benchmarks/seed_pipeline.py --data fer.npz                 # Keras from peers/bin/python
    python benchmarks/seed_pipeline.py --data fer.npz --keras-python /path/to/python

What is measured, one stack after the other (nothing else should run on the machine):
1. One real epoch of `seed-baseline` (no augmentation, batch 512) and one of `seed-final`
   (the seed's augmentation, batch 256) on FER2013 Training, validated on PublicTest: wall
   seconds. Keras runs the report's code path (`model.fit` on arrays, or on
   `ImageDataGenerator.flow` with augmentation); ferlab runs its training loop.
2. Training images/s at the study's costliest point (filters [128, 256, 512, 1024]) on
   synthetic faces: with the baseline's epoch it gives each stack's seconds per epoch as a
   line in the network's GFLOP per face, which prices every point of the study.

Extrapolated (printed with its formula): the report's pipeline = baseline (20 epochs) + the
study's 31 points x 20 epochs with the report's choices + final (50 epochs) (ferlab trains
25 of the 31: each stage after the first revisits the point the stages before it chose, and
the study reuses that finished run); the report also
retrained its final model for 43 epochs, which ferlab does not need (it keeps the best
epoch). The Keras stack needs TensorFlow 2.21 (tf.keras) in its own venv: the `peers/` venv
of the developers' guide. Without it, only ferlab's rows are printed, with the reason.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ferlab.core.config import apply_overrides, load_config, to_dict
from ferlab.models import build_model
from ferlab.study.spec import SEED_CHOICES, SEED_FILTERS, SEED_STUDY, fit_filters

sys.path.insert(0, str(Path(__file__).parent))
from inference import cpu_name  # noqa: E402

TRAIN_IMAGES, VAL_IMAGES = 28_709, 3_589
BIGGEST = ["model.block_num=4", "model.filters_in_each_block=[128,256,512,1024]"]

# The report's model and training, in its own stack (run by the Keras venv's python).
KERAS = r'''
import json, sys, time
import numpy as np
import tensorflow as tf
from tensorflow import keras
from tensorflow.keras.preprocessing.image import ImageDataGenerator

job = json.loads(sys.argv[1])
tf.random.set_seed(0)

def build_model(block_num, layer_num, filters_in_each_block, kernel_size, pool_size, strides,
                dropout_rate):
    m = keras.Sequential([keras.Input((48, 48, 1))])
    for b in range(block_num):
        for _ in range(layer_num):
            m.add(keras.layers.Conv2D(filters_in_each_block[b], kernel_size, padding="same",
                                      activation="relu"))
        m.add(keras.layers.MaxPool2D(pool_size, strides))
    m.add(keras.layers.Flatten())
    m.add(keras.layers.Dropout(dropout_rate))
    m.add(keras.layers.Dense(7, activation="softmax"))
    m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
              metrics=["accuracy"])
    return m

model = build_model(**job["model"])
out = {}
if job["kind"] == "epoch":
    with np.load(job["data"], allow_pickle=False) as z:
        images, labels, splits = z["images"], z["labels"], z["splits"]
    def part(name):
        keep = splits == name
        x = images[keep][..., None].astype("float32") / 255.0
        return x, keras.utils.to_categorical(labels[keep], 7)
    x, y = part("Training")
    xv, yv = part("PublicTest")
    start = time.perf_counter()
    if job["augment"]:
        gen = ImageDataGenerator(rotation_range=20, zoom_range=0.1, width_shift_range=0.1,
                                 height_shift_range=0.1, shear_range=0.1, horizontal_flip=True,
                                 fill_mode="nearest")
        model.fit(gen.flow(x, y, batch_size=job["batch"]), epochs=1, validation_data=(xv, yv),
                  verbose=0)
    else:
        model.fit(x, y, batch_size=job["batch"], epochs=1, validation_data=(xv, yv), verbose=0)
    out["seconds"] = time.perf_counter() - start
else:  # images/s of plain training steps on synthetic faces
    rng = np.random.default_rng(0)
    x = rng.random((job["batch"], 48, 48, 1), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 7, job["batch"]), 7)
    for _ in range(2):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(job["steps"]):
        model.train_on_batch(x, y)
    out["images_per_s"] = job["batch"] * job["steps"] / (time.perf_counter() - start)
print(json.dumps(out))
'''


def gflops(cfg) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(cfg.model.name, **cfg.model.args).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 1, 48, 48))
    return counter.get_total_flops() / 1e9


def keras_job(python: str, job: dict) -> dict:
    done = subprocess.run([python, "-c", KERAS, json.dumps(job)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"Keras job failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def keras_model(cfg) -> dict:
    keys = ("block_num", "layer_num", "filters_in_each_block", "kernel_size", "pool_size", "strides",
            "dropout_rate")
    return {k: cfg.model.args[k] for k in keys}


def ferlab_epoch(config: str, data: str) -> float:
    """Wall seconds of one real epoch (training + validation) by `ferlab train`."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["ferlab", "train", "--config", config, "--data", data, "--epochs", "1", "--out", f"{tmp}/run"]
        subprocess.run(cmd, check=True, capture_output=True)
        return json.loads((Path(tmp) / "run" / "history.json").read_text())[0]["seconds"]


def ferlab_rate(cfg, steps: int) -> float:
    from ferlab.core.config import replace
    from ferlab.core.runtime import Runtime
    from ferlab.training import TrainData, TrainState, train_one_epoch

    cfg = replace(cfg, "augment", enabled=False)
    rt = Runtime.create("auto", cfg.train.precision, cfg.train.channels_last)
    bs = cfg.train.batch_size
    images = torch.randint(0, 256, (bs * (steps + 2), 48, 48), dtype=torch.uint8)
    labels = torch.randint(0, 7, (len(images),))
    torch.manual_seed(0)
    model = rt.prepare_model(build_model(cfg.model.name, **cfg.model.args))
    state = TrainState.create(cfg, model, rt, total_steps=10_000)
    data = TrainData(images, labels, images[:0], labels[:0], tuple(str(i) for i in range(7)), "none")
    train_one_epoch(state, data, 0, max_steps=2)
    return train_one_epoch(state, data, 1, max_steps=steps)["train_images_per_s"]


def study_points() -> list:
    """Every point of the seed study as a config, each stage starting from the report's choices
    for the stages before it (the report's own path through the study)."""
    base, configs = load_config("seed-baseline"), []
    for name, points in SEED_STUDY:
        for point in points:
            point = fit_filters(point, base)
            configs.append(apply_overrides(base, [f"{k}={json.dumps(v)}" for k, v in point.items()]))
        choice = SEED_CHOICES[name]
        key = "train.batch_size" if name == "batch_size" else f"model.{name}"
        extra = [f"model.filters_in_each_block={json.dumps(SEED_FILTERS[:choice])}"] \
            if name == "block_num" else []
        base = apply_overrides(base, [f"{key}={json.dumps(choice)}", *extra])
    return configs


def distinct(configs: list) -> list:
    """The points a ferlab study trains: a revisited configuration reuses its finished run."""
    seen: dict[str, object] = {}
    for cfg in configs:
        seen.setdefault(json.dumps(to_dict(cfg), sort_keys=True), cfg)
    return list(seen.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a FER2013 cache (ferlab prepare ... -o fer.npz)")
    ap.add_argument("--keras-python", default="peers/bin/python", help="python of a venv with TensorFlow")
    ap.add_argument("--steps", type=int, default=6, help="timed steps at the costliest study point")
    args = ap.parse_args()
    keras_python = args.keras_python if Path(args.keras_python).exists() else None
    stacks = ["ferlab"] + (["Keras"] if keras_python else [])
    if keras_python is None:
        print(f"Keras rows skipped: {args.keras_python} not found (make the developers' guide's peers/ venv)")

    baseline, final = load_config("seed-baseline"), load_config("seed-final")
    biggest = apply_overrides(baseline, BIGGEST)
    cost = {"baseline": gflops(baseline), "final": gflops(final), "biggest": gflops(biggest)}
    epoch, rate = {}, {}
    for stack in stacks:
        start = time.perf_counter()
        if stack == "ferlab":
            epoch[stack] = {"baseline": ferlab_epoch("seed-baseline", args.data),
                            "final": ferlab_epoch("seed-final", args.data)}
            rate[stack] = ferlab_rate(biggest, args.steps)
        else:
            epoch[stack] = {
                name: keras_job(keras_python, {"kind": "epoch", "data": args.data, "model": keras_model(cfg),
                                               "batch": cfg.train.batch_size, "augment": cfg.augment.enabled})
                ["seconds"] for name, cfg in (("baseline", baseline), ("final", final))}
            rate[stack] = keras_job(keras_python, {"kind": "rate", "model": keras_model(biggest),
                                                   "batch": biggest.train.batch_size,
                                                   "steps": args.steps})["images_per_s"]
        print(f"[{stack}: measured in {time.perf_counter() - start:.0f} s]", flush=True)

    print(f"\nCPU: {cpu_name()}; torch {torch.__version__}; one stack at a time")
    print(f"{'measured':<58}" + "".join(f"{s:>12}" for s in stacks)
          + ("  ferlab speed-up" if len(stacks) == 2 else ""))

    def row(label, values, fmt="{:>12.1f}", rate=False):
        """One table row; the speed-up reads 'ferlab is N x faster' for times and rates alike."""
        line = f"{label:<58}" + "".join(fmt.format(v) for v in values)
        if len(values) == 2 and min(values) > 0:
            line += f"{(values[0] / values[1] if rate else values[1] / values[0]):>16.2f}x"
        print(line)

    row(f"seed-baseline, one epoch + validation (s; {cost['baseline']:.2f} GFLOP/face)",
        [epoch[s]["baseline"] for s in stacks])
    row(f"seed-final, one epoch with augmentation + validation (s; {cost['final']:.2f})",
        [epoch[s]["final"] for s in stacks])
    row(f"costliest study point, train images/s ({cost['biggest']:.2f} GFLOP/face)",
        [rate[s] for s in stacks], rate=True)

    # Seconds per epoch as a line in GFLOP: through the measured baseline epoch and the
    # costliest point's epoch (its training at the measured rate, validation scaled from
    # the baseline's share by cost; an estimate, said so).
    points = study_points()
    trained = {"ferlab": distinct(points)}  # Keras: the report trained every point
    print(f"\nextrapolated (the study: {len(points)} points x 20 epochs, of which ferlab trains "
          f"{len(trained['ferlab'])} (revisits reuse their run), priced by a line in GFLOP "
          "through the baseline epoch and the costliest point)")
    totals = {}
    for s in stacks:
        base_s = epoch[s]["baseline"]
        big_s = TRAIN_IMAGES / rate[s] * (1 + VAL_IMAGES / TRAIN_IMAGES / 3)
        slope = (big_s - base_s) / (cost["biggest"] - cost["baseline"])
        study_s = sum(20 * (base_s + slope * (gflops(p) - cost["baseline"])) for p in trained.get(s, points))
        retrain = 43 * epoch[s]["final"] if s == "Keras" else 0.0
        totals[s] = {"baseline (20 epochs)": 20 * base_s, "study": study_s,
                     "final (50 epochs)": 50 * epoch[s]["final"], "the report's retrain (43 epochs)": retrain}
        totals[s]["whole pipeline"] = sum(totals[s].values())
    for key in totals[stacks[0]]:
        row(f"{key} (hours)", [totals[s][key] / 3600 for s in stacks], "{:>12.2f}")


if __name__ == "__main__":
    main()
