"""Training-progress figure of a run: ``python -m segvn.progress run_dir=DIR [out=FILE]``.

Reads the run's CSV log (Lightning's ``csv/metrics.csv``, written with ``logger=csv`` or
``logger=wandb``; else ``epoch_metrics.csv``) and draws accuracy/IoU, losses and the learning rate
against the iteration (:func:`segvn.viz.plots.plot_training_progress`). Training draws the same
figure at the end of every run (:class:`segvn.callbacks.TrainingProgressPlot`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from segvn.utils import CONF_DIR, run_task
from segvn.viz.plots import plot_training_progress

log = logging.getLogger("segvn.progress")

PER_CLASS = re.compile(r"/(iou|acc|accuracy|bf_score)/")
"""Per-class metric columns (``val/iou/<class>``); left out of the figure unless asked for."""


def find_run_csv(run_dir: str | Path) -> Path:
    """The CSV log of a training run directory; ``FileNotFoundError`` naming what was looked for."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    candidates = [run_dir / "csv" / "metrics.csv", run_dir / "metrics.csv"]
    candidates += sorted((run_dir / "csv").glob("version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)[
        ::-1
    ]
    candidates.append(run_dir / "epoch_metrics.csv")
    for path in candidates:
        if path.is_file() and path.stat().st_size > 0:
            return path
    raise FileNotFoundError(
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
    return plot_training_progress(progress_frame(csv_path, per_class), out, title=title, smoothing=smoothing)


def progress(cfg: DictConfig) -> Path:
    if OmegaConf.is_missing(cfg, "run_dir"):
        raise FileNotFoundError("no run directory given: python -m segvn.progress run_dir=DIR")
    run_dir = Path(cfg.run_dir).expanduser().resolve()
    csv_path = find_run_csv(run_dir)
    out = Path(cfg.out).expanduser() if cfg.out else run_dir / "training_progress.png"
    try:
        path = draw_progress(
            csv_path, out, cfg.per_class, cfg.smoothing, cfg.title or f"Training progress ({run_dir.name})"
        )
    except ValueError as err:  # e.g. a log without any metric yet
        raise FileNotFoundError(f"{csv_path}: nothing to plot ({err})") from err
    log.info("%s -> %s", csv_path, path)
    return path


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="progress")
def main(cfg: DictConfig) -> None:
    run_task(progress, cfg)


if __name__ == "__main__":
    main()
