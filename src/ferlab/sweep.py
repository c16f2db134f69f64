"""Tuning studies: the seed's one-at-a-time sweeps, grids and Optuna search, resumable and parallel.

A study is a list of *stages*. Each stage is one Optuna study in one storage (an
SQLite file beside the study by default, or any URL such as PostgreSQL, so
workers on many machines share it). A trial trains one *point* (a set of config
overrides) once per seed, each seed a full run folder, and scores the point by
its mean best validation accuracy.

* one-at-a-time (`oat`) and `grid` stages know their points up front: the first
  worker to create the stage enqueues them, and every worker pops waiting trials
  (an atomic update in the storage), so no point runs twice.
* `tpe` stages sample points with Optuna's TPE sampler up to `n_trials`.
* A worker sends heartbeats while it trains; a trial whose worker died (kill -9,
  a lost machine) goes stale, is marked failed, and Optuna's retry callback puts
  it back in the queue, so rerunning the command finishes the study.
* The seed-study preset runs the seed's sweeps in order, each stage starting from
  the values the previous stages chose.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import Config, ConfigError, apply_overrides, to_dict
from .files import atomic_write_text

# The seed report's sweeps, in its order; each point is a set of dotted overrides.
SEED_FILTERS = [32, 64, 128, 256, 512]
SEED_STUDY: list[tuple[str, list[dict[str, Any]]]] = [
    ("block_num", [{"model.block_num": n, "model.filters_in_each_block": SEED_FILTERS[:n]}
                   for n in range(1, 6)]),
    ("layer_num", [{"model.layer_num": n} for n in range(1, 6)]),
    ("filters_in_each_block", [{"model.filters_in_each_block": [f * 2**i for i in range(5)]}
                               for f in (16, 32, 64, 128)]),
    ("kernel_size", [{"model.kernel_size": k} for k in range(2, 6)]),
    ("pool_size", [{"model.pool_size": p, "model.strides": 2} for p in range(2, 5)]),
    ("dropout_rate", [{"model.dropout_rate": round(0.1 * d, 1)} for d in range(6)]),
    ("batch_size", [{"train.batch_size": b} for b in (128, 256, 512, 1024)]),
]
SEED_CHOICES = {"block_num": 4, "layer_num": 2, "filters_in_each_block": [64, 128, 256, 512],
                "kernel_size": 3, "pool_size": 4, "dropout_rate": 0.2, "batch_size": 256}


class SweepError(ValueError):
    pass


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class Stage:
    name: str  # also the parameter a one-at-a-time stage varies
    kind: str  # oat | grid | tpe
    points: tuple[dict[str, Any], ...] = ()  # oat / grid
    space: tuple[tuple[str, Any], ...] = ()  # tpe: (dotted key, list of choices | (low, high, log))
    n_trials: int = 20


@dataclass(frozen=True)
class SweepSpec:
    base: Config
    stages: tuple[Stage, ...]
    study_dir: Path
    seeds: int = 1
    storage: str | None = None  # default: sqlite:///<study_dir>/study.db
    name: str = "study"
    prune: bool = False
    carry_forward: bool = False  # seed-study: each stage starts from the earlier choices

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.study_dir / 'study.db').resolve()}"


def parse_param(text: str) -> tuple[str, Any]:
    """`model.kernel_size=2,3,4,5` or `=[2,3]` -> choices; `train.lr=1e-4:1e-2:log` -> range."""
    key, sep, value = text.partition("=")
    if not sep or "." not in key:
        raise SweepError(f"--param {text!r}: expected SECTION.KEY=VALUES, e.g. model.kernel_size=2,3,4,5")
    value = value.strip()
    if ":" in value and not value.startswith("["):
        parts = value.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
            raise SweepError(f"--param {text!r}: a range is LOW:HIGH or LOW:HIGH:log")
        low, high = (yaml.safe_load(p) for p in parts[:2])
        low, high = (float(v) if isinstance(v, str) else v for v in (low, high))
        if not all(isinstance(v, (int, float)) for v in (low, high)) or low >= high:
            raise SweepError(f"--param {text!r}: range bounds must be numbers, LOW < HIGH")
        return key, (low, high, len(parts) == 3)
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str):
        parsed = [yaml.safe_load(v) for v in parsed.split(",")]
    if not isinstance(parsed, list) or not parsed:
        parsed = [parsed]
    return key, parsed


def build_stages(params: list[str], sampler: str, n_trials: int) -> tuple[Stage, ...]:
    parsed = [parse_param(p) for p in params]
    if not parsed:
        raise SweepError("nothing to sweep: give --param SECTION.KEY=VALUES or --preset seed-study")
    if sampler == "tpe":
        return (Stage("search", "tpe", space=tuple(parsed), n_trials=n_trials),)
    for key, values in parsed:
        if isinstance(values, tuple):
            raise SweepError(f"--param {key}: ranges need --sampler tpe; list values for {sampler}")
    if sampler == "grid":
        keys = [k for k, _ in parsed]
        points = tuple(dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in parsed)))
        return (Stage("grid", "grid", points=points),)
    if sampler == "oat":
        return tuple(Stage(key.split(".", 1)[1], "oat", points=tuple({key: v} for v in values))
                     for key, values in parsed)
    raise SweepError(f"--sampler must be oat, grid or tpe, got {sampler!r}")


def seed_study_stages() -> tuple[Stage, ...]:
    return tuple(Stage(name, "oat", points=tuple(points)) for name, points in SEED_STUDY)


def point_label(point: dict[str, Any]) -> str:
    """'block_num=4' for a seed-study point; every varied key for grid points."""
    hidden = {"model.strides"}
    if "model.block_num" in point:
        hidden.add("model.filters_in_each_block")  # follows from block_num in the seed's sweep
    return ",".join(f"{k.split('.', 1)[1]}={json.dumps(v).replace(' ', '')}"
                    for k, v in point.items() if k not in hidden)


def _overrides(point: dict[str, Any]) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in point.items()]


def fit_filters(point: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """Filter sets in the seed study are given for 5 blocks; cut them to the chosen block count."""
    filters = point.get("model.filters_in_each_block")
    blocks = cfg.model.args.get("block_num")
    if filters is not None and "model.block_num" not in point and isinstance(blocks, int):
        point = {**point, "model.filters_in_each_block": list(filters)[:blocks]}
    return point


# --------------------------------------------------------------------------- storage


def open_storage(url: str):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    # ferlab drives trials with ask/tell and its own heartbeat thread (so it can pop
    # enqueued points atomically); Optuna warns about both, which is noise here.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    # Workers starting together on a fresh database race to create Optuna's tables; the
    # losers see a unique-constraint error and simply try again once the tables exist.
    for attempt in range(6):
        try:
            return RDBStorage(
                url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3), **kwargs,
            )
        except Exception as e:  # sqlalchemy / driver errors
            if attempt == 5:
                raise SweepError(f"cannot open study storage {url}: {e}") from e
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


HEARTBEAT_S = 5
GRACE_S = 20


def _stage_study(spec: SweepSpec, index: int, storage, base: Config):
    """Load the stage's Optuna study; the worker that creates it enqueues its points."""
    import optuna

    stage = spec.stages[index]
    name = f"{spec.name}/{index}-{stage.name}"
    sampler = optuna.samplers.TPESampler(seed=0) if stage.kind == "tpe" else None
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
              if spec.prune else optuna.pruners.NopPruner())
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                    sampler=sampler, pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        deadline = time.time() + 120
        while not study.user_attrs.get("ready"):  # its creator is still enqueueing
            if time.time() > deadline:
                raise SweepError(f"study {name} exists but was never filled; delete it and rerun") from None
            time.sleep(0.5)
        wanted = [point_label(fit_filters(p, base)) for p in stage.points]
        if stage.kind != "tpe" and study.user_attrs.get("points") != wanted:
            raise SweepError(
                f"study {name} in {spec.storage_url} was made with other points "
                f"({', '.join(study.user_attrs.get('points', []))}); use another --name or --study"
            ) from None
        return study
    points = [fit_filters(p, base) for p in stage.points]
    for i, point in enumerate(points):
        study.enqueue_trial({"point": i}, user_attrs={"overrides": point, "label": point_label(point)})
    study.set_user_attr("points", [point_label(p) for p in points])
    study.set_user_attr("ready", True)
    return study


