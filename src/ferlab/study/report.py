"""A study's results: sorted table, per-stage curves figure, CSV/JSON of all trials, one HTML report.

Reads the study's storage (it never trains), so it can be written while workers
still run, or again later.

Depends on: files, plots, and this package's spec and engine.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.files import atomic_write_text
from ..evaluation.plots import plot_loss_acc_of_multiple_parameters
from .engine import best_trial, existing_stage_study, open_storage, quiet_optuna, stage_bases, stage_finished
from .spec import SEED_CHOICES, SweepSpec

FIELDS = ("stage", "trial", "point", "state", "mean_val_accuracy", "std_val_accuracy", "seeds",
          "best_epoch", "seconds_per_run", "error")


def collect(spec: SweepSpec) -> tuple[list[dict[str, Any]], dict[str, dict[str, list]], dict]:
    """Rows for every trial, the histories behind each stage's figure, and carried-forward choices."""
    with quiet_optuna():
        return _collect(spec)


def _collect(spec: SweepSpec) -> tuple[list[dict[str, Any]], dict[str, dict[str, list]], dict]:
    storage = open_storage(spec.storage_url)
    bases = stage_bases(spec, storage, None, lambda _: None, run=False) if spec.carry_forward else \
        [spec.base] * len(spec.stages)
    rows, curves, chosen = [], {}, {}
    for index, stage in enumerate(spec.stages[:len(bases)]):  # a study under way: its started stages
        study = existing_stage_study(spec, index, storage)  # a reader never creates a stage
        if study is None:
            break
        stale = _stale_trials(storage, study)
        curves[stage.name] = {}
        for t in study.get_trials(deepcopy=False):
            if "overrides" not in t.user_attrs:
                continue  # an empty ask() between workers; never ran
            seeds = t.user_attrs.get("per_seed", [])
            accs = [s["best_val_accuracy"] for s in seeds]
            row = {
                "stage": stage.name, "trial": t.number, "point": t.user_attrs.get("label"),
                "state": "stalled" if t._trial_id in stale else t.state.name.lower(),
                "mean_val_accuracy": statistics.fmean(accs) if accs else None,
                "std_val_accuracy": statistics.stdev(accs) if len(accs) > 1 else 0.0 if accs else None,
                "seeds": len(accs),
                "best_epoch": seeds[0]["best_epoch"] if seeds else None,
                "seconds_per_run": statistics.fmean(s["seconds"] for s in seeds) if seeds else None,
                "error": t.user_attrs.get("error", "") or (
                    "interrupted; run again as a later trial" if t.state.name == "FAIL" else
                    "its worker stopped: the next run of the command reruns it" if t._trial_id in stale
                    else ""),
                "runs": [s["run"] for s in seeds],
                "run_seconds": {s["run"]: s["seconds"] for s in seeds},
                "confirm": bool(t.user_attrs.get("confirm")),
            }
            rows.append(row)
            if seeds and t.state.name == "COMPLETE":
                history_file = Path(seeds[0]["run"]) / "history.json"
                if history_file.exists():
                    curves[stage.name][row["point"]] = json.loads(history_file.read_text())
        best = best_trial(study) if stage_finished(spec, index, study) else None  # under way: none yet
        if best is not None:
            chosen[stage.name] = best.user_attrs["label"]
            for r in rows:
                r["chosen"] = r.get("chosen") or (r["stage"] == stage.name and r["trial"] == best.number)
    # Stage by stage in the study's order, best first within each: the order a reader follows
    # the one-at-a-time choices in (a table sorted across stages mixes unrelated baselines).
    order = {stage.name: i for i, stage in enumerate(spec.stages)}
    rows.sort(key=lambda r: (order[r["stage"]], r["mean_val_accuracy"] is None,
                             -(r["mean_val_accuracy"] or 0)))
    return rows, curves, chosen


def _stale_trials(storage, study) -> set[int]:
    """Running trials whose worker stopped beating (a study read between sessions): without
    this the page would list them as running. Read-only, unlike Optuna's fail_stale_trials;
    the method is Optuna's own (private), so an Optuna without it just shows them running."""
    try:
        return set(storage._get_stale_trial_ids(study._study_id))
    except AttributeError:
        return set()


