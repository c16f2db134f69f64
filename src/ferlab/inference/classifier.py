"""One interface for every runnable model, and `load_classifier(ref)`: the one way to load one.

A *classifier* turns uint8 face crops (N, H, W) into class probabilities and says
what it is:

    class_names     tuple of labels, index = class id
    preprocessing   the `Preprocessing` its inputs need
    tta             its default test-time augmentation
    description     one line for logs and the server's health answer
    path            the file it came from
    temperature     its calibration temperature (1.0: raw scores; see calibration.py)
    predict_proba(faces, *, tta=None, batch_size=256, calibrated=True) -> (N, classes) numpy
                    (batch_size in views: faces x TTA views x an ensemble's own views)

`load_classifier` resolves every kind of reference - a shipped model's name
(`bundled`, `fast`, `fast-int8`), a run folder, a `.pt` checkpoint, an `.onnx`
export - and returns a `TorchClassifier` or an `OnnxClassifier`; `calibrated=False` loads
it with its raw, uncalibrated scores. evaluate,
predict, the recognizer, the server, distillation and the CLI all load models
through it.

Depends on: calibration, errors, preprocess, shipped, tta; checkpoint, inference and runtime
(so PyTorch) only when a PyTorch model is loaded, onnxruntime only when an .onnx file is:
predicting with an ONNX model never imports PyTorch, which takes seconds to import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..core.errors import CheckpointError
from ..core.threads import set_process_threads
from ..data.preprocess import Preprocessing, preprocess
from .shipped import resolve_model_ref
from .temperature import apply_temperature, stored_temperature
from .tta import VIEW_COUNT, VIEWS_PER_BATCH, check_tta, faces_per_batch, mean_over_views

if TYPE_CHECKING:  # PyTorch is imported only when a PyTorch model is loaded
    from ..core.runtime import Runtime
    from .checkpoint import LoadedModel

ONNX_METADATA_KEY = "ferlab"  # the metadata entry `export_onnx` writes


class Classifier(Protocol):
    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    tta: str
    description: str
    path: Path
    temperature: float

    def predict_proba(self, faces: np.ndarray, *, tta: str | None = None, batch_size: int = VIEWS_PER_BATCH,
                      calibrated: bool = True) -> np.ndarray: ...


class _Calibrated:
    """Applies the stored temperature to what `raw_proba` returns (the argmax never changes)."""

    temperature: float = 1.0
    tta: str = "none"
    inner_views: int = 1  # views the model itself runs per face (an ensemble's members' TTA)

    def raw_proba(self, faces: np.ndarray, tta: str, batch_size: int) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, faces: np.ndarray, *, tta: str | None = None, batch_size: int = VIEWS_PER_BATCH,
                      calibrated: bool = True) -> np.ndarray:
        """Probabilities of uint8 faces (N, H, W). `batch_size` counts views, not faces: each
        forward pass holds at most that many (faces x TTA views x the model's own views),
        so memory is bounded whatever the TTA and the model."""
        tta = self.tta if tta is None else tta
        batch = faces_per_batch(VIEW_COUNT[check_tta(tta) or "none"] * self.inner_views, batch_size)
        probs = self.raw_proba(faces, tta, batch)
        return apply_temperature(probs, self.temperature) if calibrated else probs


class TorchClassifier(_Calibrated):
    """A ferlab checkpoint on PyTorch (`.model` is the nn.Module, in eval mode)."""

    def __init__(self, loaded: LoadedModel, runtime: Runtime | None = None, calibrated: bool = True):
        from ..core.runtime import Runtime

        self.runtime = runtime or Runtime.create()
        self.loaded = loaded
        self.model = loaded.model.to(self.runtime.device).eval()
        self.class_names = loaded.class_names
        self.preprocessing = loaded.preprocessing
        self.tta = loaded.meta.get("tta", "none")
        self.description = loaded.description
        self.path = loaded.path
        self.temperature = _temperature(loaded.meta, loaded.path) if calibrated else 1.0
        # An ensemble runs its members one after another, each with its own views.
        self.inner_views = max((VIEW_COUNT[m.tta] for m in getattr(self.model, "members", ())), default=1)

    def raw_proba(self, faces: np.ndarray, tta: str, batch_size: int) -> np.ndarray:
        from .torch_proba import predict_proba

        return predict_proba(self.model, faces, self.preprocessing, self.runtime, tta=tta,
                             batch_size=batch_size, num_classes=len(self.class_names))


def _temperature(meta: dict[str, Any], path: Path) -> float:
    try:
        return stored_temperature(meta)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e


class OnnxClassifier(_Calibrated):
    """A ferlab ONNX export (fp32 or int8) on ONNX Runtime's CPU provider."""

    def __init__(self, path: str | Path, calibrated: bool = True, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{path}: no such ONNX model file")
        options = ort.SessionOptions()
        if threads:  # several server workers share the cores: each gets its part
            options.intra_op_num_threads = threads
        # ORT's idle threads spin for a while after each run by default, holding cores the
        # face detector (OpenCV's own threads) needs next: a photo at a time was slower.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for unreadable models
            raise CheckpointError(f"{path}: not a readable ONNX model ({e})") from e
        meta = self.session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
        if meta is None:
            raise CheckpointError(f"{path}: not exported by ferlab (no '{ONNX_METADATA_KEY}' metadata)")
        meta = json.loads(meta)
        self.meta = meta
        self.class_names = tuple(meta["class_names"])
        self.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        self.tta = meta.get("tta", "none")
        kind = "int8, ONNX Runtime" if meta.get("quantization") else "ONNX Runtime"
        self.description = f"{meta.get('model')} ({kind}) from {path}"
        self._input = self.session.get_inputs()[0].name
        self.temperature = _temperature(meta, self.path) if calibrated else 1.0
        self.inner_views = int(meta.get("inner_views", 1))  # an ensemble graph: every member's views

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def raw_proba(self, faces: np.ndarray, tta: str, batch_size: int) -> np.ndarray:
        """numpy all the way (no PyTorch import): preprocess, TTA views, mean softmax."""
        faces = np.asarray(faces)
        out = [onnx_tta_proba(self.logits, preprocess(faces[i : i + batch_size], self.preprocessing), tta)
               for i in range(0, len(faces), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)


ONE_CALL_ROWS = 256  # views of a small batch go to ONNX Runtime as one call (per-call cost)


def onnx_tta_proba(logits_fn, x: np.ndarray, tta: str) -> np.ndarray:
    """Mean softmax over the TTA views of a preprocessed numpy batch (`tta.mean_over_views`)."""
    return mean_over_views(logits_fn, x, tta, one_call_rows=ONE_CALL_ROWS)[1]


def load_classifier(
    ref: str | Path | None = None, *, device: str = "auto", precision: str = "auto",
    calibrated: bool = True, threads: int | None = None,
) -> Classifier:
    """Load any model reference: an .onnx file runs on ONNX Runtime, anything else is a
    PyTorch checkpoint (file or run folder) on `device` with `precision`. Its stored
    calibration temperature is applied unless `calibrated=False`. `threads` caps the CPU
    threads inference uses (default: all cores): a session option for ONNX Runtime, the
    process's setting for PyTorch (threads.py)."""
    path = resolve_model_ref(ref)
    if path.suffix == ".onnx":
        return OnnxClassifier(path, calibrated, threads)
    from ..core.runtime import Runtime
    from .checkpoint import load_checkpoint

    set_process_threads(threads, torch=True)  # PyTorch's pool is per process (threads.py)
    runtime = Runtime.create(device, precision)
    return TorchClassifier(load_checkpoint(path, runtime.device), runtime, calibrated)


def as_classifier(model: Any, runtime: Runtime | None = None) -> Classifier:
    """A classifier from a classifier, a `LoadedModel` (`load_checkpoint`) or a reference."""
    from .checkpoint import LoadedModel

    if isinstance(model, LoadedModel):
        return TorchClassifier(model, runtime)
    if isinstance(model, (str, Path)) or model is None:
        return load_classifier(model)
    return model


def require_torch(classifier: Classifier, purpose: str) -> TorchClassifier:
    """`purpose` (export, distillation, ...) needs the PyTorch network itself."""
    if not isinstance(classifier, TorchClassifier):
        raise CheckpointError(f"{classifier.path}: {purpose} needs a PyTorch checkpoint (.pt or run "
                              "folder), not an ONNX export")
    return classifier


__all__ = ["Classifier", "OnnxClassifier", "TorchClassifier", "as_classifier", "load_classifier",
           "require_torch", "resolve_model_ref"]
