"""Everyday speed: one photo, one frame, one request at a time - ferlab beside the `fer` package.

    python benchmarks/everyday.py                          # every table; fer's rows if peers/ exists
    python benchmarks/everyday.py --only photos,video      # some tables
    python benchmarks/everyday.py --data fer.npz           # + accuracy and detector tables

Tables: photos/s end to end (decode excluded, detection + classification included) on
the demo photo at 256x256, 480x360 and 640x480 (one face); face crops/s at batch 1 and
256; video frames/s on a generated 640x480 clip with one face, detection on every
frame; `ferlab serve` requests/s and latency at 1, 10 and 50 concurrent clients;
start-up (`ferlab predict photo.jpg` wall time, imports included). With --data: the
PublicTest accuracy of each classification path, and the face detector's recall and
time on PublicTest faces pasted into 256-640 px photos.

fer runs in its own environment (`--fer-python`, default peers/bin/python; see the
README) through benchmarks/fer_peer.py, in the same run, one after the other; its rows
are skipped, with the reason, where that environment is absent. Nothing else should run
on the machine meanwhile: every figure is a median of timed rounds, and ratios are
only meaningful between rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from inference import cpu_name, rate  # noqa: E402  (timed rounds' median, as the other benchmarks)
from pasted import SIZES, face_free_crops, on_face, pasted_photos  # noqa: E402  (the detector photos)
from serve_load import free_port, run  # noqa: E402  (the load test's client)

from ferlab.data.preprocess import as_rgb_array  # noqa: E402
from ferlab.inference.classifier import load_classifier  # noqa: E402
from ferlab.inference.shipped import SAMPLE_PHOTO  # noqa: E402
from ferlab.photos.recognizer import EmotionRecognizer  # noqa: E402


class Fer:
    """fer's side, through fer_peer.py in its own Python; `.why` says why it is absent."""

    def __init__(self, python: Path):
        self.python, self.why = python, None
        if not python.exists():
            self.why = f"{python} not found (make it as the README says)"
            return
        check = subprocess.run([str(python), "-c", "import fer.fer"], capture_output=True, text=True)
        if check.returncode:
            self.why = f"fer does not import in {python}: {check.stderr.strip().splitlines()[-1:]}"

    def __call__(self, task: str, **args) -> dict | None:
        if self.why:
            return None
        out = subprocess.run([str(self.python), str(HERE / "fer_peer.py"), task, json.dumps(args)],
                             capture_output=True, text=True)
        lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode or not lines:
            self.why = f"fer_peer.py {task} failed: {out.stderr.strip()[-300:]}"
            return None
        return json.loads(lines[-1][7:])


