"""Pseudo-label folders and unlabelled frame pools, as the data layer sees them.

A pseudo-label folder (written by ``python -m segvn.pseudolabel``) holds ``pseudolabels/<frame>.png``
(class indices, 255 = ignored) and the record ``pseudolabel.json`` of the teacher and settings that made
them; while it is being written it holds ``pseudolabel.started.json`` instead. Either file marks the folder
as machine-made, so it can never be taken for human labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segvn.data.io import list_images
from segvn.errors import DataError

RECORD_NAME = "pseudolabel.json"
"""The record of a finished pseudo-labelling run."""
STARTED_NAME = "pseudolabel.started.json"
"""The record of a pseudo-labelling run under way (or killed): the same fields, without the results."""


def is_pseudolabel_folder(path: str | Path) -> bool:
    """True for a folder written by ``segvn.pseudolabel`` (finished or not), or a folder inside one."""
    folder = Path(path).expanduser()
    return any((c / RECORD_NAME).is_file() or (c / STARTED_NAME).is_file() for c in (folder, folder.parent))


def pool_frames(
    folders: Sequence[str | Path], pattern: str = "*", max_frames: int | None = None
) -> list[Path]:
    """The unlabelled frames: the images in ``folders`` whose name matches ``pattern``, in name order.

    ``max_frames`` keeps that many spread evenly over the list (every k-th frame), not the first ones.
    """
    frames: list[Path] = []
    for folder in folders:
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise DataError(f"pool.folders: {folder} is not a folder of frames")
        frames += [p for p in list_images(path) if p.match(pattern)]
    stems = [p.stem for p in frames]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise DataError(f"pool: frame name(s) {', '.join(twice[:3])} appear in more than one folder")
    frames.sort(key=lambda p: p.stem)
    if max_frames is not None and 0 < max_frames < len(frames):
        picks = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
        frames = [frames[i] for i in sorted(set(picks.tolist()))]
    if not frames:
        raise DataError(
            f"pool: no frames matching {pattern!r} in {', '.join(map(str, folders)) or 'no folder'}; "
            "set pool.folders=[DIR,...] (and pool.pattern)"
        )
    return frames


__all__ = ["RECORD_NAME", "STARTED_NAME", "is_pseudolabel_folder", "pool_frames"]
