"""Training and inference throughput: plain PyTorch fp32 versus ferlab's fast path, side by side.

    python benchmarks/throughput.py                       # seed-final model, batch 256
    python benchmarks/throughput.py --config vgg-fast --steps 20

Runs on synthetic 48x48 faces (content does not change speed). Each mode is
timed in the same process, alternating, so the ratio holds on a noisy machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from ferlab.core.config import load_config, replace
from ferlab.core.labels import EMOTIONS
from ferlab.core.runtime import Runtime
from ferlab.data.preprocess import Preprocessing
from ferlab.inference.torch_proba import predict_proba
from ferlab.models import build_model
from ferlab.training import TrainData, TrainState, train_one_epoch
from ferlab.training.augment import augment_batch

MODES = {
    "plain fp32 NCHW": dict(precision="fp32", channels_last=False),
    "ferlab (channels_last + autocast)": dict(precision="auto", channels_last=True),
}


def time_training(cfg, runtime, images, labels, steps: int) -> float:
    state, data = training_state(cfg, runtime, images, labels)
    train_one_epoch(state, data, 0, max_steps=2)
    stats = train_one_epoch(state, data, 1, max_steps=steps)
    return stats["train_images_per_s"]


def training_state(cfg, runtime, images, labels) -> tuple[TrainState, TrainData]:
    """ferlab's own training state for the model, and the images as its training split."""
    torch.manual_seed(0)
    model = runtime.prepare_model(build_model(cfg.model.name, **cfg.model.args))
    state = TrainState.create(cfg, model, runtime, total_steps=10_000)
    return state, TrainData(images, labels, images[:0], labels[:0], EMOTIONS, "none")


def time_inference(cfg, runtime, images, batches: int) -> float:
    model = runtime.prepare_model(build_model(cfg.model.name, **cfg.model.args)).eval()
    n = min(len(images), cfg.train.batch_size * batches)
    predict_proba(model, images[:256], Preprocessing(), runtime, batch_size=256)
    start = time.perf_counter()
    predict_proba(model, images[:n], Preprocessing(), runtime, batch_size=cfg.train.batch_size)
    return n / (time.perf_counter() - start)


def time_augmentation(cfg, runtime, images, steps: int) -> float:
    """Seconds per batch spent in the batched affine warp alone."""
    g = torch.Generator(device=runtime.device).manual_seed(0)
    bs = cfg.train.batch_size
    x = images[:bs].float().unsqueeze(1)
    augment_batch(x, cfg.augment, g)
    start = time.perf_counter()
    for _ in range(steps):
        augment_batch(x, cfg.augment, g)
    return (time.perf_counter() - start) / steps


def conv_bound(cfg, runtime, images, labels, steps: int) -> tuple[float, float]:
    """Profile ferlab's training path: the share of step time in convolution kernels
    (forward + backward), and the images/s those kernels alone would allow."""
    from torch.profiler import ProfilerActivity, profile

    state, data = training_state(cfg, runtime, images, labels)
    train_one_epoch(state, data, 0, max_steps=2)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_one_epoch(state, data, 1, max_steps=steps)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events
               if e.key in ("aten::mkldnn_convolution", "aten::convolution_backward",
                            "aten::_convolution", "aten::cudnn_convolution"))
    n = cfg.train.batch_size * steps
    return conv / total, n / (conv / 1e6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="seed-final")
    ap.add_argument("--steps", type=int, default=12, help="timed training steps per mode")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best is kept")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--profile", action="store_true",
                    help="also profile ferlab's path: time share of the convolutions and the "
                         "images/s they alone allow (CPU)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    cfg = load_config(args.config, args.overrides)
    cfg = replace(cfg, "augment", enabled=True)
    n = cfg.train.batch_size * (args.steps + 2)
    gen = torch.Generator().manual_seed(0)
    images_cpu = torch.randint(0, 256, (n, 48, 48), dtype=torch.uint8, generator=gen)
    labels_cpu = torch.randint(0, 7, (n,), generator=gen)

    results = {m: {"train": 0.0, "infer": 0.0} for m in MODES}
    runtimes = {}
    for _ in range(args.rounds):
        for mode, opts in MODES.items():
            rt = Runtime.create(args.device, opts["precision"], opts["channels_last"])
            runtimes[mode] = rt
            images, labels = images_cpu.to(rt.device), labels_cpu.to(rt.device)
            c = replace(cfg, "train", precision=opts["precision"], channels_last=opts["channels_last"])
            train_rate = time_training(c, rt, images, labels, args.steps)
            results[mode]["train"] = max(results[mode]["train"], train_rate)
            results[mode]["infer"] = max(results[mode]["infer"], time_inference(c, rt, images, 8))

    rt = runtimes["ferlab (channels_last + autocast)"]
    aug_s = time_augmentation(cfg, rt, images_cpu.to(rt.device), 10)
    step_s = cfg.train.batch_size / results["ferlab (channels_last + autocast)"]["train"]

    print(f"model {cfg.model.name} ({args.config}), batch {cfg.train.batch_size}, augmentation on, "
          f"device {rt.device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'mode':<38}{'precision':>10}{'train img/s':>14}{'infer img/s':>14}")
    for mode in MODES:
        print(f"{mode:<38}{runtimes[mode].precision_name:>10}{results[mode]['train']:>14.1f}"
              f"{results[mode]['infer']:>14.1f}")
    base, fast = results["plain fp32 NCHW"], results["ferlab (channels_last + autocast)"]
    print(f"{'ratio ferlab / plain':<38}{'':>10}{fast['train'] / base['train']:>13.2f}x"
          f"{fast['infer'] / base['infer']:>13.2f}x")
    print(f"augmentation: {aug_s * 1000:.1f} ms per batch = {100 * aug_s / step_s:.1f}% of a ferlab step")
    if args.profile:
        c = replace(cfg, "train", precision="auto", channels_last=True)
        share, cap = conv_bound(c, rt, images_cpu.to(rt.device), labels_cpu.to(rt.device), args.steps)
        print(f"profile: convolution kernels (forward + backward) take {100 * share:.1f}% of a ferlab "
              f"step; they alone allow at most {cap:.0f} train img/s")


if __name__ == "__main__":
    main()