# --------------------------------------------------------------------------- workers


@dataclass
class TrialResult:
    mean: float
    per_seed: list[dict[str, Any]] = field(default_factory=list)


class _Heartbeat:
    """Records a trial's heartbeat from a thread while the trial trains."""

    def __init__(self, storage, trial_id: int):
        self._storage, self._trial_id = storage, trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(storage, trial_id), daemon=True)

    def _run(self, storage, trial_id: int) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # a transient storage hiccup must not kill training
                pass

    def __enter__(self):
        # One beat now: a trial killed before its first periodic beat must still go stale.
        self._storage.record_heartbeat(self._trial_id)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _suggest(trial, stage: Stage) -> dict[str, Any]:
    point = {}
    for key, values in stage.space:
        if isinstance(values, tuple):
            low, high, log = values
            if isinstance(low, int) and isinstance(high, int) and not log:
                point[key] = trial.suggest_int(key, low, high)
            else:
                point[key] = trial.suggest_float(key, float(low), float(high), log=log)
        else:
            choice = trial.suggest_categorical(key, [json.dumps(v) for v in values])
            point[key] = json.loads(choice)
    return point


def run_trial(spec: SweepSpec, base: Config, data, trial, point: dict[str, Any], stage_dir: Path,
              log: Callable[[str], None]) -> TrialResult:
    import shutil

    import optuna

    from .train import train

    label = trial.user_attrs.get("label") or f"trial{trial.number:04d}"
    cfg = apply_overrides(base, _overrides(point))
    per_seed = []
    for seed in range(spec.seeds):
        seed_cfg = apply_overrides(cfg, [f"train.seed={base.train.seed + seed}"])
        run_dir = stage_dir / f"{label.replace('/', '_')}-seed{seed}"
        if run_dir.exists():  # left by an interrupted attempt: that trial starts over
            shutil.rmtree(run_dir)

        def report(row, _model, seed=seed):
            if seed == 0 and spec.prune:
                trial.report(row["val_accuracy"], row["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {row['epoch']}")

        start = time.time()
        history = train(seed_cfg, run_dir, data=data, log=lambda _: None, on_epoch_end=report)
        best = max(history, key=lambda h: h["val_accuracy"])
        per_seed.append({"seed": seed_cfg.train.seed, "best_val_accuracy": best["val_accuracy"],
                         "best_epoch": best["epoch"], "seconds": time.time() - start,
                         "run": str(run_dir)})
        log(f"  {label} seed {seed_cfg.train.seed}: best val_accuracy {best['val_accuracy']:.4f} "
            f"(epoch {best['epoch']})")
    return TrialResult(sum(s["best_val_accuracy"] for s in per_seed) / len(per_seed), per_seed)


def _count(study, states) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def run_stage(spec: SweepSpec, index: int, storage, base: Config, data, log) -> None:
    """Pop and run this stage's trials until none are waiting or running."""
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    from .models.registry import ModelConfigError

    stage = spec.stages[index]
    study = _stage_study(spec, index, storage, base)
    stage_dir = spec.study_dir / "trials" / f"{index}-{stage.name}"
    while True:
        fail_stale_trials(study)
        waiting = _count(study, (TrialState.WAITING,))
        if stage.kind == "tpe":
            done = _count(study, (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
            retries = waiting
            if done + _count(study, (TrialState.RUNNING,)) >= stage.n_trials and not retries:
                if _count(study, (TrialState.RUNNING,)) == 0:
                    return
                time.sleep(2)
                continue
        elif waiting == 0:
            if _count(study, (TrialState.RUNNING,)) == 0:
                return
            time.sleep(2)  # others (or stale ones, failed after the grace period) still run
            continue
        trial = study.ask()
        if stage.kind != "tpe" and "overrides" not in trial.user_attrs:
            # Another worker took the last waiting point between our check and ask().
            study.tell(trial, state=TrialState.FAIL)
            continue
        point = trial.user_attrs.get("overrides") or _suggest(trial, stage)
        if stage.kind == "tpe":
            trial.set_user_attr("overrides", point)
            trial.set_user_attr("label", f"trial{trial.number:04d}")
        label = trial.user_attrs["label"]
        log(f"[{stage.name}] trial {trial.number}: {label}")
        try:
            with _Heartbeat(storage, trial._trial_id):
                result = run_trial(spec, base, data, trial, point, stage_dir, log)
        except optuna.TrialPruned as e:
            study.tell(trial, state=TrialState.PRUNED)
            log(f"  {label}: {e}")
            continue
        except (ModelConfigError, ConfigError) as e:
            trial.set_user_attr("error", str(e))
            study.tell(trial, state=TrialState.FAIL)
            log(f"  {label}: invalid configuration: {e}")
            continue
        trial.set_user_attr("per_seed", result.per_seed)
        study.tell(trial, result.mean)


def stage_choice(spec: SweepSpec, index: int, storage, base: Config) -> dict[str, Any] | None:
    """The overrides of the stage's best completed point (highest mean over seeds)."""
    study = _stage_study(spec, index, storage, base)
    best = best_trial(study)
    return None if best is None else best.user_attrs["overrides"]


def best_trial(study):
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if "overrides" in t.user_attrs]
    return max(complete, key=lambda t: t.value) if complete else None


def stage_bases(spec: SweepSpec, storage, data, log, run: bool) -> list[Config]:
    """Run (if `run`) each stage in order; return the base config each stage started from."""
    base, bases = spec.base, []
    for index in range(len(spec.stages)):
        bases.append(base)
        if run:
            log(f"stage {index + 1}/{len(spec.stages)}: {spec.stages[index].name}")
            run_stage(spec, index, storage, base, data, log)
        if spec.carry_forward:
            choice = stage_choice(spec, index, storage, base)
            if choice is None:
                raise SweepError(f"stage {spec.stages[index].name}: no trial completed")
            base = apply_overrides(base, _overrides(choice))
    return bases


def _print(line: str) -> None:
    print(line, flush=True)


def worker(spec: SweepSpec, threads: int | None = None, log: Callable[[str], None] = _print) -> None:
    """One worker process: loads the data once, then works through every stage."""
    import torch

    from .data import load_dataset

    if threads:
        torch.set_num_threads(threads)
    storage = open_storage(spec.storage_url)
    data, _ = load_dataset(spec.base.data.source, skip_bad=spec.base.data.skip_bad,
                           classes=spec.base.data.classes)
    stage_bases(spec, storage, data, log, run=True)


def _worker_entry(spec: SweepSpec, threads: int, number: int) -> None:
    worker(spec, threads, log=lambda s: print(f"[worker {number}] {s}", flush=True))


def run_sweep(spec: SweepSpec, workers: int = 1, log: Callable[[str], None] = _print) -> dict[str, Any]:
    """Run (or resume, or join) a study with `workers` local processes, then write its report."""
    import multiprocessing as mp

    spec.study_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(spec.study_dir / "spec.yaml", yaml.safe_dump(describe(spec), sort_keys=False))
    if workers <= 1:
        worker(spec, log=log)
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker_entry, args=(spec, threads, i)) for i in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        failed = [i for i, p in enumerate(procs) if p.exitcode != 0]
        if failed:
            raise SweepError(f"worker(s) {failed} exited with an error; rerun the same command to resume")
    from .sweep_report import write_report

    return write_report(spec, log)


def describe(spec: SweepSpec) -> dict[str, Any]:
    return {
        "name": spec.name, "storage": spec.storage_url, "seeds": spec.seeds, "prune": spec.prune,
        "carry_forward": spec.carry_forward, "base": to_dict(spec.base),
        "stages": [{"name": s.name, "kind": s.kind, "points": [point_label(p) for p in s.points],
                    "space": [[k, list(v) if isinstance(v, tuple) else v] for k, v in s.space],
                    "n_trials": s.n_trials} for s in spec.stages],
    }


