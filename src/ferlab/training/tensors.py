"""A run's training and validation images, chosen from the data and held on the device.

The training split is `data.train_split`; validation is `data.val_split` ('auto':
PublicTest, else a generic name), or - for own datasets that come as bare class
folders - a stratified `data.holdout` share of the training split. `data.limit`
trains on a stratified subset. Everything lands on the device as one uint8
tensor per split, so an epoch never waits for a data loader.

FER+ data trains on targets made from its crowd votes as `data.labels` says
(`majority`, or the soft modes `probability`, `crossentropy`, `multi_target`:
`train_targets` then holds each face's distribution); validation always uses the
majority labels, as the FER+ paper's protocol does.

Depends on: config, data (and its votes rules); torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..core.config import Config, ConfigError
from ..data import (
    VAL_SPLITS,
    DataError,
    FerData,
    holdout_split,
    load_dataset,
    select_split,
    stratified_subset,
    vote_targets,
)


@dataclass
class TrainData:
    train_images: torch.Tensor  # (N, 48, 48) uint8 on the device
    train_labels: torch.Tensor  # (N,) int64
    val_images: torch.Tensor
    val_labels: torch.Tensor
    class_names: tuple[str, ...]
    val_split: str  # its name, or holdout-<train split>
    train_targets: torch.Tensor | None = None  # (N, K) float: FER+ soft targets (data.labels)
    label_mode: str = "majority"


def read_data(cfg: Config, log: Callable[[str], None]) -> FerData:
    if not cfg.data.source:
        raise DataError("no training data: pass --data SOURCE (or set data.source)")
    data, report = load_dataset(cfg.data.source, skip_bad=cfg.data.skip_bad, classes=cfg.data.classes,
                                unlabeled=cfg.data.labels != "majority")
    for line in report.lines():
        log(line)
    return data


def training_targets(train: FerData, mode: str, source: str | None,
                     log: Callable[[str], None]) -> tuple[FerData, np.ndarray | None]:
    """The training faces a label mode keeps and, for the soft modes, their targets.
    Labels become the targets' argmax (for --limit's stratification and train accuracy)."""
    if train.votes is None:
        if mode != "majority":
            raise DataError(f"data.labels={mode} needs crowd votes (a FER+ source), and "
                            f"{source} has only one label per face")
        return train.labeled(), None
    if mode == "majority":
        return train.labeled(), None
    targets, keep = vote_targets(train.votes, mode)
    log(f"data.labels={mode}: {len(keep)} of {len(train)} training faces have a target "
        f"({int((train.labels >= 0).sum())} have a majority label)")
    kept = train.subset(keep)
    kept = FerData(kept.images, targets.argmax(1).astype(np.int64), kept.splits, kept.ids,
                   kept.class_names, kept.votes)
    return kept, targets


def prepare_data(
    cfg: Config, data: FerData | None, device: torch.device, log: Callable[[str], None]
) -> TrainData:
    data = data if data is not None else read_data(cfg, log)
    train, targets = training_targets(data.split(cfg.data.train_split), cfg.data.labels,
                                      cfg.data.source, log)
    if cfg.data.val_split == "auto" and not any(data.resolve_split(s) for s in VAL_SPLITS):
        # Own datasets often come as bare class folders: hold out a stratified share.
        keep, held = holdout_split(train.labels, cfg.data.holdout, cfg.train.seed)
        val, train = train.subset(held), train.subset(keep)
        targets = None if targets is None else targets[keep]
        val_name = f"holdout-{cfg.data.train_split}"
        log(f"no validation split in the data: holding out {len(held)} of "
            f"{len(held) + len(keep)} {cfg.data.train_split} images (data.holdout="
            f"{cfg.data.holdout:g}, stratified, fixed by train.seed)")
    else:
        val_name = select_split(data, cfg.data.val_split, VAL_SPLITS, "validation")
        if val_name == data.resolve_split(cfg.data.train_split):  # 'auto' found the training split
            raise ConfigError(f"data.val_split {cfg.data.val_split!r} selects {val_name!r}, which is also "
                              f"data.train_split: validating on the training images would choose the "
                              f"best epoch blind; name another split with data.val_split")
        val = data.split(val_name).labeled()
    if cfg.data.limit is not None:
        chosen = stratified_subset(train.labels, cfg.data.limit, cfg.train.seed)
        train = train.subset(chosen)
        targets = None if targets is None else targets[chosen]

    def put(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return TrainData(put(train.images), put(train.labels), put(val.images), put(val.labels),
                     data.class_names, val_name, None if targets is None else put(targets),
                     cfg.data.labels)