def progress(spec: SweepSpec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How far the study is: points finished of all it will run, and the training time so far."""
    total = sum(stage.n_trials if stage.kind == "tpe" else len(stage.points) for stage in spec.stages)
    # a point that failed for a reason (an invalid configuration) is done too; an interrupted
    # trial is not: its point runs again as a later trial
    done = [r for r in rows if r["state"] in ("complete", "pruned")
            or (r["state"] == "fail" and not r["error"].startswith("interrupted"))]
    # a close call's rerun reuses its point's first run: count each point and each run once
    points = {(r["stage"], r["point"]) for r in done}
    seconds = sum({run: s for r in done for run, s in r.get("run_seconds", {}).items()}.values())
    finished = sum(1 for stage in spec.stages
                   if sum(key[0] == stage.name for key in points) >= (
                       stage.n_trials if stage.kind == "tpe" else len(stage.points)))
    return {"points_done": len(points), "points_total": total, "stages_done": finished,
            "stages_total": len(spec.stages), "training_hours": seconds / 3600}


def format_progress(p: dict[str, Any]) -> str:
    state = "finished" if p["points_done"] >= p["points_total"] else "under way"
    return (f"{p['points_done']} of {p['points_total']} points done, {p['stages_done']} of "
            f"{p['stages_total']} stages ({state}); {p['training_hours']:.1f} h of training so far")


def format_table(rows: list[dict[str, Any]]) -> str:
    """One line a trial, stage by stage; `*` marks each stage's chosen trial."""
    width = max([32, *(len(str(r["point"])) for r in rows)]) + 2  # filter sets are long
    lines = [f"{'stage':<22}{'point':<{width}}{'val acc (mean ± std)':>22}{'seeds':>6}{'best ep':>8}"
             f"{'s/run':>8}  state"]
    for i, r in enumerate(rows):
        if i and r["stage"] != rows[i - 1]["stage"]:
            lines.append("")
        # the chosen trial's row only: an interrupted attempt at the same point, or its first
        # run before a close call's rerun, keeps its own line
        mark = "*" if r.get("chosen") else " "
        acc = ("-" if r["mean_val_accuracy"] is None else f"{r['mean_val_accuracy']:.4f}"
               + (f" ± {r['std_val_accuracy']:.4f}" if r["seeds"] > 1 else ""))
        secs = f"{r['seconds_per_run']:.0f}" if r["seconds_per_run"] is not None else "-"
        lines.append(f"{r['stage']:<22}{mark}{str(r['point']):<{width - 1}}{acc:>22}{r['seeds']:>6}"
                     f"{str(r['best_epoch'] or '-'):>8}{secs:>8}  {r['state']}"
                     + (", rerun of a close call" if r.get("confirm") else "")
                     + (f" ({r['error'][:60]})" if r["error"] else ""))
    return "\n".join(lines)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def how_to_read(spec: SweepSpec) -> str:
    """One paragraph for a newcomer: what each trial did and how the stages chose."""
    b = spec.base
    size = (f"a stratified subset of {b.data.limit:,} training images" if b.data.limit
            else "all training images")
    text = (f"Each point is one configuration, trained {spec.seeds} time(s) for {b.train.epochs} epochs on "
            f"{size} and scored by its best validation accuracy over those epochs (mean over seeds). ")
    if spec.carry_forward:
        text += ("Stages run in order, one parameter at a time as in the seed report: each stage starts "
                 "from the values the earlier stages chose. The curves below show every point of a stage; "
                 "the star marks each run's best epoch.")
    return text


def write_report(spec: SweepSpec, log: Callable[[str], None] = print) -> dict[str, Any]:
    rows, curves, chosen = collect(spec)
    out = spec.study_dir
    figures = {}
    for stage, histories in curves.items():
        if histories:
            figures[stage] = plot_loss_acc_of_multiple_parameters(
                histories, out / f"curves_{stage}.png", f"{spec.name}: {stage}")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())
    state = progress(spec, rows)
    summary = {"name": spec.name, "progress": state, "trials": rows, "chosen": chosen}
    if spec.carry_forward:
        summary["seed_report_choices"] = {k: v for k, v in SEED_CHOICES.items() if k in chosen}
    atomic_write_text(out / "results.json", json.dumps(summary, indent=1))
    table = format_table(rows)
    comparison = ""
    if spec.carry_forward and chosen:
        comparison = "\n".join(
            f"{stage:<24}{chosen[stage]:<34}{stage}={json.dumps(SEED_CHOICES[stage]).replace(' ', '')}"
            for stage in SEED_CHOICES if stage in chosen
        )
        comparison = f"{'parameter':<24}{'chosen here':<34}the seed report chose\n" + comparison
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>ferlab study {html.escape(spec.name)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "pre{background:#f6f6f6;padding:1em;overflow-x:auto}img{max-width:100%}</style></head><body>",
        f"<h1>Study {html.escape(spec.name)}</h1>",
        f"<p>{html.escape(how_to_read(spec))}</p>",
        f"<p><b>{html.escape(format_progress(state))}</b>. {spec.seeds} seed(s) per point, storage "
        f"<code>{html.escape(spec.storage_url)}</code>.</p>",
        "<h2>Trials, stage by stage, best first (* the stage's choice)</h2>",
        f"<pre>{html.escape(table)}</pre>",
    ]
    if comparison:
        parts += ["<h2>Chosen values beside the seed report's</h2>", f"<pre>{html.escape(comparison)}</pre>"]
    for stage, png in figures.items():
        parts += [f"<h2>{html.escape(stage)}</h2>", _img(png)]
    parts.append("</body></html>")
    atomic_write_text(out / "report.html", "\n".join(parts))
    log(table)
    if comparison:
        log(comparison)
    log(format_progress(state))
    log(f"report: {out / 'report.html'}")
    return summary


