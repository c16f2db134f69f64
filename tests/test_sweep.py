"""Studies on synthetic data: one-at-a-time, grid, TPE, the seed-study preset, resume and workers."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import TINY_MODEL, make_data
from typer.testing import CliRunner

from ferlab.cli import app
from ferlab.core.config import load_config
from ferlab.data import save_cache
from ferlab.study import SweepError, SweepSpec, build_stages, parse_param, run_sweep, write_report

runner = CliRunner()
QUICK = [*TINY_MODEL, "train.epochs=2"]


@pytest.fixture
def cache(tmp_path) -> Path:
    path = tmp_path / "data.npz"
    save_cache(make_data(n_train=140, n_val=70), path)
    return path


def completed(storage_url: str) -> dict[str, list[str]]:
    out = {}
    for summary in optuna.get_all_study_summaries(storage_url):
        study = optuna.load_study(study_name=summary.study_name, storage=storage_url)
        out[summary.study_name] = [t.user_attrs["label"] for t in study.get_trials()
                                   if t.state.name == "COMPLETE"]
    return out


def test_parse_param():
    assert parse_param("model.kernel_size=2,3,4") == ("model.kernel_size", [2, 3, 4])
    assert parse_param("model.filters_in_each_block=[[8,16],[16,32]]")[1] == [[8, 16], [16, 32]]
    assert parse_param("train.lr=1e-4:1e-2:log") == ("train.lr", (1e-4, 1e-2, True))
    assert parse_param("model.layer_num=1:3") == ("model.layer_num", (1, 3, False))
    with pytest.raises(SweepError, match="SECTION.KEY=VALUES"):
        parse_param("kernel=3")
    with pytest.raises(SweepError, match="ranges need --sampler tpe"):
        build_stages(["train.lr=1e-4:1e-2"], "oat", 5)


def test_one_at_a_time_with_seeds_writes_every_result(cache, tmp_path):
    study = tmp_path / "study"
    result = runner.invoke(app, [
        "sweep", "--data", str(cache), "--study", str(study), "--seeds", "2",
        "--param", "model.kernel_size=2,3", "--param", "model.dropout_rate=0.0,0.3", *QUICK])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((study / "results.csv").open()))
    assert sorted(r["point"] for r in rows) == ["dropout_rate=0.0", "dropout_rate=0.3",
                                                 "kernel_size=2", "kernel_size=3"]
    assert all(r["state"] == "complete" and r["seeds"] == "2" for r in rows)
    # stage by stage in the study's order, best first within each
    assert [r["stage"] for r in rows] == ["kernel_size"] * 2 + ["dropout_rate"] * 2
    for stage in ("kernel_size", "dropout_rate"):
        accs = [float(r["mean_val_accuracy"]) for r in rows if r["stage"] == stage]
        assert accs == sorted(accs, reverse=True)
    assert float(rows[0]["std_val_accuracy"]) >= 0
    # a run folder per point and seed, but dropout_rate=0.0 is the base's kernel_size=3 again:
    # the same configuration and seeds, so its runs are reused rather than trained twice
    assert len(list((study / "trials").glob("*/*-seed*"))) == 6
    twin = {r["point"]: r for r in json.loads((study / "results.json").read_text())["trials"]}
    assert twin["dropout_rate=0.0"]["runs"] == twin["kernel_size=3"]["runs"]
    assert twin["dropout_rate=0.0"]["mean_val_accuracy"] == twin["kernel_size=3"]["mean_val_accuracy"]
    assert result.output.count("the same configuration and seed as 0-kernel_size/kernel_size=3-seed") == 2
    for stage in ("kernel_size", "dropout_rate"):
        assert (study / f"curves_{stage}.png").stat().st_size > 20_000
    report = (study / "report.html").read_text()
    assert "kernel_size=3" in report and report.count("data:image/png;base64") == 2
    summary = json.loads((study / "results.json").read_text())
    assert summary["chosen"].keys() == {"kernel_size", "dropout_rate"}
    assert f"*{summary['chosen']['kernel_size']}" in result.output  # the choice is marked
    assert summary["progress"]["points_done"] == summary["progress"]["points_total"] == 4
    assert "4 of 4 points done, 2 of 2 stages (finished)" in report


def test_rerun_skips_completed_trials(cache, tmp_path):
    base = load_config(None, [f"data.source={cache}", *QUICK])
    spec = SweepSpec(base, build_stages(["model.kernel_size=2,3"], "grid", 0), tmp_path / "s")
    run_sweep(spec, log=lambda _: None)
    first = completed(spec.storage_url)
    logs: list[str] = []
    run_sweep(spec, log=logs.append)
    assert completed(spec.storage_url) == first
    assert not [line for line in logs if line.startswith("[grid] trial")]  # nothing ran again


def test_report_only_reads_the_storage_without_training(cache, tmp_path):
    study = tmp_path / "s"
    args = ["sweep", "--data", str(cache), "--study", str(study), "--param", "model.kernel_size=2,3", *QUICK]
    missing = runner.invoke(app, [*args, "--report-only"])
    assert missing.exit_code != 0 and "no study in" in missing.output and not study.exists()
    assert runner.invoke(app, args).exit_code == 0
    (study / "report.html").unlink()
    runs = {p: p.stat().st_mtime_ns for p in (study / "trials").glob("*/*/history.csv")}
    result = runner.invoke(app, [*args, "--report-only"])
    assert result.exit_code == 0, result.output
    assert "2 of 2 points done" in (study / "report.html").read_text()
    assert {p: p.stat().st_mtime_ns for p in (study / "trials").glob("*/*/history.csv")} == runs
    assert len(runs) == 2  # and nothing trained again


def test_a_carry_forward_study_under_way_has_a_report(cache, tmp_path):
    """A seed-study-like study stopped in, then after, its first stage: the report covers the
    stages begun (it used to raise 'no trial completed' for the next one), gives a stage under
    way no choice, and never creates a stage itself (it used to enqueue the next stage's points
    from the running stage's leader: wrong filter sets once the block count changed)."""
    from ferlab.data import load_dataset
    from ferlab.study.engine import open_storage, run_stage, stage_study

    base = load_config(None, [f"data.source={cache}", *QUICK])
    stages = build_stages(["model.kernel_size=2,3", "model.layer_num=1,2"], "oat", 0)
    spec = SweepSpec(base, stages, tmp_path / "s", carry_forward=True)
    data, _ = load_dataset(cache)
    spec.study_dir.mkdir()
    storage = open_storage(spec.storage_url)

    # one point of the first stage done, the other still waiting
    first = stage_study(spec, 0, storage, base)
    trial = first.ask()
    run = tmp_path / "run"
    run.mkdir()
    trial.set_user_attr("per_seed", [{"best_val_accuracy": 0.5, "best_epoch": 1, "seconds": 3.0,
                                      "run": str(run)}])
    first.tell(trial, 0.5)
    summary = write_report(spec, log=lambda _: None)
    assert sorted((t["stage"], t["state"]) for t in summary["trials"]) == [
        ("kernel_size", "complete"), ("kernel_size", "waiting")]
    assert summary["chosen"] == {}  # its leader so far is not a choice
    assert [s.study_name for s in optuna.get_all_study_summaries(spec.storage_url)] == [
        f"{spec.name}/0-kernel_size"]  # the next stage was not made by the report

    run_stage(spec, 0, storage, base, data, lambda _: None)
    summary = write_report(spec, log=lambda _: None)
    states = sorted((t["stage"], t["state"]) for t in summary["trials"])
    assert states == [("kernel_size", "complete")] * 2
    assert list(summary["chosen"]) == ["kernel_size"]
    assert len(optuna.get_all_study_summaries(spec.storage_url)) == 1
    progress = summary["progress"]
    assert (progress["points_done"], progress["points_total"], progress["stages_done"]) == (2, 4, 1)
    assert "2 of 4 points done, 1 of 2 stages (under way)" in (tmp_path / "s" / "report.html").read_text()


def test_bad_close_call_options_are_refused_before_anything_runs(cache, tmp_path):
    study = tmp_path / "s"
    base = ["sweep", "--data", str(cache), "--study", str(study), "--param", "model.kernel_size=2,3", *QUICK]
    cases = ((["--seeds", "2", "--confirm-seeds", "2"], "--confirm-seeds 2 must exceed --seeds 2"),
             (["--confirm-seeds", "3", "--confirm-within", "1.5"], "--confirm-within 1.5"))
    for extra, message in cases:
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code != 0 and message in result.output, result.output
    assert not study.exists()  # nothing written


def test_the_report_tells_a_stopped_worker_from_a_running_one(cache, tmp_path, monkeypatch):
    """Read between sessions, a trial whose worker died is 'stalled', not 'running'; the
    report only reads (the next run of the command fails and retries it)."""
    from ferlab.study import engine

    base = load_config(None, [f"data.source={cache}", *QUICK])
    spec = SweepSpec(base, build_stages(["model.kernel_size=2,3"], "oat", 0), tmp_path / "s")
    spec.study_dir.mkdir()
    monkeypatch.setattr(engine, "GRACE_S", 1)
    storage = engine.open_storage(spec.storage_url)
    study = engine.stage_study(spec, 0, storage, base)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    assert [t["state"] for t in write_report(spec, log=lambda _: None)["trials"]] == ["running", "waiting"]
    time.sleep(3)  # no beat since: its worker is gone (SQLite keeps whole seconds, grace 1 s)
    rows = write_report(spec, log=lambda _: None)["trials"]
    assert [t["state"] for t in rows] == ["stalled", "waiting"] and "reruns it" in rows[0]["error"]
    assert study.get_trials()[0].state.name == "RUNNING"  # not failed by a reader


def test_a_close_call_is_rerun_with_more_seeds_before_the_stage_chooses(cache, tmp_path):
    study = tmp_path / "s"
    args = ["sweep", "--data", str(cache), "--study", str(study), "--param", "model.kernel_size=2,3",
            "--confirm-seeds", "2", "--confirm-within", "0.99", *QUICK]  # every point counts as close
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "a close call: kernel_size=" in result.output
    assert result.output.count("reusing its finished run") == 2  # only the second seeds trained
    summary = json.loads((study / "results.json").read_text())
    rows = summary["trials"]
    reruns = [r for r in rows if r["confirm"]]
    assert sorted(r["point"] for r in reruns) == ["kernel_size=2", "kernel_size=3"]
    assert all(r["seeds"] == 2 and r["state"] == "complete" for r in reruns)
    # the choice rests on the two-seed means, and only the chosen rerun's row is marked
    best = max(reruns, key=lambda r: r["mean_val_accuracy"])
    assert summary["chosen"] == {"kernel_size": best["point"]}
    assert [r["chosen"] for r in rows if r.get("chosen")] == [True] and best.get("chosen")
    assert "rerun of a close call" in result.output
    assert len(list((study / "trials").glob("*/*-seed*"))) == 4  # 2 points x 2 seeds, none twice
    assert summary["progress"]["points_done"] == summary["progress"]["points_total"] == 2
    # a rerun of the finished study runs nothing again
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "a close call:" not in again.output and "trial " not in again.output


def test_invalid_points_fail_clearly_and_the_study_goes_on(cache, tmp_path):
    base = load_config(None, [f"data.source={cache}", *QUICK, "model.block_num=2"])
    spec = SweepSpec(base, build_stages(["model.pool_size=2,32"], "oat", 0), tmp_path / "s")
    run_sweep(spec, log=lambda _: None)
    summary = write_report(spec, log=lambda _: None)
    states = {r["point"]: (r["state"], r["error"]) for r in summary["trials"]}
    assert states["pool_size=2"][0] == "complete"
    assert states["pool_size=32"][0] == "fail" and "below 1x1" in states["pool_size=32"][1]


def test_tpe_search_with_pruning(cache, tmp_path):
    base = load_config(None, [f"data.source={cache}", *TINY_MODEL, "train.epochs=3"])
    stages = build_stages(["train.lr=1e-4:1e-2:log", "model.layer_num=1,2"], "tpe", 4)
    spec = SweepSpec(base, stages, tmp_path / "s", prune=True)
    run_sweep(spec, log=lambda _: None)
    summary = write_report(spec, log=lambda _: None)
    assert len(summary["trials"]) == 4
    assert {r["state"] for r in summary["trials"]} <= {"complete", "pruned"}


def test_seed_study_preset_carries_choices_forward(tmp_path):
    cache = tmp_path / "data.npz"
    save_cache(make_data(n_train=70, n_val=35), cache)
    study = tmp_path / "seed-study"
    result = runner.invoke(app, ["sweep", "--data", str(cache), "--preset", "seed-study", "--study",
                                 str(study), "--epochs", "1", "train.precision=fp32"])
    assert result.exit_code == 0, result.output
    summary = json.loads((study / "results.json").read_text())
    assert list(summary["chosen"]) == ["block_num", "layer_num", "filters_in_each_block",
                                       "kernel_size", "pool_size", "dropout_rate", "batch_size"]
    assert summary["seed_report_choices"]["block_num"] == 4
    assert "the seed report chose" in result.output
    # later stages start from earlier choices: the filter sets are cut to the chosen block count
    blocks = int(summary["chosen"]["block_num"].split("=")[1])
    layer_runs = sorted((study / "trials" / "2-filters_in_each_block").glob("*-seed0"))
    cfg = load_config(layer_runs[0] / "config.yaml")
    assert len(cfg.model.args["filters_in_each_block"]) == blocks
    pool_rows = [r for r in summary["trials"] if r["stage"] == "pool_size"]
    assert len(pool_rows) == 3  # invalid pools (if any) are recorded as failed, not lost


def sweep_cmd(cache: Path, study: Path, storage: str | None = None, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "ferlab", "sweep", "--data", str(cache), "--study", str(study),
           "--param", "model.kernel_size=2,3,4", "--sampler", "grid", *TINY_MODEL, *extra]
    return cmd + (["--storage", storage] if storage else [])


ENV_1_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def kill_once_written(cmd: list[str], study: Path, written: str) -> None:
    """Start a study and SIGKILL it as soon as a trial has written `written`."""
    proc = subprocess.Popen(cmd, env=ENV_1_THREAD, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.time() + 120
        while not list((study / "trials").glob(f"*/*/{written}")):
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()


def kill_mid_trial_then_finish(cache: Path, study: Path, storage: str | None) -> str:
    kill_once_written(sweep_cmd(cache, study, storage, "train.epochs=40"), study, "last.pt")
    finish = subprocess.run(sweep_cmd(cache, study, storage, "train.epochs=2"), env=ENV_1_THREAD,
                            capture_output=True, text=True, timeout=600)
    return finish.stdout + finish.stderr, finish.returncode


def test_killed_study_resumes(cache, tmp_path):
    study = tmp_path / "s"
    output, code = kill_mid_trial_then_finish(cache, study, None)
    assert code == 0, output
    url = f"sqlite:///{study / 'study.db'}"
    (labels,) = completed(url).values()
    assert sorted(labels) == ["kernel_size=2", "kernel_size=3", "kernel_size=4"]


def test_a_killed_trial_resumes_from_its_checkpoint(cache, tmp_path):
    """The same command after a kill goes on from the interrupted run's last epoch (a study
    spans sessions); the epochs done before the kill are kept, not trained again."""
    study = tmp_path / "s"
    cmd = sweep_cmd(cache, study, None, "train.epochs=30")
    kill_once_written(cmd, study, "history.csv")
    (run,) = [p.parent for p in (study / "trials").glob("*/*/history.csv")]
    before = (run / "history.csv").read_text().splitlines()
    assert 1 < len(before) < 31, "killed before its first epoch or after its last"
    finish = subprocess.run(cmd, env=ENV_1_THREAD, capture_output=True, text=True, timeout=600)
    assert finish.returncode == 0, finish.stdout + finish.stderr
    assert "resuming the interrupted run" in finish.stdout
    # the count of points done leaves out the interrupted attempt (it said "3 of 3" before
    # the third point ran)
    counts = [tuple(map(int, m)) for m in re.findall(r"\((\d+) of (\d+) points", finish.stdout)]
    assert len(counts) == 3 and all(done < total for done, total in counts), finish.stdout
    after = (run / "history.csv").read_text().splitlines()
    assert len(after) == 31 and after[:len(before)] == before  # same timings: not retrained
    (labels,) = completed(f"sqlite:///{study / 'study.db'}").values()
    assert sorted(labels) == ["kernel_size=2", "kernel_size=3", "kernel_size=4"]


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on loopback (Debian's postgresql package)."""
    import glob
    import shutil
    import socket

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql; .ci/run does)")
    pytest.importorskip("psycopg2", reason="psycopg2 not installed (pip install psycopg2-binary)")
    import tempfile

    bindir = Path(bins[-1]).parent
    # Not under pytest's tmp dir: that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="ferlab-pg-"))
    datadir = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(root / "log"), "-w",
                    "-o", f"-p {port} -k {root} -h 127.0.0.1", "start"], check=True, capture_output=True)
    try:
        subprocess.run([*as_user, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                        "-U", "postgres", "ferlab"], check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/ferlab"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_a_postgres_study(cache, tmp_path, postgres):
    cmd = sweep_cmd(cache, tmp_path / "s", postgres, "train.epochs=2", "--param", "model.layer_num=1,2")
    procs = [subprocess.Popen(cmd, env=ENV_1_THREAD, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]  # two independent workers, as if on two machines
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    (labels,) = completed(postgres).values()
    assert len(labels) == 6 and len(set(labels)) == 6  # every grid point exactly once
    ran = [line for out in outputs for line in out.splitlines() if line.startswith("[grid] trial")]
    assert len(ran) == 6


def test_killed_worker_on_postgres_resumes(cache, tmp_path, postgres):
    output, code = kill_mid_trial_then_finish(cache, tmp_path / "s", postgres)
    assert code == 0, output
    (labels,) = completed(postgres).values()
    assert sorted(labels) == ["kernel_size=2", "kernel_size=3", "kernel_size=4"]
