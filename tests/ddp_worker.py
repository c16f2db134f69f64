"""Run by test_distributed.py under torchrun: train, then save this rank's final weights."""

import sys
from pathlib import Path

import torch

from ferlab.core.config import load_config
from ferlab.training import train

cache, out, weights_dir = sys.argv[1:4]
cfg = load_config(None, [f"data.source={cache}", *sys.argv[4:]])


def keep_weights(row, model):
    if row["epoch"] == cfg.train.epochs:
        rank = torch.distributed.get_rank()
        torch.save(model.state_dict(), Path(weights_dir) / f"rank{rank}.pt")


train(cfg, out, on_epoch_end=keep_weights)
