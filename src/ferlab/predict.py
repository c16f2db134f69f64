"""Prediction on face crops: image files or arrays in, the top class and all probabilities out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import LoadedModel
from .inference import predict_proba
from .preprocess import to_gray48
from .runtime import Runtime


@dataclass(frozen=True)
class Prediction:
    source: str
    emotion: str
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "emotion": self.emotion, "probabilities": self.probabilities}


def predict_crops(
    loaded: LoadedModel,
    images: list[Any],
    sources: list[str] | None = None,
    runtime: Runtime | None = None,
    tta: str | None = None,
) -> list[Prediction]:
    """Classify face crops (paths, PIL images or arrays of any size and colour)."""
    runtime = runtime or Runtime.create()
    loaded.model.to(runtime.device)
    size = loaded.preprocessing.image_size
    faces = np.stack([to_gray48(im, size) for im in images]) if images else np.zeros((0, size, size), np.uint8)
    tta = loaded.meta.get("tta", "none") if tta is None else tta
    probs = predict_proba(loaded.model, faces, loaded.preprocessing, runtime, tta=tta)
    sources = sources or [str(s) if isinstance(s, (str, Path)) else f"image{i}" for i, s in enumerate(images)]
    names = loaded.class_names
    return [
        Prediction(src, names[int(p.argmax())], {n: float(v) for n, v in zip(names, p)})
        for src, p in zip(sources, probs)
    ]
