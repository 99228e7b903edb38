"""``training_progress.png``: MATLAB's training-progress view of a run, drawn from its CSV log."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from segvn.errors import InputNotFoundError
from segvn.viz.curves import draw_progress, find_run_csv

log = logging.getLogger(__name__)


def find_csv_log(trainer: L.Trainer, run_dir: str | Path) -> Path | None:
    """The run's CSV log (:func:`segvn.viz.curves.find_run_csv`), after flushing Lightning's CSV loggers."""
    from lightning.pytorch.loggers import CSVLogger

    for lg in trainer.loggers:
        if isinstance(lg, CSVLogger):
            lg.save()  # flush what is buffered (a no-op after the logger was finalised)
    try:
        return find_run_csv(run_dir)
    except InputNotFoundError:
        return None


class TrainingProgressPlot(Callback):
    """Draws ``training_progress.png`` (:func:`segvn.viz.curves.draw_progress`) when fitting ends.

    Reads the run's CSV log (``logger=csv`` or ``logger=wandb``, which includes it; without one, the
    ``EpochMetricsCSV`` file); per-class IoU curves only with ``per_class=true``. Also drawn when a
    run stops on an exception (e.g. Ctrl+C), and with ``every_epoch=true`` after every validation,
    to watch a long run. Never fails the run: a plotting problem is logged as a warning.
    """

    def __init__(
        self, path: str | Path, every_epoch: bool = False, per_class: bool = False, smoothing: float = 0.6
    ) -> None:
        self.path = Path(path)
        self.every_epoch = every_epoch
        self.per_class = per_class
        self.smoothing = smoothing

    def plot(self, trainer: L.Trainer) -> Path | None:
        if not trainer.is_global_zero:
            return None
        try:
            csv_path = find_csv_log(trainer, self.path.parent)
            if csv_path is None:
                log.info("no CSV log (logger=none?): no training_progress.png")
                return None
            return draw_progress(csv_path, self.path, self.per_class, self.smoothing)
        except Exception as err:  # plotting must never fail a training run
            log.warning("could not draw %s: %s: %s", self.path, type(err).__name__, err)
            return None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_epoch and not trainer.sanity_checking:
            self.plot(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.plot(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.plot(trainer)


# ------------------------------------------------------------------------------------- W&B media
