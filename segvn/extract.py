"""Extract frames from street videos: ``python -m segvn.extract input=VIDEO_OR_FOLDER street=NAME
(num_frames=400 | every_n=K | fps=F) out=DATA_ROOT [video.backend=decord|pyav]``.

Only composes the config and calls :func:`segvn.data.extract.extract_frames` (see there for the layout and
the manifest). Bad input ends with one logged error line and exit status 1, not a traceback.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from segvn.cli import command
from segvn.data.extract import ExtractSummary, extract_frames
from segvn.data.video import FrameSelection
from segvn.errors import ConfigError
from segvn.utils.schema import require

log = logging.getLogger("segvn.extract")


def run(cfg: DictConfig) -> ExtractSummary:
    """Extract as the config (:class:`~segvn.utils.command_configs.ExtractConfig`) says, with a rich
    progress bar per video."""
    require(cfg, "input", "street")
    try:
        selection = FrameSelection(num_frames=cfg.num_frames, every_n=cfg.every_n, fps=cfg.fps)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        tasks: dict[str, int] = {}

        def progress(video: str, done: int, total: int) -> None:
            if video not in tasks:
                tasks[video] = bar.add_task(video, total=total)
            bar.update(tasks[video], completed=done)

        return extract_frames(
            cfg.input,
            cfg.street,
            cfg.out,
            selection,
            backend=str(cfg.video.backend),
            image_format=str(cfg.image_format),
            threads=cfg.video.threads,
            progress=progress,
            on_error=str(cfg.on_error),
        )


def extract(cfg: DictConfig) -> ExtractSummary:
    summary = run(cfg)
    log.info("%s", summary.line())
    return summary


main = command("extract")(extract)

if __name__ == "__main__":
    main()
