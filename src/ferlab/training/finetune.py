"""Start a run from a trained checkpoint: your own classes, a new head, frozen or partly frozen.

`train.init` names a ferlab checkpoint ("bundled": the shipped model). The run
takes that checkpoint's architecture and preprocessing and loads its weights. If
the data's classes differ from the checkpoint's (your own label set, any number
of classes), the classifier (the model API's `get_classifier`, models/api.py) is
replaced by a fresh one sized for them; with the same classes every weight carries over.

`train.finetune` says what trains:

* `all`  - everything the architecture trains (the default; also for runs without init);
* `head` - only the classifier: the base is a fixed feature extractor (fast);
* `N`    - the classifier and the last N stages (the model API's `stages`: one conv
  block of `vgg` or `seed_cnn`, one stage of a transfer base).

Frozen BatchNorm layers also keep their running statistics (`freeze_batchnorm_stats`).

Depends on: core (config), inference (checkpoint's error type), models (the model API); torch.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..core.config import Config, ConfigError, ModelConfig, replace_model
from ..inference.checkpoint import CheckpointError
from ..models import implements_api


def adopt_init_model(cfg: Config, ckpt: dict[str, Any]) -> Config:
    """The run's config with the model section taken from the init checkpoint."""
    args = {k: v for k, v in ckpt["model"]["args"].items() if k != "num_classes"}
    wanted = ModelConfig(ckpt["model"]["name"], args)
    mine = ModelConfig(cfg.model.name, {k: v for k, v in cfg.model.args.items() if k != "num_classes"})
    if mine not in (ModelConfig(), wanted):
        raise ConfigError(
            f"train.init {cfg.train.init}: the architecture comes from the checkpoint "
            f"({wanted.name} {wanted.args}); drop the config's model section "
            f"({mine.name} {mine.args})"
        )
    return replace_model(cfg, wanted)


def classifier_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """The model's classifier and its name (the model API's `get_classifier`)."""
    if not implements_api(model):
        raise CheckpointError(f"{type(model).__name__} cannot be fine-tuned: it has no single "
                              "classifier (fine-tune an ensemble's members one by one)")
    return model.get_classifier()


def load_init_weights(model: nn.Module, ckpt: dict[str, Any], class_names: tuple[str, ...]) -> str:
    """Copy the checkpoint's weights into `model`; a new label set gets a new classifier.

    Returns a one-line description of what was loaded, for the run log.
    """
    head_name, _ = classifier_head(model)
    head_keys = {f"{head_name}.weight", f"{head_name}.bias"}
    same_classes = tuple(ckpt["class_names"]) == tuple(class_names)
    own = model.state_dict()
    state = {k: v for k, v in ckpt["state_dict"].items() if same_classes or k not in head_keys}
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and own[k].shape != v.shape]
    missing = sorted(set(own) - set(state) - (set() if same_classes else head_keys))
    unexpected = sorted(set(state) - set(own))
    if wrong or missing or unexpected:
        raise CheckpointError(
            "train.init: the checkpoint's weights do not fit its own architecture "
            f"(shape mismatches {wrong[:3]}, missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.load_state_dict(state, strict=False)
    if same_classes:
        return "all weights loaded (same classes)"
    return (f"weights loaded; new classifier (layer {head_name}) for {len(class_names)} classes "
            f"({', '.join(class_names)}) replaces the one for {', '.join(ckpt['class_names'])}")


def model_stages(model: nn.Module) -> list[nn.Module]:
    """The feature extractor's stages, input to output (the model API's `stages`)."""
    classifier_head(model)  # the same check: a model without the API has no stages either
    return model.stages()


def check_finetune(mode: str) -> None:
    if mode not in ("all", "head") and not (mode.isascii() and mode.isdigit() and int(mode) >= 0):
        raise ConfigError(f"train.finetune must be all, head or a number of stages, got {mode!r}")


def apply_finetune(model: nn.Module, mode: str) -> str:
    """Set requires_grad as `train.finetune` says; returns what trains, for the run log."""
    check_finetune(mode)
    if mode == "all":
        return "training all layers"
    head_name, head = classifier_head(model)
    model.requires_grad_(False)
    head.requires_grad_(True)
    stages = model_stages(model)
    n = 0 if mode == "head" else min(int(mode), len(stages))
    for stage in stages[len(stages) - n:]:
        stage.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return (f"training the classifier (layer {head_name})" + (f" and the last {n} of {len(stages)} stages"
            if n else f"; {len(stages)} stages frozen") + f" ({trainable:,} of {total:,} parameters)")
