"""Emotions through a video: every Nth frame, results streamed to CSV, optional annotated copy.

Frames are read and written one at a time, so memory stays flat however long the video
(only each track's probabilities over time are kept, 7 numbers per face per frame, for
the timeline). Each face gets a track id across frames (tracking.py): the CSV has one
row per face per processed frame (frame, time, track, box, emotion, probabilities),
the annotated copy draws "#id emotion", and the timeline PNG plots each track's
probabilities over time.

Depends on: errors, faces (drawing), files, plots (the timeline), tracking; OpenCV for reading and
writing video.
"""

from __future__ import annotations

import contextlib
import csv
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
from tqdm import tqdm

from ..core.errors import InputError
from ..core.files import atomic_path
from .faces import draw_faces
from .tracking import IouTracker

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def predict_video(
    recognizer: Any,
    path: str | Path,
    csv_out: str | Path,
    *,
    every: int = 1,
    annotate_out: str | Path | None = None,
    progress: bool = False,
    timeline_out: str | Path | None = None,
) -> dict[str, Any]:
    """Write one CSV row per face per processed frame (and the timeline PNG); return a summary."""
    if every < 1:
        raise InputError(f"--every must be >= 1, got {every}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError(f"{path}: cannot open video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    names = recognizer.class_names
    counts: Counter[str] = Counter()
    frames = processed = 0
    writers: list[Any] = []
    with contextlib.ExitStack() as stack:
        # Exit order is reversed: release capture and writer, close the CSV, then rename
        # both temp files into place (or delete them if anything failed).
        tmp_csv = stack.enter_context(atomic_path(csv_out))
        tmp_video = stack.enter_context(atomic_path(annotate_out)) if annotate_out else None
        f = stack.enter_context(open(tmp_csv, "w", newline=""))
        stack.callback(capture.release)
        stack.callback(lambda: [w.release() for w in writers])
        bar = None
        if progress:
            bar = stack.enter_context(tqdm(total=total, desc=Path(path).name, unit="frame", leave=False))
        rows = csv.writer(f)
        rows.writerow(["frame", "time_s", "track", "x", "y", "w", "h", "emotion", *names])
        faces: list[dict[str, Any]] = []
        # Tracks may skip up to a second of frames (a missed detection, a turned head).
        tracker = IouTracker(max_age=max(1, round(fps / every)))
        series: dict[int, dict[str, list]] = {}
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if frames % every == 0:
                # The live tracks' boxes are checked again in this frame, whatever the
                # coarse pass finds: fewer dropped frames, fewer split tracks.
                faces = recognizer.detect_emotions(rgb, hints=[t.box for t in tracker.live(processed)])
                for face, track in zip(faces, tracker.update([f["box"] for f in faces], processed)):
                    face["track"] = track
                    counts[face["emotion"]] += 1
                    probs = [face["probabilities"][n] for n in names]
                    rows.writerow([frames, f"{frames / fps:.3f}", track, *face["box"], face["emotion"],
                                   *(f"{p:.5f}" for p in probs)])
                    entry = series.setdefault(track, {"time": [], "probs": []})
                    entry["time"].append(frames / fps)
                    entry["probs"].append(probs)
                processed += 1
            if tmp_video is not None:
                if not writers:
                    h, w = rgb.shape[:2]
                    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                    writers.append(cv2.VideoWriter(str(tmp_video), fourcc, fps, (w, h)))
                # Between processed frames the last faces stay drawn.
                writers[0].write(cv2.cvtColor(draw_faces(rgb, faces), cv2.COLOR_RGB2BGR))
            frames += 1
            if bar is not None:
                bar.update()
        if frames == 0:
            raise InputError(f"{path}: no frames could be read")
    if timeline_out is not None:
        from ..evaluation.plots import plot_timeline

        plot_timeline(series, names, timeline_out, f"{Path(path).name}: emotions per face track")
    return {"source": str(path), "frames": frames, "processed": processed, "fps": fps,
            "faces": sum(counts.values()), "tracks": len(series), "emotions": dict(counts),
            "csv": str(csv_out), "annotated": str(annotate_out) if annotate_out else None,
            "timeline": str(timeline_out) if timeline_out else None}
