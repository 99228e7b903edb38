"""Training curves of a run: ``python -m segvn.curves run_dir=DIR [out=FILE] [per_class=true]``.

Draws ``training_progress.png`` (MATLAB's training-progress view: accuracy/IoU, losses and learning
rate against the iteration) from the run's CSV log; see :mod:`segvn.viz.curves`. Training draws the
same figure at the end of every run (:class:`segvn.callbacks.TrainingProgressPlot`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from segvn.cli import command
from segvn.utils.schema import require
from segvn.viz.curves import draw_progress, find_run_csv

log = logging.getLogger("segvn.curves")


def curves(cfg: DictConfig) -> Path:
    require(cfg, "run_dir")
    run_dir = Path(cfg.run_dir).expanduser().resolve()
    csv_path = find_run_csv(run_dir)
    out = Path(cfg.out).expanduser() if cfg.out else run_dir / "training_progress.png"
    title = cfg.title or f"Training progress ({run_dir.name})"
    path = draw_progress(csv_path, out, cfg.per_class, cfg.smoothing, title)
    log.info("%s -> %s", csv_path, path)
    return path


main = command("curves")(curves)

if __name__ == "__main__":
    main()
