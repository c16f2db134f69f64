"""`ferlab predict`: photos, folders, globs and videos in; faces with emotions out.

Inputs are expanded (folders -> the images and videos inside, globs -> matches),
each photo goes through `EmotionRecognizer.detect_emotions`, each video through
`predict_video`. A file that cannot be read is reported and the rest still run.

Depends on: errors, data (image extensions), explain (--explain), faces (drawing), files,
preprocess (decoding), shipped, video; PIL.
"""

from __future__ import annotations

import csv
import glob
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..core.errors import InputError, UserError
from ..core.files import atomic_path
from ..data import IMAGE_EXTENSIONS
from ..data.preprocess import as_rgb_array
from ..inference.shipped import SAMPLE_PHOTO, is_model_ref
from .faces import draw_faces
from .video import VIDEO_EXTENSIONS, predict_video

PHOTO_EXTENSIONS = IMAGE_EXTENSIONS | {".webp", ".bmp"}


def split_model_argument(inputs: list[str]) -> tuple[str | None, list[str]]:
    """(model reference or None, the image/video inputs)."""
    if inputs and is_model_ref(inputs[0]):
        return inputs[0], inputs[1:]
    return None, list(inputs)


def save_annotated(rgb, faces: list[dict[str, Any]], out: Path) -> Path:
    """A copy of the image with boxes and labels, written atomically."""
    with atomic_path(out) as tmp:
        Image.fromarray(draw_faces(rgb, faces)).save(tmp)
    return out


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Files from paths, folders (recursive) and glob patterns; plus the inputs that matched nothing."""
    files, missing = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.suffix.lower() in PHOTO_EXTENSIONS | VIDEO_EXTENSIONS)
        elif path.exists():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
        if not found:
            missing.append(item)
        files.extend(found)
    return files, missing


@dataclass
class PredictResult:
    photos: list[dict[str, Any]] = field(default_factory=list)  # {"source", "faces"}
    videos: list[dict[str, Any]] = field(default_factory=list)  # predict_video summaries
    errors: list[str] = field(default_factory=list)
    explanations: list[Path] = field(default_factory=list)  # saliency PNGs written


def predict_files(
    recognizer: Any,
    files: list[Path],
    *,
    annotate_dir: Path | None = None,
    video_dir: Path = Path("."),
    every: int = 1,
    progress: bool = False,
    explain_dir: Path | None = None,
    explain_classes: list[str] | None = None,
    explain_method: str = "gradcam",
) -> PredictResult:
    """Each file in turn; with `explain_dir`, photos' faces also get saliency PNGs there
    (`explain.save_explanations`; listed in `result.explanations`)."""
    if every < 1:  # refused once, up front, not once per video
        raise InputError(f"--every must be >= 1, got {every}")
    result = PredictResult()
    outputs = OutputNames()
    for path in files:
        try:
            if path.suffix.lower() in VIDEO_EXTENSIONS:
                annotated = annotate_dir / outputs.name(path, "_annotated.mp4") if annotate_dir else None
                result.videos.append(predict_video(
                    recognizer, path, video_dir / outputs.name(path, "_faces.csv"), every=every,
                    annotate_out=annotated, progress=progress,
                    timeline_out=video_dir / outputs.name(path, "_timeline.png")))
                continue
            # Colour only where a picture is written (annotated copy, heatmaps over the photo).
            rgb = as_rgb_array(path, gray=annotate_dir is None and explain_dir is None)
            if explain_dir is None:
                faces = recognizer.detect_emotions(rgb)
            else:
                from ..inference.explain import save_explanations  # PyTorch: only when heatmaps are asked for

                faces = recognizer.explain(rgb, explain_classes, explain_method)
                stem = outputs.name(path, "")
                result.explanations += save_explanations(rgb, faces, explain_dir, stem, explain_classes)
                for face in faces:  # the maps are in the PNGs; the JSON keeps the region
                    face.pop("saliency")
            result.photos.append({"source": str(path), "faces": faces})
            if annotate_dir is not None:
                suffix = path.suffix if path.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
                save_annotated(rgb, faces, annotate_dir / outputs.name(path, f"_annotated{suffix}"))
        except (UserError, OSError) as e:  # an unreadable input is reported; the others still run
            message = str(e)  # a message that names the file already is not prefixed again
            result.errors.append(message if message.startswith(f"{path}:") else f"{path}: {message}")
    return result


class OutputNames:
    """Output file names, one per input, unique within a run: a/photo.jpg and b/photo.jpg
    become photo_annotated.jpg and photo-2_annotated.jpg instead of overwriting each other."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def name(self, source: Path, tail: str) -> str:
        name, n = f"{source.stem}{tail}", 1
        while name.lower() in self.used:
            n += 1
            name = f"{source.stem}-{n}{tail}"
        self.used.add(name.lower())
        return name


def format_table(result: PredictResult, class_names: tuple[str, ...]) -> str:
    lines = [f"{'source':<32}{'face':>5}  {'box (x, y, w, h)':<22}{'emotion':<10}"
             + "".join(f"{n[:8]:>9}" for n in class_names)]
    for photo in result.photos:
        if not photo["faces"]:
            lines.append(f"{photo['source'][-31:]:<32}{'-':>5}  no face found")
        for i, face in enumerate(photo["faces"]):
            box = ", ".join(map(str, face["box"]))
            lines.append(f"{photo['source'][-31:]:<32}{i:>5}  {box:<22}{face['emotion']:<10}"
                         + "".join(f"{face['probabilities'][n]:>9.3f}" for n in class_names))
    for video in result.videos:
        top = ", ".join(f"{k} {v}" for k, v in sorted(video["emotions"].items(), key=lambda kv: -kv[1]))
        lines.append(f"{video['source']}: {video['processed']} of {video['frames']} frames, "
                     f"{video['faces']} faces in {video['tracks']} track(s) ({top or 'none'}) -> "
                     f"{video['csv']}, {video['timeline']}"
                     + (f", {video['annotated']}" if video["annotated"] else ""))
    return "\n".join(lines)


def format_csv(result: PredictResult, class_names: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["source", "face", "x", "y", "w", "h", "emotion", *class_names])
    for photo in result.photos:
        for i, face in enumerate(photo["faces"]):
            writer.writerow([photo["source"], i, *face["box"], face["emotion"],
                             *(f"{face['probabilities'][n]:.5f}" for n in class_names)])
    return buf.getvalue()


def run_demo(recognizer: Any, out: Path) -> list[dict[str, Any]]:
    """Faces and emotions in the bundled public-domain photo; an annotated copy to `out`."""
    rgb = as_rgb_array(SAMPLE_PHOTO)
    faces = recognizer.detect_emotions(rgb)
    save_annotated(rgb, faces, out)
    return faces
