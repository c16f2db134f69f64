"""The `ferlab` command line: each command parses options and calls one library function.

The library is imported inside each command, so `ferlab --help` and a prediction
never pay for the training, study or serving code.

Depends on: Typer; every library module, imported inside the command that uses it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .inference.shipped import model_help  # the standard library only: --help stays fast

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="ferlab: train, tune, evaluate and serve facial-expression CNNs (FER2013).",
)



def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _user_errors() -> tuple[type[Exception], ...]:
    # Every error a user can cause derives from UserError (errors.py) and names the file,
    # field or limit. An OS error on a path the user gave (missing, no permission, a folder
    # for a file) names that path too. Anything else is a bug in ferlab: it keeps its
    # traceback, so that it can be reported.
    from .core.errors import UserError

    return (UserError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


# What to tell a user who presses Ctrl-C: set by a command before its long work (a callable,
# so that it can look at what was finished by then). Every write is atomic, so an interrupt
# never leaves a half-written file; the line only has to say how to go on.
_interrupt_hint = [lambda: "nothing was left half-written; run the same command again"]


def _on_interrupt(hint) -> None:
    _interrupt_hint[0] = hint


def _command_line(*extra: str) -> str:
    import shlex

    args = [a for a in sys.argv[1:] if a not in extra]
    return shlex.join(["ferlab", *args, *extra])


def _run(fn, *args, **kwargs):
    """Call a library function; its expected failures become one clear line and exit code 2,
    Ctrl-C one line saying how to continue and exit code 130."""
    try:
        return fn(*args, **kwargs)
    except _user_errors() as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail(f"interrupted; {_interrupt_hint[0]()}", 130)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ferlab {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    """ferlab command line."""


@app.command()
def prepare(
    source: Annotated[Path, typer.Argument(help="fer2013.csv, an image folder or .zip, a folder of x_*.npy arrays, or FER+'s layout (folder or .zip)")],
    out: Annotated[Path, typer.Option("-o", "--out", help="cache file to write (.npz)")],
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="skip bad rows/images instead of stopping")] = False,
    split_name: Annotated[str, typer.Option(help="split name for sources without one (CSV with no Usage column)")] = "Training",
    classes: Annotated[str, typer.Option("--classes", help="image folders: fer2013 | folders (your own classes) | NAME,NAME,...")] = "fer2013",
    votes: Annotated[Optional[Path], typer.Option("--votes", help="FER+: fer2013new.csv, joined by row order with the fer2013.csv SOURCE")] = None,
) -> None:
    """Read a FER2013 or FER+ source (or your own class folders) once and write a compact cache.

    FER+ caches keep every face's ten crowd votes (also those without a majority emotion,
    for the soft-label training modes); the table shows what the majority rule drops.
    """
    from .data import format_counts, load_dataset, save_cache

    if out.suffix != ".npz":
        _fail(f"{out}: the cache must be a .npz file")
    from .core.files import check_writable, refuse_overwriting_inputs

    _run(refuse_overwriting_inputs, out, [source, votes], "cache")
    _run(check_writable, out.parent)  # before a long read, not after it
    data, report = _run(load_dataset, source, skip_bad=skip_bad, split_name=split_name,
                        progress=sys.stderr.isatty(), classes=classes, votes=votes, unlabeled=True)
    _run(save_cache, data, out)
    for line in report.lines():
        typer.echo(line)
    typer.echo(format_counts(data))
    kept = int((data.labels >= 0).sum())
    typer.echo(f"wrote {out} ({len(data):,} images" + (f", {kept:,} with a majority label)" if kept < len(data) else ")"))


@app.command(context_settings={"allow_extra_args": False})
def train(
    data: Annotated[str, typer.Option("--data", help="training data: a cache or any raw source")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="SECTION.KEY=VALUE overrides, e.g. model.block_num=4")] = None,
    config: Annotated[Optional[str], typer.Option("--config", help="YAML config file or bundled name (seed-final)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="run folder (default runs/NAME-TIME)")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="epochs (train.epochs)")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="batch size (train.batch_size)")] = None,
    limit: Annotated[Optional[int], typer.Option(help="train on a stratified random subset of N images")] = None,
    seed: Annotated[Optional[int], typer.Option(help="random seed (train.seed)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out from its last epoch")] = False,
    init: Annotated[Optional[str], typer.Option("--init", help=model_help("start from this checkpoint, run folder") + "; default config: finetune")] = None,
    finetune: Annotated[Optional[str], typer.Option("--finetune", help="with --init: all | head | N (classifier + last N stages)")] = None,
    classes: Annotated[Optional[str], typer.Option("--classes", help="image folders: fer2013 (default) | folders (your own classes) | NAME,NAME,...")] = None,
) -> None:
    """Train a model; writes config, history, curves and checkpoints to a run folder.

    Your own faces: `ferlab train --init bundled --data my_faces/ --classes folders`
    fine-tunes the shipped model on class folders (my_faces/<class>/*.jpg, or
    train/ and val/ folders of those); the class names travel in the checkpoint.
    """
    from .core.config import load_config
    from .training import train as run_training

    # The options' values are taken literally (a path is a path, whatever it holds); only
    # the SECTION.KEY=VALUE arguments are parsed as YAML.
    flags = [("data.source", data)]
    for key, value in (("train.epochs", epochs), ("train.batch_size", batch_size),
                       ("data.limit", limit), ("train.seed", seed), ("train.init", init),
                       ("train.finetune", finetune), ("data.classes", classes)):
        if value is not None:
            flags.append((key, value))
    if config is None and init is not None:
        config = "finetune"
    cfg = _run(load_config, config, [*(overrides or []), *flags])
    if resume and out is None:
        _fail("--resume needs the run folder to continue: pass --out RUN_DIR")
    name = Path(config).stem if config else None
    if out is None:
        from .training import default_run_dir

        out = default_run_dir(cfg, name)
    _on_interrupt(lambda: _train_hint(out))
    _run(run_training, cfg, out, resume=resume, progress=sys.stderr.isatty(), run_name=name)


def _train_hint(out: Path) -> str:
    if not (out / "last.pt").exists():
        return f"no epoch had finished in {out}; run the same command again to start over"
    args = [] if any(a == "--out" or a.startswith("--out=") for a in sys.argv) else ["--out", str(out)]
    return f"{out} keeps its last finished epoch; continue with: {_command_line(*args, '--resume')}"


@app.command()
def speedrun(
    data: Annotated[str, typer.Option("--data", help="training data: a cache or any raw source")],
    budget_minutes: Annotated[float, typer.Option("--budget-minutes", help="wall-clock budget for training")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="SECTION.KEY=VALUE overrides")] = None,
    config: Annotated[str, typer.Option("--config", help="recipe (default: the bundled vgg-fast)")] = "vgg-fast",
    out: Annotated[Optional[Path], typer.Option("--out", help="run folder (default runs/speedrun-TIME)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="random seed (train.seed)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out")] = False,
) -> None:
    """Train within a time budget (schedule fitted to it); print minutes to 55/60/63/65/68/70%."""
    from .core.config import load_config
    from .training import default_run_dir
    from .training.speedrun import speedrun as run_speedrun

    flags = [("data.source", data)] + ([("train.seed", seed)] if seed is not None else [])
    cfg = _run(load_config, config, [*(overrides or []), *flags])
    if resume and out is None:
        _fail("--resume needs the run folder to continue: pass --out RUN_DIR")
    out = out or default_run_dir(cfg, "speedrun")
    _on_interrupt(lambda: _train_hint(out))
    _run(run_speedrun, cfg, budget_minutes, out, resume=resume, progress=sys.stderr.isatty())


@app.command()
def sweep(
    data: Annotated[str, typer.Option("--data", help="training data: a cache or any raw source")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="SECTION.KEY=VALUE overrides of the base config")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", help="KEY=V1,V2,... (or LOW:HIGH[:log] with tpe); repeatable")] = None,
    preset: Annotated[Optional[str], typer.Option(help="seed-study: replay the seed report's whole study")] = None,
    sampler: Annotated[str, typer.Option(help="oat (one at a time) | grid (all combinations) | tpe (Optuna search)")] = "oat",
    n_trials: Annotated[int, typer.Option(help="tpe: number of trials")] = 20,
    config: Annotated[Optional[str], typer.Option("--config", help="base config (default: seed-baseline)")] = None,
    study: Annotated[Optional[Path], typer.Option("--study", help="study folder (default studies/NAME)")] = None,
    name: Annotated[Optional[str], typer.Option(help="study name (default: the preset or 'study')")] = None,
    seeds: Annotated[int, typer.Option(help="repeat every point with K seeds")] = 1,
    confirm_seeds: Annotated[int, typer.Option(help="a close call: rerun a stage's points within --confirm-within of its leader with N seeds before it chooses (oat/grid; 0: off)")] = 0,
    confirm_within: Annotated[float, typer.Option(help="how close (validation accuracy) counts as a close call")] = 0.01,
    epochs: Annotated[Optional[int], typer.Option(help="epochs per run")] = None,
    limit: Annotated[Optional[int], typer.Option(help="train each run on a stratified subset of N images")] = None,
    budget_minutes: Annotated[Optional[float], typer.Option(help="wall-clock budget of each run")] = None,
    workers: Annotated[int, typer.Option(help="local worker processes")] = 1,
    storage: Annotated[Optional[str], typer.Option(help="Optuna storage URL shared by workers on many machines (e.g. postgresql://...)")] = None,
    prune: Annotated[bool, typer.Option("--prune", help="stop hopeless trials early (median pruner)")] = False,
    report_only: Annotated[bool, typer.Option("--report-only", help="write the table, curves and report page from the study's storage without training (a study under way or done)")] = False,
) -> None:
    """Tuning study: the seed's one-at-a-time sweeps, grids or Optuna TPE; resumable and parallel."""
    from .core.config import load_config
    from .study import SweepSpec, build_stages, run_sweep, seed_study_stages, write_report

    flags = [("data.source", data)]
    for key, value in (("train.epochs", epochs), ("data.limit", limit), ("train.budget_minutes", budget_minutes)):
        if value is not None:
            flags.append((key, value))
    base = _run(load_config, config or "seed-baseline", [*(overrides or []), *flags])
    if preset not in (None, "seed-study"):
        _fail(f"unknown preset {preset!r} (presets: seed-study)")
    if preset and param:
        _fail("give either --preset or --param, not both")
    stages = seed_study_stages() if preset else _run(build_stages, param or [], sampler, n_trials)
    if seeds < 1 or workers < 1:
        _fail("--seeds and --workers must be at least 1")
    if confirm_seeds and confirm_seeds <= seeds:
        _fail(f"--confirm-seeds {confirm_seeds} must exceed --seeds {seeds} (or be 0: off)")
    if not 0 <= confirm_within < 1:
        _fail(f"--confirm-within {confirm_within}: give an accuracy difference in [0, 1), e.g. 0.01")
    name = name or preset or "study"
    spec = SweepSpec(base, stages, study or Path("studies") / name, seeds=seeds, storage=storage,
                     name=name, prune=prune, carry_forward=bool(preset), confirm_seeds=confirm_seeds,
                     confirm_within=confirm_within)
    if report_only:
        if storage is None and not (spec.study_dir / "study.db").exists():
            _fail(f"--report-only: no study in {spec.study_dir} (no study.db); give its --study or --storage")
        _run(write_report, spec, typer.echo)
        return
    _on_interrupt(lambda: f"the finished trials are kept in {spec.study_dir}; run the same command "
                          "to continue the study where it stopped")
    _run(run_sweep, spec, workers)
    _run(write_report, spec, typer.echo)


@app.command()
def evaluate(
    checkpoint: Annotated[Optional[Path], typer.Argument(help=model_help(default="ensemble"))] = None,
    data: Annotated[str, typer.Option("--data", help="a cache or any raw source")] = "",
    split: Annotated[str, typer.Option(help="split to score (auto: PrivateTest, else PublicTest, else test)")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    out: Annotated[Optional[Path], typer.Option(help="folder for the report files (default: the checkpoint's; for a shipped model the current folder)")] = None,
    tta: Annotated[Optional[str], typer.Option(help="test-time augmentation: none | flip | tencrop (default: as trained)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16 where supported) | fp32")] = "auto",
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="skip bad rows/images in a raw source")] = False,
    uncalibrated: Annotated[bool, typer.Option("--uncalibrated", help="raw scores: ignore the model's confidence temperature")] = False,
    html: Annotated[Optional[Path], typer.Option("--html", help="also write one self-contained page: metrics, confusion matrices, reliability, the most confident mistakes with saliency maps")] = None,
) -> None:
    """Accuracy, per-class precision/recall/F1, confusion matrix, confidence (ECE, NLL, Brier,
    raw and calibrated); saves JSON, a heatmap and a reliability diagram; --html a report page."""
    import shlex

    from .evaluation.scores import evaluate_source, format_report

    command = shlex.join(["ferlab", *sys.argv[1:]]) if sys.argv[0].endswith("ferlab") else ""
    if html is not None:
        from .evaluation.report import check_html_path

        _run(check_html_path, html)
    scored, model, json_path, png = _run(evaluate_source, checkpoint, data, split, tta=tta, device=device,
                                         precision=precision, skip_bad=skip_bad, out=out,
                                         calibrated=not uncalibrated)
    result = scored.result
    if html is not None:
        from .evaluation.report import build_report, write_html

        _run(lambda: write_html(build_report(model, scored, command=command), html))
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(f"model: {model.description}")
        typer.echo(format_report(result))
        reliability = png.with_name(f"reliability_{result['split']}.png")
        typer.echo(f"saved {json_path}, {png}" + (f" and {reliability}" if "calibration" in result else ""))
        if html is not None:
            typer.echo(f"report page: {html} (open it in a browser)")


@app.command()
def calibrate(
    checkpoint: Annotated[Optional[Path], typer.Argument(help=model_help(default="ensemble") + "; a shipped model needs -o")] = None,
    data: Annotated[str, typer.Option("--data", help="a cache or any raw source holding the validation split")] = "",
    split: Annotated[str, typer.Option(help="split to fit on (auto: PublicTest / FER2013Valid; never the test split)")] = "auto",
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="write the calibrated copy here (default: update the model file in place)")] = None,
    tta: Annotated[Optional[str], typer.Option(help="TTA to fit with: none | flip | tencrop (default: the model's own)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16 where supported) | fp32")] = "auto",
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="skip bad rows/images in a raw source")] = False,
) -> None:
    """Fit a confidence temperature on validation so probabilities mean what they say (the
    predicted class never changes); stored in the model, applied by predict/serve/evaluate."""
    from .inference.calibration import calibrate_model
    from .inference.temperature import format_calibration

    entry, path = _run(calibrate_model, checkpoint, data, split, out=out, tta=tta, device=device,
                       precision=precision, skip_bad=skip_bad)
    typer.echo(format_calibration(entry))
    typer.echo(f"wrote {path}")


def _recognizer(model, **kwargs):
    """Load an EmotionRecognizer; a missing or bad model is one clear line, exit code 2."""
    from .photos.recognizer import EmotionRecognizer

    try:
        return EmotionRecognizer(model, **kwargs)
    except _user_errors() as e:  # no such file or device, no detector
        _fail(str(e))


@app.command()
def predict(
    inputs: Annotated[list[str], typer.Argument(help="[MODEL] then photos, folders, globs or videos; MODEL: " + model_help(default="ensemble-int8 on a CPU"))],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="print CSV, one row per face")] = False,
    no_detect: Annotated[bool, typer.Option("--no-detect", help="treat each image as one face crop")] = False,
    annotate: Annotated[Optional[Path], typer.Option("--annotate", help="write copies with boxes and labels to this folder")] = None,
    explain: Annotated[Optional[Path], typer.Option("--explain", help="write saliency heatmaps of each photo's faces to this folder (see `ferlab explain`)")] = None,
    every: Annotated[int, typer.Option(help="videos: classify every Nth frame")] = 1,
    video_dir: Annotated[Path, typer.Option(help="videos: folder for the per-frame CSV files")] = Path("."),
    tta: Annotated[Optional[str], typer.Option(help="none | flip | tencrop (default: as trained)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16 where supported) | fp32")] = "auto",
    uncalibrated: Annotated[bool, typer.Option("--uncalibrated", help="raw scores: ignore the model's confidence temperature")] = False,
    min_face: Annotated[Optional[float], typer.Option("--min-face", help="smallest face sought, as a share of the shorter side (default 0.15; 0.05 for group photos, several times slower; 0.2 for webcam video, ~2x faster)")] = None,
    detector: Annotated[str, typer.Option("--detector", help="face detector: auto (YuNet where it runs, else Haar) | yunet | haar")] = "auto",
) -> None:
    """Faces and emotions in photos and videos (YuNet face detection, Haar where YuNet cannot
    run), or in face crops.
    Videos: each face gets a track id across frames; per-frame rows go to VIDEO_faces.csv and
    each track's emotions over time to VIDEO_timeline.png."""
    _predict(inputs, as_json=as_json, as_csv=as_csv, no_detect=no_detect, annotate=annotate, every=every,
             video_dir=video_dir, tta=tta, device=device, precision=precision, uncalibrated=uncalibrated,
             explain_dir=explain, min_face=min_face, detector=detector)


@app.command()
def explain(
    inputs: Annotated[list[str], typer.Argument(help="[MODEL] then photos, folders or globs; MODEL: " + model_help("checkpoint, run folder", default="ensemble"))],
    out: Annotated[Path, typer.Option("-o", "--out", help="folder for the heatmap PNGs")] = Path("explain"),
    classes: Annotated[Optional[list[str]], typer.Option("--class", help="explain this class instead of the predicted one (repeatable)")] = None,
    method: Annotated[str, typer.Option(help="gradcam | integrated-gradients")] = "gradcam",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    no_detect: Annotated[bool, typer.Option("--no-detect", help="treat each image as one face crop")] = False,
    tta: Annotated[Optional[str], typer.Option(help="TTA of the prediction explained: none | flip | tencrop (default: as trained)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
    min_face: Annotated[Optional[float], typer.Option("--min-face", help="smallest face sought, as a share of the shorter side (default 0.15)")] = None,
    detector: Annotated[str, typer.Option("--detector", help="face detector: auto (YuNet where it runs, else Haar) | yunet | haar")] = "auto",
) -> None:
    """Where the model looked: a saliency heatmap per face (Grad-CAM or integrated gradients,
    via captum) of the predicted class or each --class, over the face crop
    (PHOTO_face0_happy.png: crop | heatmap) and over the photo (PHOTO_predicted_heatmap.png).
    Needs a PyTorch model (ONNX exports carry no gradients)."""
    _predict(inputs, as_json=as_json, as_csv=False, no_detect=no_detect, annotate=None, every=1,
             video_dir=Path("."), tta=tta, device=device, precision="fp32", uncalibrated=False,
             explain_dir=out, classes=classes, method=method, photos_only=True, min_face=min_face,
             detector=detector)


def _predict(inputs: list[str], *, as_json: bool, as_csv: bool, no_detect: bool, annotate: Path | None,
             every: int, video_dir: Path, tta: str | None, device: str, precision: str, uncalibrated: bool,
             explain_dir: Path | None, classes: list[str] | None = None, method: str = "gradcam",
             photos_only: bool = False, min_face: float | None = None, detector: str = "auto") -> None:
    from .photos.predict import expand_inputs, format_csv, format_table, predict_files, split_model_argument
    from .photos.video import VIDEO_EXTENSIONS

    model, paths = split_model_argument(inputs)
    if not paths:
        _fail("no images given")
    if every < 1:
        _fail(f"--every must be >= 1, got {every}")
    recognizer = _recognizer(model, device=device, precision=precision, detect=not no_detect, tta=tta,
                             calibrated=not uncalibrated, min_face=min_face, detector=detector)
    if explain_dir is not None:
        from .inference.explain import check_method

        _run(lambda: recognizer.saliency_classifier)
        _run(check_method, method)
        unknown = [c for c in classes or () if c not in recognizer.class_names]
        if unknown:
            _fail(f"--class {unknown[0]!r} is not one of this model's classes: {', '.join(recognizer.class_names)}")
    files, missing = expand_inputs(paths)
    errors = [f"{m}: no such file, folder or match" for m in missing]
    if photos_only:
        videos = [f for f in files if f.suffix.lower() in VIDEO_EXTENSIONS]
        files = [f for f in files if f not in videos]
        errors += [f"{v}: a video; explain takes photos (predict classifies videos)" for v in videos]
    for folder in (annotate, explain_dir):
        if folder is not None:
            from .core.files import check_writable

            _run(check_writable, folder)
            folder.mkdir(parents=True, exist_ok=True)
    result = _run(predict_files, recognizer, files, annotate_dir=annotate, video_dir=video_dir, every=every,
                  progress=sys.stderr.isatty() and not (as_json or as_csv), explain_dir=explain_dir,
                  explain_classes=classes, explain_method=method)
    errors += result.errors
    for line in errors:
        typer.echo(f"error: {line}", err=True)
    names = recognizer.class_names
    if as_json:
        typer.echo(json.dumps({"model": recognizer.classifier.description, "photos": result.photos,
                               "videos": result.videos,
                               **({"explanations": [str(p) for p in result.explanations]} if explain_dir else {})}))
    elif as_csv:
        typer.echo(format_csv(result, names), nl=False)
    else:
        typer.echo(format_table(result, names))
        if explain_dir is not None:
            typer.echo(f"{len(result.explanations)} heatmaps written to {explain_dir}"
                       + (" (videos are classified without heatmaps)" if result.videos else ""))
    if errors:
        raise typer.Exit(1)


@app.command()
def export(
    checkpoint: Annotated[Optional[Path], typer.Argument(help=model_help("checkpoint, run folder", default="ensemble"))] = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="model.onnx, or model.pt for a slim checkpoint")] = Path("model.onnx"),
    tta: Annotated[Optional[str], typer.Option(help="default test-time augmentation stored with the model: none | flip | tencrop")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="quantize the ONNX model to int8 (needs --calibration-data)")] = False,
    calibration_data: Annotated[Optional[str], typer.Option(help="--int8: faces to calibrate on (a cache or any source; its training split)")] = None,
    calibration_images: Annotated[int, typer.Option(help="--int8: how many faces (stratified random subset)")] = 1000,
) -> None:
    """Export to ONNX (dynamic batch axis; class names and preprocessing as metadata), or to a
    slim .pt checkpoint without optimizer state (how the bundled model is made).

    `--int8 --calibration-data fer.npz` writes an int8 ONNX model (2-3x faster on CPUs
    with VNNI); score it with `ferlab evaluate model-int8.onnx --data fer.npz`.
    """
    from .inference.export import export_model

    path, source = _run(export_model, checkpoint, out, tta=tta, int8=int8, calibration_data=calibration_data,
                        calibration_images=calibration_images, log=typer.echo)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) from {source}")


@app.command()
def ensemble(
    models: Annotated[list[str], typer.Argument(help="two or more models (an ensemble's members are taken over): " + model_help("checkpoints, run folders"))],
    out: Annotated[Path, typer.Option("-o", "--out", help="the ensemble checkpoint to write (.pt)")] = Path("ensemble.pt"),
    tta: Annotated[Optional[str], typer.Option(help="every member's TTA: none | flip | tencrop, or one per member (flip,flip,tencrop); default: each member's own")] = None,
    fp32: Annotated[bool, typer.Option("--fp32", help="store float32 weights (default float16: half the file)")] = False,
) -> None:
    """Average several trained models' calibrated probabilities in one model file that works
    wherever a model does (evaluate, predict, serve, export, train.teacher)."""
    from .inference.ensemble_file import build_ensemble

    path = _run(build_ensemble, models, out, tta=tta, half=not fp32, log=typer.echo)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); score it with "
               f"`ferlab evaluate {path} --data ...`, calibrate it with `ferlab calibrate {path} --data ...`")


@app.command()
def serve(
    model: Annotated[Optional[Path], typer.Option("--model", help=model_help(default="ensemble-int8 on a CPU"))] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="largest accepted upload")] = 10.0,
    decode_budget_mb: Annotated[float, typer.Option(help="memory all uploads being decoded at once may take (estimated from each header); larger images wait, or get 413 if one alone needs more")] = 128.0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
    cors: Annotated[Optional[list[str]], typer.Option("--cors", help="allow browser pages from this origin (repeatable; none by default)")] = None,
    trusted_host: Annotated[Optional[list[str]], typer.Option("--trusted-host", help="answer only requests for this Host (repeatable; e.g. example.org, *.example.org)")] = None,
    uncalibrated: Annotated[bool, typer.Option("--uncalibrated", help="raw scores: ignore the model's confidence temperature")] = False,
    min_face: Annotated[Optional[float], typer.Option("--min-face", help="smallest face sought, as a share of the shorter side (default 0.15)")] = None,
    workers: Annotated[int, typer.Option("--workers", help="server processes, each with its share of the cores (2 on a 2-core machine: ~2x the requests/s)")] = 1,
    detector: Annotated[str, typer.Option("--detector", help="face detector: auto (YuNet where it runs, else Haar) | yunet | haar")] = "auto",
) -> None:
    """REST API (POST /api/predict, GET /api/health, /docs) and a web page at /."""
    from .serve import check_port
    from .serve import serve as run_server

    if not max_upload_mb > 0:
        _fail(f"--max-upload-mb must be a positive number of megabytes, got {max_upload_mb}")
    if workers < 1:
        _fail(f"--workers must be >= 1, got {workers}")
    _run(check_port, host, port)  # before the model loads: a bad port is one line, not a traceback
    options = {"calibrated": not uncalibrated, "min_face": min_face, "detector": detector}
    # One thread per image, one image per core at a time: 29 req/s at 10 clients on two cores,
    # against 21 with every image on both cores (benchmarks/everyday.py, serve table).
    recognizer = _recognizer(model, device=device, threads=1, **options)  # fail before the server starts
    if not decode_budget_mb > 0:
        _fail(f"--decode-budget-mb must be a positive number of megabytes, got {decode_budget_mb}")
    _run(run_server, model=model, host=host, port=port, max_upload_mb=max_upload_mb, device=device,
         decode_budget_mb=decode_budget_mb,
         recognizer=recognizer if workers == 1 else None, cors_origins=cors or (),
         trusted_hosts=trusted_host or (), workers=workers, recognizer_options=options)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("-o", "--out", help="annotated copy of the photo")] = Path("demo_annotated.jpg"),
    model: Annotated[Optional[Path], typer.Option(help=model_help(default="ensemble-int8 on a CPU"))] = None,
) -> None:
    """No data, no network: find faces and emotions in the bundled public-domain photo."""
    from .inference.shipped import SAMPLE_PHOTO
    from .photos.predict import run_demo

    recognizer = _recognizer(model)
    faces = _run(run_demo, recognizer, out)
    typer.echo(f"{SAMPLE_PHOTO.name} (NASA, public domain): {len(faces)} face(s); model {recognizer.classifier.description}")
    for face in faces:
        probs = ", ".join(f"{k} {v:.2f}" for k, v in sorted(face["probabilities"].items(), key=lambda kv: -kv[1]))
        typer.echo(f"  box {face['box']}: {face['emotion']}  ({probs})")
    typer.echo(f"wrote {out}")


@app.command()
def models(
    name: Annotated[Optional[str], typer.Argument(help="show this model's summary")] = None,
    overrides: Annotated[Optional[list[str]], typer.Argument(help="KEY=VALUE model arguments")] = None,
) -> None:
    """List registered models, or print one's layers, shapes, parameters and MFLOPs."""
    import yaml

    from .core.config import load_yaml
    from .models import build_model, list_models, model_defaults, model_summary

    if name is None:
        for n in list_models():
            typer.echo(f"{n}: {model_defaults(n)}")
        return
    kwargs = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            _fail(f"{item!r}: expected KEY=VALUE")
        try:
            kwargs[key] = load_yaml(value)
        except yaml.YAMLError as e:
            _fail(f"{item!r}: cannot parse the value: {str(e).splitlines()[0]}")
    model = _run(build_model, name, **kwargs)
    typer.echo(model_summary(model).table())


if __name__ == "__main__":
    app()
