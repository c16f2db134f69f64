"""Running a study: Optuna storage, workers that pop trials, heartbeats, retries.

* The worker that creates a stage (Optuna's create_study is the election) enqueues
  its points; every worker pops waiting trials (an atomic update in the storage),
  so no point runs twice.
* `tpe` stages sample points with Optuna's TPE sampler up to `n_trials`.
* A worker sends heartbeats while it trains; a trial whose worker died (kill -9,
  a lost machine) goes stale, is marked failed, and Optuna's retry callback puts
  it back in the queue, so rerunning the command finishes the study.
* With `carry_forward` (the seed-study preset) each stage starts from the values
  the earlier stages chose.

`run_sweep` runs (or resumes, or joins) a study; the caller writes the report
(`study.report.write_report`).

Depends on: config, data, models (error type), processes, threads, training, and spec; Optuna.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from ..core.config import Config, ConfigError, apply_overrides, load_config, to_dict
from ..core.files import atomic_write_text, check_writable
from ..core.processes import die_with_parent
from ..core.threads import set_process_threads
from ..data import load_dataset
from ..models.registry import ModelConfigError, check_model_args
from ..training import train
from ..training.run_folder import config_differences
from .spec import Stage, SweepError, SweepSpec, describe, fit_filters, overrides, point_label

HEARTBEAT_S = 5
GRACE_S = 20


@contextlib.contextmanager
def quiet_optuna():
    """ferlab drives trials with ask/tell and its own heartbeat thread (so it can pop
    enqueued points atomically); Optuna warns about both and logs every trial, which is
    noise here. Silenced while ferlab works with a study, restored afterwards."""
    verbosity = optuna.logging.get_verbosity()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            yield
        finally:
            optuna.logging.set_verbosity(verbosity)


def open_storage(url: str):
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


def stage_name(spec: SweepSpec, index: int) -> str:
    return f"{spec.name}/{index}-{spec.stages[index].name}"


def existing_stage_study(spec: SweepSpec, index: int, storage):
    """The stage's study if a run has begun it, else None. Readers (the report) use this:
    creating a stage enqueues its points from the base it is given, which only a worker
    that has finished the stages before it knows."""
    try:
        return optuna.load_study(study_name=stage_name(spec, index), storage=storage)
    except KeyError:
        return None


def stage_finished(spec: SweepSpec, index: int, study) -> bool:
    """No point waits or runs (a dead worker's trial counts as running until it goes stale),
    and a close call has been confirmed."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials):
        return False
    stage = spec.stages[index]
    if stage.kind == "tpe":
        return sum(t.state.is_finished() for t in trials) >= stage.n_trials
    return not needs_confirmation(spec, index, study)


MAX_CONTENDERS = 3


def contenders(spec: SweepSpec, index: int, study) -> list:
    """A finished stage's points too close to call on `spec.seeds` run(s): those within
    `confirm_within` of the leader, best first (at most MAX_CONTENDERS); [] when the
    leader is clear or confirmation is off."""
    if spec.confirm_seeds <= spec.seeds or spec.stages[index].kind == "tpe":
        return []
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if "overrides" in t.user_attrs and not t.user_attrs.get("confirm")]
    if not complete:
        return []
    lead = max(t.value for t in complete)
    close = sorted((t for t in complete if lead - t.value <= spec.confirm_within), key=lambda t: -t.value)
    return close[:MAX_CONTENDERS] if len(close) > 1 else []


def needs_confirmation(spec: SweepSpec, index: int, study) -> bool:
    return bool(contenders(spec, index, study)) and not study.user_attrs.get("confirm_ready")


def enqueue_confirmation(spec: SweepSpec, index: int, study, storage, log) -> None:
    """Queue the contenders again with `confirm_seeds` seeds (their first run is reused from
    its run folder, so only the extra seeds train). Creating a marker study is the election
    among workers, as for a stage's points; the others wait until the runs are queued."""
    try:
        optuna.create_study(study_name=f"{stage_name(spec, index)}/confirm", storage=storage)
    except optuna.exceptions.DuplicatedStudyError:
        deadline = time.time() + 120
        while not study.user_attrs.get("confirm_ready"):
            if time.time() > deadline:
                raise SweepError(f"{stage_name(spec, index)}: its close call was never queued; "
                                 "delete its '/confirm' study and rerun") from None
            time.sleep(0.5)
        return
    close = contenders(spec, index, study)
    for t in close:
        study.enqueue_trial({"point": t.system_attrs.get("fixed_params", {}).get("point", -1)}, user_attrs={
            "overrides": t.user_attrs["overrides"], "label": t.user_attrs["label"], "confirm": True,
            "seeds": spec.confirm_seeds})
    study.set_user_attr("confirm_ready", True)
    log(f"[{spec.stages[index].name}] a close call: "
        + ", ".join(f"{t.user_attrs['label']} {t.value:.4f}" for t in close)
        + f" lie within {spec.confirm_within:.3f} of the leader; rerunning them with "
        f"{spec.confirm_seeds} seeds before choosing")


