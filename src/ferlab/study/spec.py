"""What a study is: its stages and points, the `--param` grammar, and the seed study preset.

A study is a list of *stages*. Each stage is one Optuna study; a trial trains one
*point* (a set of dotted config overrides) once per seed. One-at-a-time (`oat`)
and `grid` stages know their points up front; `tpe` stages sample a space.

Depends on: errors, config; PyYAML. Nothing here touches Optuna or trains.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..core.config import Config, load_yaml, to_dict
from ..core.errors import UserError

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


class SweepError(UserError, ValueError):
    """A study or sweep that cannot run as specified; the message names the field."""


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
    # A close call: when a finished oat/grid stage's best points lie within `confirm_within`
    # (validation accuracy) of its leader, they are rerun with `confirm_seeds` seeds before
    # the stage chooses (0: never). One run's seed noise is about a point on FER2013.
    confirm_seeds: int = 0
    confirm_within: float = 0.01

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.study_dir / 'study.db').resolve()}"


def _numbers(texts: list[str]) -> bool:
    try:
        return all(isinstance(float(t), float) for t in texts)
    except ValueError:
        return False


def parse_param(text: str) -> tuple[str, Any]:
    """`model.kernel_size=2,3,4,5` or `=[2,3]` -> choices; `train.lr=1e-4:1e-2:log` -> range."""
    key, sep, value = text.partition("=")
    if not sep or "." not in key:
        raise SweepError(f"--param {text!r}: expected SECTION.KEY=VALUES, e.g. model.kernel_size=2,3,4,5")
    value = value.strip()
    parts = value.split(":")
    if ":" in value and "," not in value and not value.startswith("[") and _numbers(parts[:2]):
        # LOW:HIGH[:log]; anything else with a colon (cuda:0, cuda:0,cpu) is a list of choices
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
            raise SweepError(f"--param {text!r}: a range is LOW:HIGH or LOW:HIGH:log")
        low, high = (float(p) for p in parts[:2])
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise SweepError(f"--param {text!r}: range bounds must be finite numbers, LOW < HIGH")
        if all(p.strip().lstrip("-").isdigit() for p in parts[:2]):
            low, high = int(low), int(high)  # an integer range: suggest_int
        return key, (low, high, len(parts) == 3)
    try:
        parsed = load_yaml(value)
    except yaml.YAMLError as e:
        raise SweepError(f"--param {text!r}: cannot parse the values: {str(e).splitlines()[0]}") from e
    if isinstance(parsed, str):
        try:
            parsed = [load_yaml(v) for v in parsed.split(",")]
        except yaml.YAMLError as e:
            raise SweepError(f"--param {text!r}: cannot parse the values: {str(e).splitlines()[0]}") from e
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


def overrides(point: dict[str, Any]) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in point.items()]


def fit_filters(point: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """Filter sets in the seed study are given for 5 blocks; cut them to the chosen block count."""
    filters = point.get("model.filters_in_each_block")
    blocks = cfg.model.args.get("block_num")
    if filters is not None and "model.block_num" not in point and isinstance(blocks, int):
        point = {**point, "model.filters_in_each_block": list(filters)[:blocks]}
    return point


def describe(spec: SweepSpec) -> dict[str, Any]:
    return {
        "name": spec.name, "storage": spec.storage_url, "seeds": spec.seeds, "prune": spec.prune,
        "carry_forward": spec.carry_forward, "confirm_seeds": spec.confirm_seeds,
        "confirm_within": spec.confirm_within, "base": to_dict(spec.base),
        "stages": [{"name": s.name, "kind": s.kind, "points": [point_label(p) for p in s.points],
                    "space": [[k, list(v) if isinstance(v, tuple) else v] for k, v in s.space],
                    "n_trials": s.n_trials} for s in spec.stages],
    }


