"""The `ferlab` command line: each command parses options and calls one library function."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="ferlab: train, tune, evaluate and serve facial-expression CNNs (FER2013).",
)

NO_CHECKPOINT = (
    "no checkpoint given: pass a checkpoint file or run folder (e.g. runs/NAME/best.pt); "
    "this ferlab has no bundled default model yet"
)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _user_errors() -> tuple[type[Exception], ...]:
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DataError
    from .models.registry import ModelConfigError
    from .train import RunError

    return (CheckpointError, ConfigError, DataError, ModelConfigError, RunError)


def _run(fn, *args, **kwargs):
    """Call a library function; its expected failures become one clear line and exit code 2."""
    try:
        return fn(*args, **kwargs)
    except _user_errors() as e:
        _fail(str(e))


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
    source: Annotated[Path, typer.Argument(help="fer2013.csv, an image folder or .zip, or a folder of x_*.npy arrays")],
    out: Annotated[Path, typer.Option("-o", "--out", help="cache file to write (.npz)")],
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="skip bad rows/images instead of stopping")] = False,
    split_name: Annotated[str, typer.Option(help="split name for sources without one (CSV with no Usage column)")] = "Training",
) -> None:
    """Read a FER2013 source once and write a compact cache that every command accepts."""
    from .data import load_dataset, save_cache

    if out.suffix != ".npz":
        _fail(f"{out}: the cache must be a .npz file")
    data, report = _run(load_dataset, source, skip_bad=skip_bad, split_name=split_name,
                        progress=sys.stderr.isatty())
    save_cache(data, out)
    for line in report.lines():
        typer.echo(line)
    typer.echo(_counts_table(data))
    typer.echo(f"wrote {out} ({len(data):,} images)")


def _counts_table(data) -> str:
    names = data.class_names
    head = f"{'split':<14}" + "".join(f"{n[:9]:>10}" for n in names) + f"{'total':>10}"
    rows = [head, "-" * len(head)]
    for split, counts in data.class_counts().items():
        rows.append(f"{split:<14}" + "".join(f"{c:>10,}" for c in counts) + f"{sum(counts):>10,}")
    return "\n".join(rows)


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
) -> None:
    """Train a model; writes config, history, curves and checkpoints to a run folder."""
    from .config import load_config
    from .train import train as run_training

    flags = [f"data.source={data}"]
    for key, value in (("train.epochs", epochs), ("train.batch_size", batch_size),
                       ("data.limit", limit), ("train.seed", seed)):
        if value is not None:
            flags.append(f"{key}={value}")
    cfg = _run(load_config, config, [*(overrides or []), *flags])
    if resume and out is None:
        _fail("--resume needs the run folder to continue: pass --out RUN_DIR")
    name = Path(config).stem if config else None
    _run(run_training, cfg, out, resume=resume, progress=sys.stderr.isatty(), run_name=name)


@app.command()
def evaluate(
    checkpoint: Annotated[Optional[Path], typer.Argument(help="checkpoint file or run folder")] = None,
    data: Annotated[str, typer.Option("--data", help="a cache or any raw source")] = "",
    split: Annotated[str, typer.Option(help="split to score (auto: PrivateTest, else PublicTest, else test)")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    out: Annotated[Optional[Path], typer.Option(help="folder for the report files (default: the checkpoint's)")] = None,
    tta: Annotated[Optional[str], typer.Option(help="test-time augmentation: none | flip | tencrop (default: as trained)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="skip bad rows/images in a raw source")] = False,
) -> None:
    """Accuracy, per-class precision/recall/F1, confusion matrix; saves JSON and a heatmap."""
    from .checkpoint import load_checkpoint
    from .data import load_dataset
    from .evaluate import evaluate as run_eval
    from .evaluate import format_report, write_report
    from .runtime import Runtime

    if checkpoint is None:
        _fail(NO_CHECKPOINT)
    if not data:
        _fail("--data is required: the cache or source holding the split to score")
    runtime = Runtime.create(device)
    loaded = _run(load_checkpoint, checkpoint, runtime.device)
    dataset, _ = _run(load_dataset, data, skip_bad=skip_bad)
    result = _run(run_eval, loaded, dataset, split, runtime=runtime, tta=tta)
    json_path, png = write_report(result, out or loaded.path.parent)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(f"model: {loaded.description}")
        typer.echo(format_report(result))
        typer.echo(f"saved {json_path} and {png}")


def _looks_like_checkpoint(path: str) -> bool:
    p = Path(path)
    return p.suffix in (".pt", ".pth") or (p.is_dir() and any((p / n).exists() for n in ("best.pt", "last.pt")))


@app.command()
def predict(
    inputs: Annotated[list[str], typer.Argument(help="[CHECKPOINT] IMAGE... (face crops)")],
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
) -> None:
    """Classify face crops of any size: top emotion and all class probabilities."""
    from .checkpoint import load_checkpoint
    from .predict import predict_crops
    from .preprocess import load_image
    from .runtime import Runtime

    if not inputs or not _looks_like_checkpoint(inputs[0]):
        _fail(NO_CHECKPOINT)
    checkpoint, paths = inputs[0], inputs[1:]
    if not paths:
        _fail("no images given")
    runtime = Runtime.create(device)
    loaded = _run(load_checkpoint, checkpoint, runtime.device)
    images, sources, failed = [], [], 0
    for path in paths:
        try:
            images.append(load_image(path))
            sources.append(path)
        except Exception as e:  # unreadable files are reported; the rest still run
            typer.echo(f"error: {path}: cannot read image ({e})", err=True)
            failed += 1
    results = predict_crops(loaded, images, sources, runtime)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results]))
    else:
        names = loaded.class_names
        typer.echo(f"{'image':<40}{'emotion':<10}" + "".join(f"{n[:8]:>9}" for n in names))
        for r in results:
            typer.echo(f"{r.source[-39:]:<40}{r.emotion:<10}"
                       + "".join(f"{r.probabilities[n]:>9.3f}" for n in names))
    if failed:
        raise typer.Exit(1)


@app.command()
def models(
    name: Annotated[Optional[str], typer.Argument(help="show this model's summary")] = None,
    overrides: Annotated[Optional[list[str]], typer.Argument(help="KEY=VALUE model arguments")] = None,
) -> None:
    """List registered models, or print one's layers, shapes, parameters and MFLOPs."""
    import yaml

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
        kwargs[key] = yaml.safe_load(value)
    model = _run(build_model, name, **kwargs)
    typer.echo(model_summary(model).table())


if __name__ == "__main__":
    app()
