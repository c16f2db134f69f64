"""Tuning studies: the seed's one-at-a-time sweeps, grids and Optuna search, resumable and parallel.

    spec.py    what a study is: stages, points, the --param grammar, the seed-study preset
    engine.py  running it: storage, workers, heartbeats, retries (`run_sweep`)
    report.py  its results: table, curves, CSV/JSON, HTML (`write_report`)

The modules depend one way only: report -> engine -> spec.
"""

from .engine import run_sweep
from .report import write_report
from .spec import Stage, SweepError, SweepSpec, build_stages, parse_param, seed_study_stages

__all__ = ["Stage", "SweepError", "SweepSpec", "build_stages", "parse_param", "run_sweep",
           "seed_study_stages", "write_report"]
