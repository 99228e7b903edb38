"""Training curves of a run from its CSV log: finding the log and drawing MATLAB's training-progress view.

Reads Lightning's ``csv/metrics.csv`` (written with ``logger=csv`` or ``logger=wandb``), else
``epoch_metrics.csv``, and draws accuracy/IoU, losses and the learning rate against the iteration
(:func:`segvn.viz.plots.plot_training_progress`). Used by ``python -m segvn.curves`` and by the
:class:`~segvn.callbacks.TrainingProgressPlot` callback at the end of every training run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from segvn.errors import DataError, InputNotFoundError
from segvn.viz.plots import plot_training_progress

PER_CLASS = re.compile(r"/(iou|acc|accuracy|bf_score)/")


def find_run_csv(run_dir: str | Path) -> Path:
    """The CSV log of a training run directory; ``FileNotFoundError`` naming what was looked for."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise InputNotFoundError(f"run directory {run_dir} does not exist")
    candidates = [run_dir / "csv" / "metrics.csv", run_dir / "metrics.csv"]
    candidates += sorted((run_dir / "csv").glob("version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)[
        ::-1
    ]
    candidates.append(run_dir / "epoch_metrics.csv")
    for path in candidates:
        if path.is_file() and path.stat().st_size > 0:
            return path
    raise InputNotFoundError(
        f"{run_dir} has no CSV log: looked for csv/metrics.csv, csv/version_*/metrics.csv and "
        "epoch_metrics.csv. Runs with logger=csv or logger=wandb (the default) write csv/metrics.csv; "
        "is this a segvn.train run directory?"
    )


def progress_frame(csv_path: str | Path, per_class: bool = False) -> pd.DataFrame:
    """The log as a DataFrame, without per-class columns unless ``per_class``."""
    df = pd.read_csv(csv_path)
    if not per_class:
        df = df[[c for c in df.columns if not PER_CLASS.search(str(c))]]
    return df


def draw_progress(
    csv_path: str | Path,
    out: str | Path,
    per_class: bool = False,
    smoothing: float = 0.6,
    title: str = "Training progress",
) -> Path:
    """:func:`plot_training_progress` of a CSV log (per-class curves left out unless asked for)."""

    try:
        return plot_training_progress(
            progress_frame(csv_path, per_class), out, title=title, smoothing=smoothing
        )
    except ValueError as err:  # e.g. a log without any metric yet
        raise DataError(f"{csv_path}: nothing to plot ({err})") from err
