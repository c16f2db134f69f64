"""Run configuration: frozen dataclasses, loaded from YAML, overridden by `section.key=value`.

A config has four sections - `data`, `model`, `augment`, `train` - and every run
saves its resolved config as `config.yaml` beside its results, so any figure can
be reproduced from its run folder. The `model` section is `name` plus that
model's own keyword arguments (checked against the registry when the model is
built), so new architectures need no change here.

Depends on: errors, files; PyYAML.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .files import atomic_write_text

CONFIG_DIR = Path(__file__).parents[1] / "configs"


from .errors import ConfigError  # noqa: E402  (defined where the light path can raise it)


@dataclass(frozen=True)
class DataConfig:
    source: str | None = None  # any source `load_dataset` reads, or a prepared .npz
    train_split: str = "Training"
    val_split: str = "auto"  # auto: PublicTest, else test / val / valid
    limit: int | None = None  # stratified random subset of the training split (fixed by seed)
    skip_bad: bool = False
    classes: str = "fer2013"  # image folders: fer2013 | folders (your own) | "name1,name2,..."
    holdout: float = 0.15  # share of the training split held out when there is no validation split
    # FER+ crowd votes -> training targets: majority | probability | crossentropy | multi_target
    # (see data/votes.py). Validation and evaluation always use the majority labels.
    labels: str = "majority"


@dataclass(frozen=True)
class ModelConfig:
    name: str = "seed_cnn"
    args: dict[str, Any] = field(default_factory=dict)  # the builder's keyword arguments


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 512
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    scheduler: str = "none"  # none | onecycle | cosine
    warmup_fraction: float = 0.2  # onecycle: share of steps spent rising to the peak
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | cuda:1 | mps
    precision: str = "auto"  # auto (bf16 where the device has it) | fp32 | bf16 | fp16
    channels_last: bool = True
    compile: bool = False  # torch.compile the model (CUDA; slow to start on CPU)
    tta: str = "none"  # test-time augmentation for validation: none | flip | tencrop
    # The last N epochs validate with `late_tta` instead (ten-crop costs ~10x a plain pass,
    # so spend it only where a one-cycle run's best epochs are).
    late_tta: str = "none"
    late_tta_epochs: int = 0
    eval_batch_size: int = 1024
    budget_minutes: float | None = None  # fit the epoch count to this wall-clock budget
    teacher: str | None = None  # distil from this checkpoint ("bundled": the shipped model)
    distill_weight: float = 0.9  # share of the loss on the teacher's soft targets
    distill_temperature: float = 4.0
    init: str | None = None  # start from this checkpoint ("bundled": the shipped model)
    finetune: str = "all"  # with init: all | head (only the classifier) | N (head + last N stages)
    # A frozen transfer base's features computed once, only the head trains, wherever that
    # applies (training/features.py); false: the base runs every epoch
    feature_cache: bool = True
    # Transfer models: the base's stages learn at lr x layer_decay^depth (1 = one rate for all)
    layer_decay: float = 1.0


# The batched ops that read it are in training/augment.py (torch); the section itself is
# plain data, so reading a config never imports torch.
@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = False
    rotation: float = 20.0  # degrees, uniform in [-rotation, rotation]
    zoom: float = 0.1  # scale factor in [1 - zoom, 1 + zoom], x and y drawn apart (as Keras)
    width_shift: float = 0.1  # fraction of the width
    height_shift: float = 0.1  # fraction of the height
    shear: float = 0.1  # degrees, as in Keras (the seed's 0.1 is therefore tiny)
    horizontal_flip: bool = True
    fill: str = "nearest"  # nearest (edge pixels, Keras' default) | constant (zeros = mean grey)
    random_erasing: float = 0.0  # probability per image of erasing one rectangle
    erasing_area: tuple[float, float] = (0.02, 0.25)  # fraction of the image erased
    # Random resized crop: the kept area is a fraction in [crop_area, 1] (1 = off), with
    # aspect ratio in [3/4, 4/3], placed anywhere inside the image.
    crop_area: float = 1.0
    # Photometric degradations, all off at 0; magnitudes are drawn per image.
    brightness: float = 0.0  # add a shift in [-b, b] of the full pixel range
    contrast: float = 0.0  # scale around the image's mean by a factor in [1 - c, 1 + c]
    gamma: float = 0.0  # pixel ** exp(u), u in [-g, g]
    blur: float = 0.0  # probability of a Gaussian blur, sigma in [0.3, blur_sigma] px
    blur_sigma: float = 1.5
    noise: float = 0.0  # Gaussian noise, std in [0, noise] of the pixel range
    jpeg: float = 0.0  # probability of JPEG-like 8x8 DCT quantisation, quality in jpeg_quality
    jpeg_quality: tuple[int, int] = (15, 75)
    low_resolution: float = 0.0  # probability of downscaling to low_resolution_px and back
    low_resolution_px: tuple[int, int] = (12, 32)



@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = {"data": DataConfig, "augment": AugmentConfig, "train": TrainConfig}


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain dict for YAML/checkpoints; the model section is flattened to name + args."""
    out: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        section = getattr(cfg, name)
        out[name] = {f.name: _plain(getattr(section, f.name)) for f in dataclasses.fields(cls)}
    out["model"] = {"name": cfg.model.name, **{k: _plain(v) for k, v in cfg.model.args.items()}}
    return {k: out[k] for k in ("data", "model", "augment", "train")}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def from_dict(d: dict[str, Any], where: str = "config") -> Config:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping with sections data, model, augment, train")
    unknown = set(d) - {"data", "model", "augment", "train"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown section {', '.join(sorted(unknown))} "
            "(sections: data, model, augment, train)"
        )
    kwargs: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        values = d.get(name) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: section {name!r} must be a mapping")
        kwargs[name] = _build_section(cls, values, f"{where}: {name}")
    model = dict(d.get("model") or {})
    name = model.pop("name", "seed_cnn")
    kwargs["model"] = ModelConfig(str(name), {k: _plain(v) for k, v in model.items()})
    return Config(**kwargs)