def stage_study(spec: SweepSpec, index: int, storage, base: Config):
    """Load the stage's Optuna study; the worker that creates it enqueues its points."""
    stage = spec.stages[index]
    name = stage_name(spec, index)
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


def _resumable(run_dir: Path, cfg: Config) -> bool:
    """Whether an interrupted attempt at this run can go on from its last checkpoint. A
    study spans sessions and machines get stopped: a point killed in its tenth epoch resumes
    there (training's resume repeats exactly what an uninterrupted run does) instead of
    starting over. Only a run made with exactly this config is resumed."""
    if not (run_dir / "last.pt").exists():
        return False
    try:
        saved = load_config(run_dir / "config.yaml")
    except (OSError, ConfigError):
        return False
    return not config_differences(to_dict(cfg), to_dict(saved), {"data.source"})


def _finished_history(run_dir: Path, cfg: Config) -> list[dict[str, Any]] | None:
    """The history of a run that finished all its epochs (summary.json is written last)."""
    if not (run_dir / "summary.json").exists():
        return None
    history = json.loads((run_dir / "history.json").read_text())
    return history if len(history) == cfg.train.epochs else None


def _finished_run(trials_dir: Path, run_dir: Path, cfg: Config) -> tuple[Path, list[dict[str, Any]]] | None:
    """A finished run of exactly this config and seed, and its history: this point's own (a
    close call's rerun) or one of an earlier stage's. One-at-a-time stages each revisit the
    point the stages before them chose; training it again would repeat the same numbers
    (on a CPU bit for bit: the seed study's block_num=4 and layer_num=2 are that one point,
    57.59% both times), so the study reuses the run: a stage's worth of time saved."""
    for candidate in [run_dir, *sorted(trials_dir.glob("*/*-seed*"))]:
        if _resumable(candidate, cfg) and (history := _finished_history(candidate, cfg)) is not None:
            return candidate, history
    return None


