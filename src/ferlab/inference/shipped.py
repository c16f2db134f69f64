"""The models that ship inside the package, and the names that stand for them.

`bundled`, `bundled-int8`, `fast`, `fast-int8`, `ensemble`, `ensemble-int8` and `ferplus` work wherever
a model is accepted (a checkpoint
path, run folder or .onnx file): `ferlab predict fast-int8 photo.jpg`,
`EmotionRecognizer("fast")`, `train.teacher: bundled`. A real file or folder of
the same name wins, so a user's own `bundled/` run folder is never shadowed.

Depends on: errors; nothing else but the standard library.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import UserError

WEIGHTS = Path(__file__).parents[1] / "weights"
BUNDLED_MODEL = WEIGHTS / "ferlab-fer2013.pt"
# The fast model: a small student distilled from the bundled one, and its int8 ONNX export.
BUNDLED_FAST = WEIGHTS / "ferlab-fer2013-fast.pt"
BUNDLED_FAST_INT8 = WEIGHTS / "ferlab-fer2013-fast-int8.onnx"
# Trained on the FER+ crowd votes: FER+'s 8 classes (contempt too), FER+ class names.
BUNDLED_FERPLUS = WEIGHTS / "ferlab-ferplus.pt"
# The bundled model quantized to int8 (ONNX Runtime), ten-crop TTA and its own temperature:
# the default on a CPU before the ensemble below (as accurate on validation, several times
# faster for one face, and no PyTorch import). Saliency maps come from its PyTorch twin.
BUNDLED_INT8 = WEIGHTS / "ferlab-fer2013-int8.onnx"
# Three members averaged: the bundled model, its robust twin (same net trained on blurred,
# compressed, noisy, dim, low-resolution faces) and EfficientNet-Lite0 fine-tuned from
# ImageNet (MODEL_CARD.md). Its int8 export is what prediction runs by default on a CPU
# (no PyTorch import).
BUNDLED_ENSEMBLE = WEIGHTS / "ferlab-fer2013-ensemble.pt"
BUNDLED_ENSEMBLE_INT8 = WEIGHTS / "ferlab-fer2013-ensemble-int8.onnx"
BUNDLED_NAMES = {"bundled": BUNDLED_MODEL, "bundled-int8": BUNDLED_INT8, "fast": BUNDLED_FAST,
                 "fast-int8": BUNDLED_FAST_INT8, "ensemble": BUNDLED_ENSEMBLE,
                 "ensemble-int8": BUNDLED_ENSEMBLE_INT8, "ferplus": BUNDLED_FERPLUS}
# a shipped export -> the checkpoint it was made from
TWINS = {BUNDLED_INT8.name: BUNDLED_MODEL, BUNDLED_ENSEMBLE_INT8.name: BUNDLED_ENSEMBLE}
SAMPLE_PHOTO = Path(__file__).parents[1] / "assets" / "astronaut.jpg"  # NASA, public domain
# What a run folder given as a model means, in order: the one list every resolver reads.
RUN_FOLDER_MODELS = ("best.pt", "last.pt", "model.pt")
MODEL_SUFFIXES = (".pt", ".pth", ".onnx")


class ShippedModelMissing(UserError, FileNotFoundError):
    """A shipped model's file is absent from this install (a trimmed wheel, a source tree)."""


def default_model_path() -> Path:
    """The PyTorch model used when none is named (evaluate, export, calibrate, a GPU): the
    ensemble where this install has it, else the bundled net."""
    for path in (BUNDLED_ENSEMBLE, BUNDLED_MODEL):
        if path.exists():
            return path
    raise ShippedModelMissing(
        f"no bundled model in this install ({BUNDLED_MODEL.name}); pass a checkpoint or run folder"
    )


def default_predict_path(device: str = "auto", precision: str = "auto") -> Path:
    """The model prediction uses when none is named: an int8 export on the default device
    and precision (the ensemble's, else the bundled net's), else (a GPU or exact fp32 asked
    for) the PyTorch checkpoint."""
    if device == "auto" and precision == "auto":
        for path in (BUNDLED_ENSEMBLE_INT8, BUNDLED_INT8):
            if path.exists():
                return path
    return default_model_path()


def twin_checkpoint(path: str | Path) -> Path | None:
    """The PyTorch checkpoint a shipped export was made from (for saliency), else None."""
    path = Path(path)
    twin = TWINS.get(path.name)
    return twin if twin is not None and is_shipped(path) and twin.exists() else None


def bundled_path(name: str | Path) -> Path | None:
    """The file behind a shipped model's name, unless a real file or folder of that name
    exists; None for anything else."""
    if str(name) not in BUNDLED_NAMES or Path(name).exists():
        return None
    path = BUNDLED_NAMES[str(name)]
    if not path.exists():
        raise ShippedModelMissing(f"no {name!s} model in this install ({path.name})")
    return path


def resolve_model_ref(ref: str | Path | None, *, default=default_model_path) -> Path:
    """The one reader of a model reference, used by every command and loader: None -> the
    default model (`default()`); a shipped model's name -> its file; a run folder -> the
    first of RUN_FOLDER_MODELS it holds; anything else -> the path as given (the loader
    that opens it says what is wrong with it)."""
    if ref is None:
        return default()
    path = bundled_path(ref) or Path(ref)
    if path.is_dir():
        for name in RUN_FOLDER_MODELS:
            if (path / name).exists():
                return path / name
    return path


def is_model_ref(ref: str) -> bool:
    """Whether a command-line argument names a model rather than a photo or photo folder
    (`ferlab predict [MODEL] INPUTS...`): a shipped name, a model file, a run folder."""
    path = Path(ref)
    if ref in BUNDLED_NAMES and not path.exists():
        return True
    return path.suffix in MODEL_SUFFIXES or (
        path.is_dir() and any((path / n).exists() for n in RUN_FOLDER_MODELS))


def model_help(what: str = "checkpoint, run folder, .onnx", default: str = "") -> str:
    """A CLI help string for a model argument, naming every shipped model."""
    names = ", ".join(BUNDLED_NAMES)
    return f"{what}, or a shipped model: {names}" + (f" (default: {default})" if default else "")


def portable_source(path: str | Path) -> str:
    """How a file a model was made from is named inside the model: a shipped model by its
    name, anything else as FOLDER/FILE. Never the absolute path: model files travel, and
    every user of one would see the folders of the machine that made it."""
    path = Path(path)
    for name, shipped in BUNDLED_NAMES.items():
        if path.resolve() == shipped.resolve():
            return name
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def is_shipped(path: str | Path) -> bool:
    """True for a file inside the package's weights folder (never write reports there)."""
    return Path(path).resolve().parent == WEIGHTS.resolve()
