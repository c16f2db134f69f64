"""`EmotionRecognizer`: one object, one call - image in, faces with emotions out.

    from ferlab import EmotionRecognizer
    faces = EmotionRecognizer().detect_emotions("photo.jpg")   # path, PIL image or numpy array
    # [{"box": [x, y, w, h], "emotion": "happy", "probabilities": {"angry": 0.01, ...}}]

The classifier runs on PyTorch (a checkpoint or run folder; the bundled model by
default) or on ONNX Runtime (an exported .onnx file). Both use `preprocess()`
with the parameters stored beside the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import BUNDLED_MODEL, bundled_path, default_model_path  # noqa: F401  (re-exported)
from .faces import FaceBox, FaceDetector, crop_face, to_gray
from .preprocess import Preprocessing, float_to_uint8, load_image, preprocess, to_gray48

SAMPLE_PHOTO = Path(__file__).parent / "assets" / "astronaut.jpg"  # NASA, public domain


class TorchClassifier:
    def __init__(self, path: str | Path, device: str = "auto", precision: str = "auto"):
        from .checkpoint import load_checkpoint
        from .runtime import Runtime

        self.runtime = Runtime.create(device, precision)
        self.loaded = load_checkpoint(path, self.runtime.device)
        self.class_names = self.loaded.class_names
        self.preprocessing = self.loaded.preprocessing
        self.tta = self.loaded.meta.get("tta", "none")
        self.description = self.loaded.description

    def predict_proba(self, faces: np.ndarray, tta: str | None = None) -> np.ndarray:
        from .inference import predict_proba

        return predict_proba(self.loaded.model, faces, self.preprocessing, self.runtime,
                             tta=self.tta if tta is None else tta)


class OnnxClassifier:
    def __init__(self, path: str | Path):
        import onnxruntime as ort

        from .export import METADATA_KEY

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX model file")
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for unreadable models
            raise ValueError(f"{path}: not a readable ONNX model ({e})") from e
        meta = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if meta is None:
            raise ValueError(f"{path}: not exported by ferlab (no '{METADATA_KEY}' metadata)")
        meta = json.loads(meta)
        self.class_names = tuple(meta["class_names"])
        self.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        self.tta = meta.get("tta", "none")
        kind = "int8, ONNX Runtime" if meta.get("quantization") else "ONNX Runtime"
        self.description = f"{meta.get('model')} ({kind}) from {path}"
        self._input = self.session.get_inputs()[0].name

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def predict_proba(self, faces: np.ndarray, tta: str | None = None, batch_size: int = 1024) -> np.ndarray:
        import torch

        from .inference import tta_views

        mode = self.tta if tta is None else tta
        out = []
        for start in range(0, len(faces), batch_size):
            x = torch.from_numpy(preprocess(faces[start : start + batch_size], self.preprocessing))
            probs = 0.0
            views = tta_views(x, mode)
            for view in views:
                logits = self.logits(view.numpy())
                e = np.exp(logits - logits.max(1, keepdims=True))
                probs = probs + e / e.sum(1, keepdims=True)
            out.append(probs / len(views))
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)


def load_classifier(model: str | Path | None = None, device: str = "auto", precision: str = "auto"):
    """A .onnx file runs on ONNX Runtime (fp32); anything else is a PyTorch checkpoint."""
    path = Path(model) if model is not None else default_model_path()
    path = bundled_path(path) or path
    if path.suffix == ".onnx":
        return OnnxClassifier(path)
    return TorchClassifier(path, device, precision)


def as_rgb_array(image: Any) -> np.ndarray:
    """A path, PIL image or numpy array (gray, RGB or RGBA) -> uint8 RGB or gray array."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        image = load_image(image)
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("L" if image.mode in ("L", "I;16", "I") else "RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a path, PIL image or numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        image = float_to_uint8(image)
    return image


class EmotionRecognizer:
    """Faces and their emotions in photos. `detect=False` treats each image as one face crop."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "auto",
        precision: str = "auto",  # auto: bf16 where the CPU/GPU has it; fp32 for exact outputs
        detect: bool = True,
        detector: FaceDetector | None = None,
        margin: float = 0.1,
        tta: str | None = None,
    ):
        from .inference import TTA_MODES

        if tta is not None and tta not in TTA_MODES:
            raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
        self.classifier = load_classifier(model, device, precision)
        self.detect = detect
        self.detector = detector or (FaceDetector() if detect else None)
        self.margin = margin
        self.tta = tta

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classifier.class_names

    def _faces(self, boxes: list[FaceBox], crops: list[np.ndarray]) -> list[dict[str, Any]]:
        if not crops:
            return []
        size = self.classifier.preprocessing.image_size
        batch = np.stack([to_gray48(c, size) for c in crops])
        probs = self.classifier.predict_proba(batch, self.tta)
        names = self.class_names
        return [
            {"box": b.to_list(), "emotion": names[int(p.argmax())],
             "probabilities": {n: float(v) for n, v in zip(names, p)}}
            for b, p in zip(boxes, probs)
        ]

    def detect_emotions(self, image: Any) -> list[dict[str, Any]]:
        """All faces in one image, largest first: box [x, y, w, h], emotion, probabilities."""
        gray = to_gray(as_rgb_array(image))
        if not self.detect:
            return self._faces([FaceBox(0, 0, gray.shape[1], gray.shape[0])], [gray])
        boxes = self.detector.detect(gray)
        return self._faces(boxes, [crop_face(gray, b, self.margin) for b in boxes])

    def classify_crops(self, crops: list[Any]) -> list[dict[str, Any]]:
        """Face crops (any size or colour), one result each, no detection."""
        grays = [to_gray(as_rgb_array(c)) for c in crops]
        boxes = [FaceBox(0, 0, g.shape[1], g.shape[0]) for g in grays]
        return self._faces(boxes, grays)
