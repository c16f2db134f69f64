"""ferlab: facial expression recognition on FER2013, from the seed report's CNN to a served model.

The Python API keeps the seed report's vocabulary:

    from ferlab import build_model, train, evaluate, plot_loss_acc, load_config

`import ferlab` itself is light and has no side effects: each name below is
imported from its module the first time it is used (PEP 562), so a script that
only predicts never loads the training, plotting, study or serving code.

A map of the package (each module's header names what it depends on):

    labels, files, config, preprocess, runtime   foundations: class names, atomic writes,
                                                 frozen configs, the one decoder and
                                                 preprocess(), device and precision
    data, augment                                ingest + cache + split names; batched augmentation
    models/                                      the registry: seed_cnn, vgg, transfer backbones
    checkpoint, shipped                          self-describing .pt files; the shipped models' names
    inference, classifier                        TTA (one implementation); load_classifier(ref):
                                                 any model reference -> one interface
    training/                                    train(), train_one_epoch(state, data, epoch), run folders
    evaluation, plots, speedrun                  metrics and reports; the seed's figures; time budgets
    study/                                       tuning studies: spec, engine, report
    faces, detection/                            boxes and crops; face detectors (YuNet, Haar)
    recognizer, predict, video                   EmotionRecognizer; photos and videos
    export, serve, cli                           ONNX (+ int8); the web app; the command line
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "EMOTIONS": "labels",
    "Config": "config",
    "load_config": "config",
    "FerData": "data",
    "load_dataset": "data",
    "build_model": "models",
    "model_summary": "models",
    "load_checkpoint": "checkpoint",
    "load_classifier": "classifier",
    "evaluate": "evaluation",
    "plot_loss_acc": "plots",
    "EmotionRecognizer": "recognizer",
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
