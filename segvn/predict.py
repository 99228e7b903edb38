"""Segment videos and images with a checkpoint: ``python -m segvn.predict ckpt_path=PATH input=PATH``.

``input`` is a video, an image, or a folder of them; ``input=null`` (the default) predicts the data
module's prediction set (by default from the data config stored in the checkpoint). Writes into the run
directory one ``<video>_overlay.mp4`` per video, ``overlays/*.png`` for images, ``labels/`` with
``save_labels=true``, ``class_shares.csv``, ``summary.json`` and ``config.yaml``
(see :mod:`segvn.inference.video`). A video truncated part-way keeps its partial outputs, and the
command ends with one error line naming the file and frame.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from segvn.cli import Checkpoint, command
from segvn.errors import PartialResultError
from segvn.inference.options import check_predict
from segvn.inference.outputs import summary_line
from segvn.inference.session import setup_prediction
from segvn.inference.video import run_prediction
from segvn.utils import save_resolved_config
from segvn.utils.console import FpsColumn, progress_factory

log = logging.getLogger("segvn.predict")


def predict(cfg: DictConfig, ckpt: Checkpoint) -> dict:
    """Run the prediction described by ``cfg``; returns ``summary.json``'s content."""
    check_predict(cfg)
    out = Path(cfg.paths.output_dir)
    save_resolved_config(cfg, out / "config.yaml")
    session = setup_prediction(cfg, ckpt)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        FpsColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not cfg.progress) as progress:
        summary = run_prediction(
            session.predictor, out, session.class_names, cfg, session.videos, session.image_groups,
            progress_factory(progress), session.meta,
        )  # fmt: skip
    log.info("%s", summary_line(summary))
    if summary["errors"]:
        raise PartialResultError(
            "; ".join(summary["errors"])
            + f" -- the outputs up to there are kept in {out} (summary.json: status partial)"
        )
    return summary


main = command("predict", from_checkpoint=True, exports=True)(predict)

if __name__ == "__main__":
    main()