def run_trial(spec: SweepSpec, base: Config, data, trial, point: dict[str, Any], stage_dir: Path,
              log: Callable[[str], None]) -> TrialResult:
    label = trial.user_attrs.get("label") or f"trial{trial.number:04d}"
    cfg = apply_overrides(base, overrides(point))
    per_seed = []
    for seed in range(trial.user_attrs.get("seeds", spec.seeds)):  # a close call's rerun: more
        seed_cfg = apply_overrides(cfg, [f"train.seed={base.train.seed + seed}"])
        run_dir = stage_dir / f"{label.replace('/', '_')}-seed{seed}"
        resume = _resumable(run_dir, seed_cfg)
        history = None
        if (done := _finished_run(spec.study_dir / "trials", run_dir, seed_cfg)) is not None:
            twin, history = done
            resume = True  # its time is its history's
            log(f"  {label} seed {seed_cfg.train.seed}: reusing its finished run" if twin == run_dir else
                f"  {label} seed {seed_cfg.train.seed}: the same configuration and seed as "
                f"{twin.parent.name}/{twin.name}: reusing that finished run")
            run_dir = twin
        elif resume:
            log(f"  {label} seed {seed_cfg.train.seed}: resuming the interrupted run from its last "
                "checkpoint")
        elif run_dir.exists():  # left by an interrupted attempt with other settings: starts over
            shutil.rmtree(run_dir)

        def report(row, _model, seed=seed):
            if seed == 0 and spec.prune:
                trial.report(row["val_accuracy"], row["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {row['epoch']}")

        start = time.time()
        if history is None:
            history = train(seed_cfg, run_dir, resume=resume, data=data, log=lambda _: None,
                            on_epoch_end=report)
        best = max(history, key=lambda h: h["val_accuracy"])
        per_seed.append({"seed": seed_cfg.train.seed, "best_val_accuracy": best["val_accuracy"],
                         "best_epoch": best["epoch"],
                         # a resumed run: its epochs' time, the attempts before this one included
                         "seconds": history[-1]["elapsed_seconds"] if resume else time.time() - start,
                         "run": str(run_dir)})
        log(f"  {label} seed {seed_cfg.train.seed}: best val_accuracy {best['val_accuracy']:.4f} "
            f"(epoch {best['epoch']} of {len(history)}), {per_seed[-1]['seconds'] / 60:.1f} min")
    return TrialResult(sum(s["best_val_accuracy"] for s in per_seed) / len(per_seed), per_seed)


def _count(study, states) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def points_done(study) -> int:
    """Distinct points finished: an interrupted trial (failed without an error, rerun as a
    later one) and a close call's rerun do not count again."""
    return len({t.user_attrs.get("label") for t in study.get_trials(deepcopy=False)
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                or (t.state == TrialState.FAIL and "error" in t.user_attrs)})


def run_stage(spec: SweepSpec, index: int, storage, base: Config, data, log) -> None:
    """Pop and run this stage's trials until none are waiting or running."""
    stage = spec.stages[index]
    study = stage_study(spec, index, storage, base)
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
                if needs_confirmation(spec, index, study):
                    enqueue_confirmation(spec, index, study, storage, log)
                    continue
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
        total = len(stage.points) if stage.kind != "tpe" else stage.n_trials
        log(f"[{stage.name}] trial {trial.number}: {label} ({points_done(study)} of {total} points of "
            "this stage done)")
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
        except Exception as e:  # any other failure of this point: record it, go on with the rest
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            study.tell(trial, state=TrialState.FAIL)
            log(f"  {label}: failed: {type(e).__name__}: {e}")
            continue
        trial.set_user_attr("per_seed", result.per_seed)
        study.tell(trial, result.mean)


def stage_choice(spec: SweepSpec, index: int, storage, base: Config) -> dict[str, Any] | None:
    """The overrides of the stage's best completed point (highest mean over seeds)."""
    study = stage_study(spec, index, storage, base)
    best = best_trial(study)
    return None if best is None else best.user_attrs["overrides"]


def best_trial(study):
    """The completed trial with the highest mean; after a close call, among its reruns (their
    means over more seeds are what the choice rests on)."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if "overrides" in t.user_attrs]
    confirmed = [t for t in complete if t.user_attrs.get("confirm")]
    pool = confirmed or complete
    return max(pool, key=lambda t: t.value) if pool else None


def stage_bases(spec: SweepSpec, storage, data, log, run: bool) -> list[Config]:
    """Run (if `run`) each stage in order; return the base config each stage started from."""
    base, bases = spec.base, []
    for index in range(len(spec.stages)):
        bases.append(base)
        if run:
            log(f"stage {index + 1}/{len(spec.stages)}: {spec.stages[index].name}")
            run_stage(spec, index, storage, base, data, log)
        if spec.carry_forward:
            if not run:
                # A study under way: a stage still running has no choice yet (its leader so
                # far is not one), so the stages after it have no base yet.
                study = existing_stage_study(spec, index, storage)
                if study is None or not stage_finished(spec, index, study):
                    break
            choice = stage_choice(spec, index, storage, base)
            if choice is None and not run:
                break
            if choice is None:
                raise SweepError(f"stage {spec.stages[index].name}: no trial completed")
            base = apply_overrides(base, overrides(choice))
    return bases


def _print(line: str) -> None:
    print(line, flush=True)


def worker(spec: SweepSpec, log: Callable[[str], None] = _print) -> None:
    """One worker process: loads the data once, then works through every stage."""
    with quiet_optuna():
        storage = open_storage(spec.storage_url)
        data, _ = load_dataset(spec.base.data.source, skip_bad=spec.base.data.skip_bad,
                               classes=spec.base.data.classes)
        stage_bases(spec, storage, data, log, run=True)


def _worker_entry(spec: SweepSpec, threads: int, number: int, parent: int) -> None:
    # A worker process of its own: its share of the cores is its setting to make.
    die_with_parent(parent)
    set_process_threads(threads, torch=True)
    worker(spec, log=lambda s: print(f"[worker {number}] {s}", flush=True))


def check_points(spec: SweepSpec) -> None:
    """Every point's keys and value types, checked before the first trial: a typo such as
    model.kernal_size would otherwise fail every trial, one at a time."""
    base = spec.base
    for stage in spec.stages:
        # tpe: one probe point, each key at its first choice or its low end
        points = stage.points if stage.kind != "tpe" else [{k: v[0] for k, v in stage.space}]
        for point in points:
            try:
                cfg = apply_overrides(base, overrides(fit_filters(point, base)))
                check_model_args(cfg.model.name, cfg.model.args)
            except (ConfigError, ModelConfigError) as e:
                raise SweepError(f"--param {', '.join(sorted(point))}: {e}") from e


def check_outcome(spec: SweepSpec, storage) -> None:
    """A study in which no trial of some stage finished is an error, with the first reason."""
    for index, stage in enumerate(spec.stages):
        try:
            study = optuna.load_study(study_name=f"{spec.name}/{index}-{stage.name}", storage=storage)
        except KeyError:  # never started: an earlier stage ended the study
            continue
        trials = study.get_trials(deepcopy=False)
        if trials and not any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials):
            first = next((t.user_attrs["error"] for t in trials if "error" in t.user_attrs), "no message")
            raise SweepError(f"stage {stage.name}: all {len(trials)} trials failed; first: {first}")


def run_sweep(spec: SweepSpec, workers: int = 1, log: Callable[[str], None] = _print) -> None:
    """Run (or resume, or join) a study with `workers` local processes; the caller then
    writes the report (`study.report.write_report`)."""
    check_points(spec)
    check_writable(spec.study_dir)
    spec.study_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(spec.study_dir / "spec.yaml", yaml.safe_dump(describe(spec), sort_keys=False))
    if workers <= 1:
        worker(spec, log=log)
        with quiet_optuna():
            check_outcome(spec, open_storage(spec.storage_url))
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker_entry, args=(spec, threads, i, os.getpid()))
                 for i in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        failed = [i for i, p in enumerate(procs) if p.exitcode != 0]
        if failed:
            raise SweepError(f"worker(s) {failed} exited with an error; rerun the same command to resume")
        with quiet_optuna():
            check_outcome(spec, open_storage(spec.storage_url))