def _build_section(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{where}.{key}: unknown field (fields: {', '.join(sorted(names))})")
        out[key] = _coerce(value, hints[key], f"{where}.{key}")
    return cls(**out)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a YAML value against a field's type; ints are accepted for floats."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def resolve_config_path(name: str | Path) -> Path:
    """A config file path, or the name of a bundled config such as 'seed-final'."""
    path = Path(name)
    if path.exists():
        return path
    bundled = CONFIG_DIR / f"{Path(name).stem}.yaml"
    if bundled.exists() and path.parent == Path("."):
        return bundled
    available = ", ".join(p.stem for p in sorted(CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"{name}: no such config file (bundled configs: {available})")


MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; anything near this is not one


class _PlainLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases: a config never needs them, and a few hundred
    bytes of nested anchors and aliases stand for gigabytes once anything walks the result
    ("billion laughs"). Anchors alone are harmless and stay allowed."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"YAML aliases (*name) are not accepted, line {mark.line + 1}")
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """YAML text -> plain Python values, bounded: no aliases, at most MAX_CONFIG_BYTES.
    Raises yaml.YAMLError, as yaml.safe_load does, for anything refused."""
    if len(text) > MAX_CONFIG_BYTES:
        raise yaml.YAMLError(f"{len(text):,} characters, more than a config's limit of {MAX_CONFIG_BYTES:,}")
    return yaml.load(text, Loader=_PlainLoader)  # noqa: S506 (a SafeLoader subclass)


def load_config(path: str | Path | None = None,
                overrides: Sequence[str | tuple[str, Any]] | None = None) -> Config:
    d: dict[str, Any] = {}
    where = "config"
    if path is not None:
        file = resolve_config_path(path)
        where = str(file)
        if file.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{file}: {file.stat().st_size:,} bytes, more than a config's limit of "
                              f"{MAX_CONFIG_BYTES:,}")
        try:
            d = load_yaml(file.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{file}: not valid YAML: {e}") from e
    cfg = from_dict(d, where)
    return apply_overrides(cfg, overrides or [])


def apply_overrides(cfg: Config, overrides: Sequence[str | tuple[str, Any]]) -> Config:
    """Apply `section.key=value` strings, whose values are parsed as YAML (`[64,128]`, `true`,
    `1e-3`), and `(section.key, value)` pairs, whose values are taken as they are: the CLI's
    own options (`--data "exp #1/faces.npz"` is that path, `--data 010` is "010", not 8)."""
    d = to_dict(cfg)
    for item in overrides:
        literal = isinstance(item, tuple)
        key, sep, text = (item[0], "=", item[1]) if literal else item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"override {item!r}: expected SECTION.KEY=VALUE, e.g. train.epochs=3")
        section, name = parts
        if section not in d:
            raise ConfigError(
                f"override {item!r}: unknown section {section!r} (data, model, augment, train)"
            )
        try:
            value = text if literal else load_yaml(text) if text.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: cannot parse value: {e}") from e
        if section != "model" and name not in d[section]:
            raise ConfigError(
                f"override {item!r}: {section} has no field {name!r} "
                f"(fields: {', '.join(sorted(d[section]))})"
            )
        d[section][name] = value
        if section == "model" and name == "name" and value != cfg.model.name:
            # Another architecture takes other arguments: start from its defaults.
            d["model"] = {"name": value}
    return from_dict(d, "overrides")


def replace(cfg: Config, section: str, **changes: Any) -> Config:
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **changes)})


