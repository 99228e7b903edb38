"""Lightning's CSV log, continued on resume instead of deleted.

``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, so resuming a run in its own directory
lost every earlier epoch of the per-step log (and of ``training_progress.png``). :class:`ResumableCSVLogger`
keeps the file and appends; ``segvn.train`` first drops the rows written after the checkpoint it resumes
from (:func:`trim_csv_log`), so no step appears twice.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from segvn.utils.io import write_atomic


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # keep the file; start from its columns
        path = Path(self.metrics_file_path)
        if path.is_file() and path.stat().st_size:
            with path.open(newline="") as fh:
                self.metrics_keys = list(csv.DictReader(fh).fieldnames or [])


class ResumableCSVLogger(CSVLogger):
    """A ``CSVLogger`` that appends to an existing ``metrics.csv`` (see the module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def trim_csv_log(path: str | Path, global_step: int) -> int:
    """Drop the rows of a Lightning CSV log logged at or after ``global_step``; returns how many.

    Lightning logs a step's metrics with ``step`` = the number of optimizer steps before it, and the
    epoch-end metrics with the step of the epoch's last batch, so a checkpoint taken after ``G`` steps
    has logged exactly the rows with ``step < G``.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames or [], list(reader)
    keep = [r for r in rows if r.get("step", "") != "" and int(float(r["step"])) < global_step]
    if len(keep) != len(rows):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(keep)
        write_atomic(path, buf.getvalue())
    return len(rows) - len(keep)
