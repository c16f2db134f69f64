"""Training: `train(cfg)` runs a whole run; one epoch is `train_one_epoch(state, data, epoch)`.

    loop.py        train(): set a run up, run its epochs, write its summary
    engine.py      train_one_epoch, validate, run_epoch (one history row)
    state.py       TrainState: model, optimizer, schedule, scaler, runtime, preprocessing, ranks
    tensors.py     the run's train/validation splits as device tensors
    run_folder.py  config, checkpoints, history, curves, summary; resume checks
    optim.py       optimizer and schedule tables
    budget.py      epoch count fitted to a time budget
    finetune.py    starting from a checkpoint: new head, frozen stages
    distill.py     a teacher's soft targets in the loss
    distributed.py torchrun ranks
"""

from .engine import train_one_epoch, validate
from .loop import train
from .optim import make_optimizer, make_scheduler
from .run_folder import RunError, default_run_dir
from .state import TrainState, epoch_steps
from .tensors import TrainData

__all__ = ["RunError", "TrainData", "TrainState", "default_run_dir", "epoch_steps", "make_optimizer",
           "make_scheduler", "train", "train_one_epoch", "validate"]
