"""The `fer` package's side of benchmarks/everyday.py, run in fer's own environment.

    peers/bin/python benchmarks/fer_peer.py TASK ARGS_JSON      # prints one JSON object

It imports nothing from ferlab (fer needs TensorFlow, which ferlab's environment does not
have) and times fer the way its README uses it: `FER().detect_emotions(bgr_image)`.
"""

from __future__ import annotations

import json
import sys
import time

import cv2
import numpy as np


def rate(fn, n_items: int, seconds: float, rounds: int = 3) -> float:
    """benchmarks/inference.py's `rate`, again: this file runs where ferlab is not installed."""
    fn()  # warm-up
    rates = []
    for _ in range(rounds):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn()
            count += n_items
        rates.append(count / (time.perf_counter() - start))
    return sorted(rates)[len(rates) // 2]


def photos(args: dict) -> dict:
    from fer.fer import FER

    detector = FER()
    images = [cv2.imread(p) for p in args["photos"]]
    out = {"found": [len(detector.detect_emotions(img)) for img in images]}
    out["per_photo"] = [rate(lambda img=img: detector.detect_emotions(img), 1, args["seconds"])
                        for img in images]
    out["all"] = rate(lambda: [detector.detect_emotions(img) for img in images], len(images), args["seconds"])
    return out


def crops(args: dict) -> dict:
    from fer.fer import FER

    detector = FER()
    faces = np.random.default_rng(0).integers(0, 256, (256, 64, 64)).astype(np.float32) / 255.0
    faces = (faces - 0.5) * 2.0  # fer's own preprocessing (detect_emotions)
    return {str(b): rate(lambda b=b: detector._classify_emotions(faces[:b]), b, args["seconds"])
            for b in (1, 256)}


def video(args: dict) -> dict:
    from fer.fer import FER

    detector = FER()
    capture = cv2.VideoCapture(args["video"])
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    detector.detect_emotions(frames[0])
    start, found = time.perf_counter(), 0
    capture = cv2.VideoCapture(args["video"])  # read again inside the clock, as ferlab does
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        found += len(detector.detect_emotions(frame))
    elapsed = time.perf_counter() - start
    return {"fps": len(frames) / elapsed, "frames": len(frames), "faces": found}


def startup(args: dict) -> dict:
    import subprocess

    code = ("import cv2; from fer.fer import FER; "
            f"print(FER().detect_emotions(cv2.imread({args['photo']!r}))[0]['box'])")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return {"seconds": sorted(times)[1]}


def detector(args: dict) -> dict:
    """fer's faces (box, emotion index) in each photo, and ms per photo of its face finding
    alone on each of the timing photos."""
    from fer.fer import FER

    detector = FER()
    names = list(detector._get_labels().values())
    found = []
    for path in args["photos"]:
        faces = detector.detect_emotions(cv2.imread(path))
        found.append([[list(map(int, f["box"])), names.index(max(f["emotions"], key=f["emotions"].get))]
                      for f in faces])
    ms = []
    for path in args["timing"]:
        gray = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        ms.append(1000 / rate(lambda gray=gray: detector.find_faces(gray, bgr=False), 1, args["seconds"]))
    return {"found": found, "ms": ms}


if __name__ == "__main__":
    task, raw = sys.argv[1], sys.argv[2]
    tasks = {"photos": photos, "crops": crops, "video": video, "startup": startup, "detector": detector}
    result = tasks[task](json.loads(raw))
    print("RESULT " + json.dumps(result))
