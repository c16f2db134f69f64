"""ferlab: facial expression recognition on FER2013, from the seed report's CNN to a served model.

The Python API keeps the seed report's vocabulary:

    from ferlab import build_model, train, evaluate, plot_loss_acc, load_config

`import ferlab` itself is light and has no side effects: each name below is
imported from its module the first time it is used (PEP 562), so a script that
only predicts never loads the training, plotting, study or serving code.

A map of the package, by stack (each package's __init__ lists its modules, and each
module's header names what it depends on; nothing imports upwards):

    core/         errors, label sets, frozen configs, atomic files, processes, threads, device
    data/         ingest (FER2013 CSV / folders / zips, FER+ votes), the cache, splits,
                  the one image decoder and preprocess()
    models/       the registry: seed_cnn, vgg, transfer backbones (VGG16, ResNet18,
                  EfficientNet-Lite0), ensembles
    inference/    checkpoints, shipped models, TTA, calibration, load_classifier, ONNX export,
                  saliency
    photos/       face detection (YuNet, Haar), EmotionRecognizer, photos and videos
    training/     train(), the epoch loop, augmentation, fine-tuning, distillation, speedrun
    evaluation/   scores, the seed's figures, the HTML report
    study/        tuning studies: spec, engine, report
    serve, cli    the web app; the command line
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "EMOTIONS": "core.labels",
    "Config": "core.config",
    "load_config": "core.config",
    "FerData": "data",
    "load_dataset": "data",
    "build_model": "models",
    "model_summary": "models",
    "load_checkpoint": "inference.checkpoint",
    "load_classifier": "inference.classifier",
    "evaluate": "evaluation.scores",
    "plot_loss_acc": "evaluation.plots",
    "EmotionRecognizer": "photos.recognizer",
    "train": "training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ferlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
