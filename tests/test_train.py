"""Training runs end to end on synthetic data: files, determinism, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY_MODEL, make_data

from ferlab.core.config import load_config
from ferlab.data import save_cache
from ferlab.inference.checkpoint import load_checkpoint, read_checkpoint
from ferlab.training import RunError, epoch_steps, train


def tiny(epochs: int = 3, *extra: str):
    return load_config(None, [*TINY_MODEL, f"train.epochs={epochs}", *extra])


def quiet(_msg: str) -> None:
    pass


def test_run_folder_contents_and_learning(tmp_path, synthetic_data):
    history = train(tiny(4), tmp_path / "run", data=synthetic_data, log=quiet)
    run = tmp_path / "run"
    for name in ("config.yaml", "history.csv", "history.json", "loss_acc.png", "best.pt", "last.pt",
                 "summary.json"):
        assert (run / name).exists(), name
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert set(history[0]) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    assert history[-1]["val_accuracy"] > 0.6  # the synthetic classes are easy
    best = max(history, key=lambda h: h["val_accuracy"])
    ckpt = read_checkpoint(run / "best.pt")
    assert ckpt["epoch"] == best["epoch"] and ckpt["class_names"][0] == "angry"
    assert {"optimizer", "scheduler", "config", "preprocessing", "metrics"} <= set(ckpt)
    loaded = load_checkpoint(run)  # a run folder resolves to best.pt
    assert loaded.meta["epoch"] == best["epoch"]
    assert json.loads((run / "history.json").read_text()) == history


def test_same_seed_same_history(tmp_path, synthetic_data):
    cfg = tiny(2, "augment.enabled=true", "model.dropout_rate=0.3")
    a = train(cfg, tmp_path / "a", data=synthetic_data, log=quiet)
    b = train(cfg, tmp_path / "b", data=synthetic_data, log=quiet)
    keys = ("loss", "accuracy", "val_loss", "val_accuracy", "lr")
    assert [[h[k] for k in keys] for h in a] == [[h[k] for k in keys] for h in b]
    c = train(tiny(2, "augment.enabled=true", "model.dropout_rate=0.3", "train.seed=1"),
              tmp_path / "c", data=synthetic_data, log=quiet)
    assert [h["loss"] for h in c] != [h["loss"] for h in a]


def test_limit_is_stratified_and_fixed_by_seed(tmp_path, synthetic_data):
    logs = []
    train(tiny(1, "data.limit=70"), tmp_path / "r", data=synthetic_data, log=logs.append)
    assert any("70 train / 140 PublicTest" in line for line in logs)


def test_existing_run_is_not_overwritten(tmp_path, synthetic_data):
    train(tiny(1), tmp_path / "r", data=synthetic_data, log=quiet)
    before = (tmp_path / "r" / "last.pt").read_bytes()
    with pytest.raises(RunError, match="already holds a run"):
        train(tiny(1), tmp_path / "r", data=synthetic_data, log=quiet)
    assert (tmp_path / "r" / "last.pt").read_bytes() == before


def test_resume_extends_and_refuses_changed_config(tmp_path, synthetic_data):
    full = train(tiny(3), tmp_path / "full", data=synthetic_data, log=quiet)
    train(tiny(2), tmp_path / "part", data=synthetic_data, log=quiet)
    resumed = train(tiny(3), tmp_path / "part", resume=True, data=synthetic_data, log=quiet)
    assert [h["val_loss"] for h in resumed] == [h["val_loss"] for h in full]
    with pytest.raises(RunError, match="train.lr"):
        train(tiny(4, "train.lr=0.01"), tmp_path / "part", resume=True, data=synthetic_data, log=quiet)


def test_budget_fits_epochs(tmp_path, synthetic_data):
    cfg = tiny(100, "train.budget_minutes=0.05")  # 3 seconds
    history = train(cfg, tmp_path / "b", data=synthetic_data, log=quiet)
    assert 1 <= len(history) < 100
    saved = load_config(tmp_path / "b" / "config.yaml")
    assert saved.train.epochs == len(history) or history[-1]["elapsed_seconds"] > 3


def test_epoch_steps_drops_a_lone_last_image():
    assert epoch_steps(64, 32) == 2
    assert epoch_steps(65, 32) == 2
    assert epoch_steps(66, 32) == 3
    assert epoch_steps(10, 4, world=2) == 2  # 5 per rank in batches of 2: the lone 5th is dropped
    assert epoch_steps(12, 4, world=2) == 3


def test_resume_after_kill_9_mid_epoch(tmp_path):
    """Kill a training process mid-epoch; --resume loses at most that epoch and matches a clean run."""
    cache = tmp_path / "data.npz"
    save_cache(make_data(n_train=2100, n_val=140), cache)
    args = [*TINY_MODEL, "train.batch_size=16", "augment.enabled=true"]
    cmd = [sys.executable, "-m", "ferlab", "train", "--data", str(cache), "--epochs", "4", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(run)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while not (run / "last.pt").exists():
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()
            time.sleep(0.05)
        time.sleep(0.3)  # well inside epoch 2
        assert proc.poll() is None, "training ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    epochs_done = read_checkpoint(run / "last.pt")["epoch"]
    assert epochs_done < 4
    resumed = subprocess.run([*cmd, "--out", str(run), "--resume"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming {run} after epoch {epochs_done}" in resumed.stdout
    clean = subprocess.run([*cmd, "--out", str(tmp_path / "clean")], env=env, capture_output=True,
                           text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    got = json.loads((run / "history.json").read_text())
    want = json.loads((tmp_path / "clean" / "history.json").read_text())
    assert [h["epoch"] for h in got] == [1, 2, 3, 4]
    for g, w in zip(got, want):
        assert g["loss"] == pytest.approx(w["loss"], rel=1e-6)
        assert g["val_accuracy"] == w["val_accuracy"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU bf16 fallback logic")
def test_precision_auto_on_cpu_matches_cpu_capability():
    from ferlab.core.runtime import Runtime, cpu_has_bf16

    rt = Runtime.create("cpu", "auto")
    assert rt.precision_name == ("bf16" if cpu_has_bf16() else "fp32")
    assert Runtime.create("cpu", "fp32").amp_dtype is None


def test_late_tta_validates_the_last_epochs_differently(tmp_path):
    from ferlab.inference.checkpoint import read_checkpoint

    cfg = load_config(None, [*TINY_MODEL, "train.epochs=3", "train.late_tta=flip",
                             "train.late_tta_epochs=1"])
    history = train(cfg, tmp_path / "run", data=make_data(), log=lambda s: None)
    assert [h["val_tta"] for h in history] == ["none", "none", "flip"]
    assert read_checkpoint(tmp_path / "run" / "last.pt")["tta"] == "flip"
    assert "val_tta" in (tmp_path / "run" / "history.csv").read_text().splitlines()[0]


def test_one_cycle_schedule_is_defined_on_runs_of_a_few_steps():
    """A few dozen faces for a few epochs is a handful of steps: torch's one-cycle schedule
    divided by zero there (a ZeroDivisionError out of `ferlab train`)."""
    from types import SimpleNamespace

    import torch

    from ferlab.training.optim import SCHEDULERS

    for steps in range(1, 12):
        for warmup in (0.0, 0.2, 0.3, 1.0):
            opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
            schedule = SCHEDULERS["onecycle"](opt, SimpleNamespace(lr=0.1, warmup_fraction=warmup), steps)
            rates = []
            for _ in range(steps):
                opt.step()
                schedule.step()
                rates.append(opt.param_groups[0]["lr"])
            assert all(0 <= r <= 0.1 + 1e-9 for r in rates), (steps, warmup)


def test_one_writer_per_run_folder_and_a_dead_writers_lock_is_taken_over(tmp_path):
    from ferlab.core.files import LOCK_NAME, FolderBusy, folder_lock

    run = tmp_path / "run"
    with folder_lock(run):
        assert (run / LOCK_NAME).read_text().strip() == str(os.getpid())
        code = ("import sys; from ferlab.core.files import folder_lock\n"
                "try:\n    with folder_lock(sys.argv[1]): print('took it')\n"
                "except ValueError as e: print(e)\n")
        out = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True).stdout
        assert f"process {os.getpid()}" in out and "took it" not in out
        with pytest.raises(FolderBusy):  # a second writer in this process too
            with folder_lock(run):
                pass
    assert not run.exists()  # nothing was written: nothing is left
    # kill -9 of a writer leaves its lock file; the OS dropped the lock with the process.
    hold = ("import sys, time; from ferlab.core.files import folder_lock\n"
            "with folder_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    assert (run / LOCK_NAME).exists()
    with folder_lock(run):
        assert (run / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_a_second_train_into_a_busy_run_folder_is_refused(tmp_path):
    from ferlab.core.files import folder_lock

    cfg = load_config(None, [*TINY_MODEL, "train.epochs=1"])
    with folder_lock(tmp_path / "run"):
        with pytest.raises(ValueError, match="another training run .* is writing this folder"):
            train(cfg, tmp_path / "run", data=make_data(), log=lambda _: None)
    train(cfg, tmp_path / "run", data=make_data(), log=lambda _: None)
    assert (tmp_path / "run" / "best.pt").exists() and not (tmp_path / "run" / ".ferlab.lock").exists()


def test_training_on_the_split_auto_validation_would_pick_is_refused(tmp_path):
    """data.train_split=PublicTest with the default val_split: 'auto' found PublicTest and
    the run validated (and chose its best epoch) on its own training images."""
    from ferlab.core.config import ConfigError

    cfg = load_config(None, [*TINY_MODEL, "train.epochs=1", "data.train_split=PublicTest"])
    with pytest.raises(ConfigError, match="also data.train_split"):
        train(cfg, tmp_path / "run", data=make_data(), log=lambda _: None)
    assert not (tmp_path / "run").exists()  # refused before anything was written
