"""`ferlab train` under torchrun: 2 CPU processes with the gloo backend on a tiny dataset."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from conftest import TINY_MODEL, make_data

from ferlab.data import save_cache


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]


def test_two_ranks_identical_weights_rank0_writes(tmp_path):
    cache = tmp_path / "data.npz"
    save_cache(make_data(n_train=256, n_val=70), cache)
    weights = tmp_path / "weights"
    weights.mkdir()
    run = tmp_path / "run"
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(worker.parent)}
    cmd = torchrun(str(worker), str(cache), str(run), str(weights), *TINY_MODEL,
                   "train.epochs=2", "augment.enabled=true", "model.dropout_rate=0.2")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    a = torch.load(weights / "rank0.pt")
    b = torch.load(weights / "rank1.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # only rank 0 writes the run folder, and its checkpoint holds those weights
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["best.pt", "config.yaml", "history.csv", "history.json", "last.pt", "loss_acc.png",
         "summary.json"])
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert all(torch.equal(ckpt["state_dict"][k], a[k]) for k in a)
    assert done.stdout.count("epoch   2/2") == 1  # one rank reports


def test_ferlab_train_cli_under_torchrun(tmp_path):
    cache = tmp_path / "data.npz"
    save_cache(make_data(n_train=128, n_val=70), cache)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = torchrun("-m", "ferlab", "train", "--data", str(cache), "--out", str(tmp_path / "run"),
                   "--epochs", "1", *TINY_MODEL)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 processes" in done.stdout and (tmp_path / "run" / "best.pt").exists()
