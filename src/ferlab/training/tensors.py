"""A run's training and validation images, chosen from the data and held on the device.

The training split is `data.train_split`; validation is `data.val_split` ('auto':
PublicTest, else a generic name), or - for own datasets that come as bare class
folders - a stratified `data.holdout` share of the training split. `data.limit`
trains on a stratified subset. Everything lands on the device as one uint8
tensor per split, so an epoch never waits for a data loader.

Depends on: config, data; torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..config import Config
from ..data import (
    VAL_SPLITS,
    DataError,
    FerData,
    holdout_split,
    load_dataset,
    select_split,
    stratified_subset,
)


@dataclass
class TrainData:
    train_images: torch.Tensor  # (N, 48, 48) uint8 on the device
    train_labels: torch.Tensor  # (N,) int64
    val_images: torch.Tensor
    val_labels: torch.Tensor
    class_names: tuple[str, ...]
    val_split: str  # its name, or holdout-<train split>


def read_data(cfg: Config, log: Callable[[str], None]) -> FerData:
    if not cfg.data.source:
        raise DataError("no training data: pass --data SOURCE (or set data.source)")
    data, report = load_dataset(cfg.data.source, skip_bad=cfg.data.skip_bad, classes=cfg.data.classes)
    for line in report.lines():
        log(line)
    return data


def prepare_data(
    cfg: Config, data: FerData | None, device: torch.device, log: Callable[[str], None]
) -> TrainData:
    data = data if data is not None else read_data(cfg, log)
    train = data.split(cfg.data.train_split)
    if cfg.data.val_split == "auto" and not set(VAL_SPLITS) & set(data.split_names):
        # Own datasets often come as bare class folders: hold out a stratified share.
        keep, held = holdout_split(train.labels, cfg.data.holdout, cfg.train.seed)
        val, train = train.subset(held), train.subset(keep)
        val_name = f"holdout-{cfg.data.train_split}"
        log(f"no validation split in the data: holding out {len(held)} of "
            f"{len(held) + len(keep)} {cfg.data.train_split} images (data.holdout="
            f"{cfg.data.holdout:g}, stratified, fixed by train.seed)")
    else:
        val_name = select_split(data, cfg.data.val_split, VAL_SPLITS, "validation")
        val = data.split(val_name)
    if cfg.data.limit is not None:
        train = train.subset(stratified_subset(train.labels, cfg.data.limit, cfg.train.seed))

    def put(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return TrainData(put(train.images), put(train.labels), put(val.images), put(val.labels),
                     data.class_names, val_name)