def replace_model(cfg: Config, model: ModelConfig) -> Config:
    return dataclasses.replace(cfg, model=model)


def save_config(cfg: Config, path: str | Path) -> None:
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


# Ranges checked when a run starts, before any data is read: (dotted field, test, allowed).
RANGES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("train.epochs", lambda v: v >= 1, "at least 1"),
    ("train.layer_decay", lambda v: _finite(v) and 0 < v <= 1, "in (0, 1]"),
    ("train.batch_size", lambda v: v >= 1, "at least 1"),
    ("train.eval_batch_size", lambda v: v >= 1, "at least 1"),
    ("train.lr", lambda v: _finite(v) and v > 0, "a positive number"),
    ("train.weight_decay", lambda v: _finite(v) and v >= 0, "a number >= 0"),
    ("train.momentum", lambda v: _finite(v) and 0 <= v < 1, "in [0, 1)"),
    ("train.warmup_fraction", lambda v: _finite(v) and 0 < v < 1, "in (0, 1)"),
    ("train.label_smoothing", lambda v: _finite(v) and 0 <= v < 1, "in [0, 1)"),
    ("train.budget_minutes", lambda v: v is None or (_finite(v) and v > 0), "a positive number of minutes"),
    ("data.limit", lambda v: v is None or v >= 1, "at least 1"),
    ("data.holdout", lambda v: _finite(v) and 0 < v < 1, "in (0, 1)"),
    ("data.labels", lambda v: v in ("majority", "probability", "crossentropy", "multi_target"),
     "one of majority, probability, crossentropy, multi_target"),
    ("augment.rotation", lambda v: _finite(v) and 0 <= v <= 180, "0 to 180 degrees"),
    ("augment.zoom", lambda v: _finite(v) and 0 <= v < 1, "in [0, 1)"),
    ("augment.width_shift", lambda v: _finite(v) and 0 <= v <= 1, "in [0, 1]"),
    ("augment.height_shift", lambda v: _finite(v) and 0 <= v <= 1, "in [0, 1]"),
    ("augment.shear", lambda v: _finite(v) and 0 <= v < 90, "0 to 90 degrees"),
    ("augment.random_erasing", lambda v: _finite(v) and 0 <= v <= 1, "a probability in [0, 1]"),
    ("augment.crop_area", lambda v: _finite(v) and 0 < v <= 1, "a fraction of the area in (0, 1]"),
    ("augment.brightness", lambda v: _finite(v) and 0 <= v <= 1, "in [0, 1]"),
    ("augment.contrast", lambda v: _finite(v) and 0 <= v < 1, "in [0, 1)"),
    ("augment.gamma", lambda v: _finite(v) and 0 <= v <= 2, "in [0, 2]"),
    ("augment.blur", lambda v: _finite(v) and 0 <= v <= 1, "a probability in [0, 1]"),
    ("augment.blur_sigma", lambda v: _finite(v) and 0.3 <= v <= 2, "0.3 to 2 pixels"),
    ("augment.noise", lambda v: _finite(v) and 0 <= v <= 0.5, "in [0, 0.5]"),
    ("augment.jpeg", lambda v: _finite(v) and 0 <= v <= 1, "a probability in [0, 1]"),
    ("augment.jpeg_quality", lambda v: len(v) == 2 and 1 <= v[0] <= v[1] <= 100,
     "two qualities 1 <= low <= high <= 100"),
    ("augment.low_resolution", lambda v: _finite(v) and 0 <= v <= 1, "a probability in [0, 1]"),
    ("augment.low_resolution_px", lambda v: len(v) == 2 and 4 <= v[0] <= v[1] <= 48,
     "two sides 4 <= low <= high <= 48"),
)


def check_ranges(cfg: Config) -> None:
    """Refuse out-of-range and contradictory settings, naming the field and what it allows."""
    for name, ok, allowed in RANGES:
        section, key = name.split(".")
        value = getattr(getattr(cfg, section), key)
        if not ok(value):
            raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    if cfg.data.val_split == cfg.data.train_split:
        raise ConfigError(f"data.val_split and data.train_split are both {cfg.data.train_split!r}: "
                          "validating on the training images would choose the best epoch blind")