def ratio(ours: float, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


def make_photos(folder: Path) -> list[Path]:
    rgb = as_rgb_array(SAMPLE_PHOTO)
    paths = []
    for w, h in SIZES:  # the square photo cropped to the aspect, then scaled: one face each
        side = int(rgb.shape[0] * h / w)
        top = (rgb.shape[0] - side) // 2
        img = cv2.resize(rgb[top : top + side], (w, h), interpolation=cv2.INTER_AREA)
        paths.append(folder / f"photo_{w}x{h}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return paths


def photos_table(paths: list[Path], fer: Fer, seconds: float, extra: list[str] = ()) -> None:
    images = [as_rgb_array(p) for p in paths]
    default = EmotionRecognizer()
    rows = [(f"ferlab default ({default.detector_name}, ensemble-int8)", default),
            ("ferlab --detector haar", EmotionRecognizer(detector="haar")),
            ("ferlab bundled-int8 (one net, ten-crop)", EmotionRecognizer("bundled-int8")),
            ("ferlab fast-int8", EmotionRecognizer("fast-int8")),
            ("ferlab --min-face 0.05", EmotionRecognizer(min_face=0.05)),
            ("ferlab bundled (PyTorch, ten-crop)", EmotionRecognizer("bundled")),
            *((f"ferlab {Path(m).name[-35:]}", EmotionRecognizer(m)) for m in extra)]
    theirs = fer("photos", photos=[str(p) for p in paths], seconds=seconds)
    heads = "".join(f"{f'{w}x{h}':>10}" for w, h in SIZES)
    print(f"\nphotos/s, one face per photo (faces found per size in brackets)\n"
          f"{'':<42}{heads}{'all':>9}{'vs fer':>8}")
    # Two rounds over the rows, the best of each kept: measured once, whichever row ran first
    # (right after fer's TensorFlow process) lost up to a fifth of its rate.
    best: dict[str, tuple[list[float], float]] = {}
    for _ in range(2):
        for name, rec in rows:
            per = [rate(lambda img=img, rec=rec: rec.detect_emotions(img), 1, seconds) for img in images]
            every = rate(lambda rec=rec: [rec.detect_emotions(img) for img in images], len(images), seconds)
            old = best.get(name, ([0.0] * len(per), 0.0))
            best[name] = ([max(a, b) for a, b in zip(old[0], per)], max(old[1], every))
    for name, rec in rows:
        found = [len(rec.detect_emotions(img)) for img in images]
        per, every = best[name]
        cells = "".join(f"{f'{r:.1f} [{n}]':>10}" for r, n in zip(per, found))
        print(f"{name:<42}{cells}{every:>9.1f}{ratio(every, theirs and theirs['all']):>8}")
    if theirs:
        cells = "".join(f"{f'{r:.1f} [{n}]':>10}" for r, n in zip(theirs["per_photo"], theirs["found"]))
        print(f"{'fer 25.10.3 (FER(), TFLite)':<42}{cells}{theirs['all']:>9.1f}")
    else:
        print(f"fer: skipped, {fer.why}")


def crops_table(fer: Fer, seconds: float, extra: list[str]) -> None:
    crops = np.random.default_rng(0).integers(0, 256, (256, 48, 48), dtype=np.uint8)
    rows = [("ensemble-int8", None), ("bundled-int8", "tencrop"), ("bundled-int8", "flip"),
            ("bundled-int8", "none"),
            ("fast-int8", "none"), ("bundled", "tencrop"), *((m, None) for m in extra)]
    theirs = fer("crops", seconds=seconds)
    print(f"\nface crops/s (48x48 for ferlab, 64x64 for fer)\n"
          f"{'':<42}{'TTA':<9}{'batch 1':>9}{'batch 256':>11}")
    for ref, tta in rows:
        clf = load_classifier(ref)
        tta = clf.tta if tta is None else tta  # an extra model: its own (an ensemble: its members')
        one = rate(lambda clf=clf, tta=tta: clf.predict_proba(crops[:1], tta=tta), 1, seconds)
        many = rate(lambda clf=clf, tta=tta: clf.predict_proba(crops, tta=tta), len(crops), seconds)
        print(f"{'ferlab ' + Path(ref).name[-35:]:<42}{tta:<9}{one:>9.0f}{many:>11.0f}")
    if theirs:
        print(f"{'fer 25.10.3 (TFLite)':<42}{'none':<9}{theirs['1']:>9.0f}{theirs['256']:>11.0f}")
    else:
        print(f"fer: skipped, {fer.why}")


def make_clip(path: Path, frames: int = 120) -> Path:
    """640x480, 30 fps, one face drifting and zooming slowly across a still background."""
    rgb = as_rgb_array(SAMPLE_PHOTO)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
    for i in range(frames):
        s = 1.0 + 0.2 * np.sin(i / 20)
        m = np.float32([[s * 1.25, 0, 40 * np.sin(i / 15) - 60], [0, s * 1.25, -80]])
        frame = cv2.warpAffine(rgb, m, (640, 480), borderMode=cv2.BORDER_REFLECT)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def video_table(folder: Path, fer: Fer) -> None:
    from ferlab.photos.video import predict_video

    clip = make_clip(folder / "clip.avi")
    print(f"\nvideo: {clip.name}, 640x480, 120 frames, one face; detection on every frame\n"
          f"{'':<42}{'frames/s':>9}{'faces':>7}{'tracks':>8}")
    for name, rec in (("ferlab default", EmotionRecognizer()),
                      ("ferlab --min-face 0.2 (one flag)", EmotionRecognizer(min_face=0.2)),
                      ("ferlab bundled-int8 --tta flip", EmotionRecognizer("bundled-int8", tta="flip"))):
        predict_video(rec, clip, folder / "warm.csv")
        start = time.perf_counter()
        summary = predict_video(rec, clip, folder / "run.csv")
        fps = summary["frames"] / (time.perf_counter() - start)
        print(f"{name:<42}{fps:>9.1f}{summary['faces']:>7}{summary['tracks']:>8}")
    theirs = fer("video", video=str(clip))
    if theirs:
        print(f"{'fer 25.10.3':<42}{theirs['fps']:>9.1f}{theirs['faces']:>7}{'-':>8}")
    else:
        print(f"fer: skipped, {fer.why}")


def decode_table(photo: Path, seconds: float) -> None:
    """ms to decode the 640x480 JPEG upload: in colour, and its luma only (what serve does)."""
    jpeg = cv2.imencode(".jpg", cv2.imread(str(photo)), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    print(f"\ndecoding the 640x480 JPEG ({len(jpeg) // 1024} KB), ms per image\n"
          f"{'colour (annotated output)':<42}{1000 / rate(lambda: as_rgb_array(jpeg), 1, seconds):>8.2f}\n"
          f"{'luma only (serve, predict without pictures)':<42}"
          f"{1000 / rate(lambda: as_rgb_array(jpeg, gray=True), 1, seconds):>8.2f}")


def serve_table(photo: Path, seconds: float, workers: tuple[int, ...] = (1, 2)) -> None:
    import httpx

    jpeg = cv2.imencode(".jpg", cv2.imread(str(photo)), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    print(f"\nferlab serve, POST /api/predict with a 640x480 JPEG ({len(jpeg) // 1024} KB, one face), "
          f"{seconds:g} s per row (fer has no server)\n"
          f"{'':<20}{'clients':>8}{'req/s':>8}{'p50 ms':>8}{'p95 ms':>8}{'errors':>8}")
    for n_workers in workers:
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "ferlab", "serve", "--port", str(port),
                                   "--workers", str(n_workers)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 90
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).raise_for_status()
                    break
                except httpx.HTTPError as e:
                    if server.poll() is not None or time.time() > deadline:
                        raise SystemExit("server did not start") from e
                    time.sleep(0.3)
            url = f"http://127.0.0.1:{port}/api/predict"
            asyncio.run(run(url, 2, 1.0, jpeg))  # warm every worker
            for clients in (1, 10, 50):
                latencies, errors, elapsed = asyncio.run(run(url, clients, seconds, jpeg))
                q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else [0.0] * 19
                print(f"{f'--workers {n_workers}':<20}{clients:>8}{len(latencies) / elapsed:>8.1f}"
                      f"{statistics.median(latencies) * 1000 if latencies else 0:>8.0f}{q[18] * 1000:>8.0f}"
                      f"{len(errors):>8}" + (f"  e.g. {errors[0][:60]}" if errors else ""))
        finally:
            server.terminate()
            server.wait(timeout=20)


def startup_table(photo: Path, fer: Fer) -> None:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ferlab", "predict", str(photo)], check=True,
                       capture_output=True)
        times.append(time.perf_counter() - start)
    theirs = fer("startup", photo=str(photo))
    print(f"\nstart-up: one photo end to end in a new process (median of 3)\n"
          f"{'ferlab predict photo.jpg':<42}{sorted(times)[1]:>8.2f} s")
    if theirs:
        print(f"{'fer (import, FER(), detect_emotions)':<42}{theirs['seconds']:>8.2f} s")
    else:
        print(f"fer: skipped, {fer.why}")


def accuracy_table(data: str) -> None:
    from ferlab.data import load_dataset
    from ferlab.evaluation.scores import evaluate

    fer2013, _ = load_dataset(data)
    print(f"\nclassification paths, accuracy on PublicTest ({data})")
    # An ensemble's members carry their own TTA inside: no outer TTA for it.
    for ref, tta in (("ensemble-int8", "none"), ("ensemble", "none"),
                     ("bundled-int8", "tencrop"), ("bundled", "tencrop"), ("bundled-int8", "flip"),
                     ("bundled", "flip"), ("fast-int8", "none")):
        result = evaluate(load_classifier(ref), fer2013, "PublicTest", tta=tta)
        print(f"{ref:<20}{tta:<9}{result['accuracy']:>8.4f}")


def detector_table(data: str, photo_paths: list[Path], fer: Fer, seconds: float, n: int = 300) -> None:
    """Each detector on the same photos: recall on PublicTest faces pasted into 256-640 px
    photos, false boxes there and on face-free crops, ms per photo on the demo photo at the
    three sizes, and the accuracy of detection then classification (a missed face is wrong)."""
    from ferlab.core.labels import EMOTIONS
    from ferlab.data import load_dataset

    photos = pasted_photos(load_dataset(data)[0].split("PublicTest"), n)
    free = face_free_crops()
    timing = [cv2.cvtColor(as_rgb_array(p), cv2.COLOR_RGB2GRAY) for p in photo_paths]
    heads = "".join(f"{f'ms {w}x{h}':>12}" for w, h in SIZES)
    print(f"\nface detectors on {n} PublicTest faces (20-60% of the shorter side) pasted into 256-640 px "
          f"photos and {len(free)} face-free crops of the demo photo; ms per photo (detection alone) on the "
          f"demo photo; accuracy: detection then classification (default model; a missed face counts "
          f"wrong), and on the faces found\n"
          f"{'':<34}{'recall':>7}{'false':>6}{'free':>6}{heads}{'acc':>7}{'found':>7}")

    def row(name: str, found: list[list[tuple[list[int], int]]], free_boxes: int, ms: list[float]) -> None:
        hits = right = 0
        for (_, truth, label), faces in zip(photos, found):
            on = [emotion for box, emotion in faces if on_face(box, truth)]
            hits += bool(on)
            right += bool(on) and on[0] == label
        false = sum(not on_face(box, truth)
                    for (_, truth, _), faces in zip(photos, found) for box, _ in faces)
        cells = "".join(f"{m:>12.1f}" for m in ms)
        print(f"{name:<34}{hits / n:>7.3f}{false:>6}{free_boxes:>6}{cells}{right / n:>7.3f}"
              f"{right / max(hits, 1):>7.3f}")

    for name, options in (("ferlab yunet (default)", {"detector": "yunet"}),
                          ("ferlab haar (fallback)", {"detector": "haar"}),
                          ("ferlab yunet --min-face 0.05", {"detector": "yunet", "min_face": 0.05}),
                          ("ferlab haar --min-face 0.05", {"detector": "haar", "min_face": 0.05})):
        rec = EmotionRecognizer(**options)
        found = [[(f["box"], EMOTIONS.index(f["emotion"])) for f in rec.detect_emotions(g)]
                 for g, _, _ in photos]
        free_boxes = sum(len(rec.detector.detect(g)) for g in free)
        ms = [1000 / rate(lambda g=g, rec=rec: rec.detector.detect(g), 1, seconds) for g in timing]
        row(name, found, free_boxes, ms)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for k, image in enumerate([g for g, _, _ in photos] + free):
            paths.append(str(Path(tmp) / f"{k}.png"))
            cv2.imwrite(paths[-1], image)
        theirs = fer("detector", photos=paths, timing=[str(p) for p in photo_paths], seconds=seconds)
    if theirs:
        row("fer 25.10.3 (Haar, min 50 px)", theirs["found"][:n], sum(map(len, theirs["found"][n:])),
            theirs["ms"])
    else:
        print(f"fer: skipped, {fer.why}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="photos,crops,video,decode,serve,startup,accuracy,detector",
                    help="comma-separated tables: photos, crops, video, decode, serve, startup, and with "
                         "--data accuracy, detector")
    ap.add_argument("--fer-python", type=Path, default=Path("peers/bin/python"))
    ap.add_argument("--seconds", type=float, default=2.0, help="length of one timed round")
    ap.add_argument("--serve-seconds", type=float, default=10.0)
    ap.add_argument("--extra-model", action="append", default=[],
                    help="another model for the photos and crops tables (a candidate default); repeatable")
    ap.add_argument("--data", help="a FER2013 cache or source: adds the accuracy and detector tables")
    args = ap.parse_args()
    only = set(args.only.split(","))
    fer = Fer(args.fer_python)
    where = f"peers at {args.fer_python}" if not fer.why else fer.why
    print(f"CPU: {cpu_name()}; fer: {where}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_photos(folder)
        if "photos" in only:
            photos_table(paths, fer, args.seconds, args.extra_model)
        if "crops" in only:
            crops_table(fer, args.seconds, args.extra_model)
        if "video" in only:
            video_table(folder, fer)
        if "decode" in only:
            decode_table(paths[-1], args.seconds)
        if "serve" in only:
            serve_table(paths[-1], args.serve_seconds)
        if "startup" in only:
            startup_table(paths[0], fer)
        if args.data and "accuracy" in only:
            accuracy_table(args.data)
        if args.data and "detector" in only:
            detector_table(args.data, paths, fer, args.seconds)


if __name__ == "__main__":
    main()
