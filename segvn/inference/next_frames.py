"""The next frames to label: the model's most uncertain unlabelled frames of a street, spread over the video.

Frames of one video are close in time, and the frames a model hesitates on tend to come in runs (one
hard stretch of road), so taking the K most uncertain frames would spend the labels on near-copies.
The proposals are therefore picked greedily by falling uncertainty (1 - the mean top-1 minus top-2
probability margin, as ``segvn.labels prelabel`` ranks them), skipping a frame

- within ``min_gap`` frames (positions in the street's frame order) of a frame already proposed, or
- whose thumbnail (a small grey copy) is within ``min_distance`` (mean absolute grey difference, 0..1)
  of a proposed frame's or of an already labelled frame's: a near-duplicate adds no new pixels to learn.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from segvn.data.io import list_images
from segvn.errors import DataError
from segvn.inference.prelabel import frames_to_label, predict_frames
from segvn.utils.io import write_csv

log = logging.getLogger("segvn.labels")

THUMBNAIL = (16, 12)
"""Width, height of the grey thumbnails compared for near-duplicates."""
NEXT_CSV = "next_frames.csv"
NEXT_LIST = "next_frames.txt"


def thumbnail(path: Path) -> np.ndarray:
    """A small grey copy of the image in [0, 1]: cheap to compare, blind to noise and small shifts."""
    with Image.open(path) as image:
        grey = image.convert("L").resize(THUMBNAIL, Image.Resampling.BILINEAR)
    return np.asarray(grey, np.float32) / 255.0


def thumbnail_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails (0: the same picture, 1: black against white)."""
    return float(np.abs(a - b).mean())


def choose_next(
    stems: Sequence[str],
    uncertainty: dict[str, float],
    count: int,
    position: dict[str, int],
    thumbs: dict[str, np.ndarray],
    min_gap: int = 3,
    min_distance: float = 0.02,
    labelled: Sequence[np.ndarray] = (),
) -> list[str]:
    """Up to ``count`` of ``stems``, most uncertain first, no two within ``min_gap`` positions and none
    within ``min_distance`` of a proposed frame or of a ``labelled`` thumbnail (ties: earlier frame first)."""
    chosen: list[str] = []
    for stem in sorted(stems, key=lambda s: (-uncertainty[s], position[s])):
        if len(chosen) >= count:
            break
        if any(abs(position[stem] - position[c]) < max(min_gap, 1) for c in chosen):
            continue
        near = [thumbs[c] for c in chosen] + list(labelled)
        if min_distance > 0 and any(thumbnail_distance(thumbs[stem], t) < min_distance for t in near):
            continue
        chosen.append(stem)
    return chosen


def next_frames(
    ckpt_path: str | Path,
    street_dir: str | Path,
    count: int,
    out: str | Path,
    min_gap: int = 3,
    min_distance: float = 0.02,
    device: str = "auto",
    image_size: Sequence[int] | None = None,
    batch_size: int = 4,
    frames_dir: str = "frames",
) -> tuple[Path, list[str]]:
    """Propose the next ``count`` frames of the street to label; writes ``next_frames.csv`` (rank, frame,
    file, uncertainty, margin) and ``next_frames.txt`` (their files, one a line) into ``out``."""
    street = Path(street_dir).expanduser()
    frames = frames_to_label(street, frames_dir=frames_dir)
    if not frames:
        raise DataError(
            f"street={street}: every frame already has a label; extract more frames (segvn.extract) "
            "or give another street"
        )
    every = list_images(street / frames_dir)
    position = {p.stem: i for i, p in enumerate(every)}
    labelled_paths = [p for p in every if p.stem not in {f.stem for f in frames}]
    log.info("ranking %d unlabelled frame(s) of %s by the model's uncertainty", len(frames), street)
    _, margins = predict_frames(ckpt_path, frames, device, image_size, batch_size)
    uncertainty = {s: 1.0 - m for s, m in margins.items()}
    thumbs = {p.stem: thumbnail(p) for p in frames}
    labelled = [thumbnail(p) for p in labelled_paths] if min_distance > 0 else []
    stems = [p.stem for p in frames]
    chosen = choose_next(stems, uncertainty, count, position, thumbs, min_gap, min_distance, labelled)
    if len(chosen) < count:
        log.warning(
            "only %d of n=%d frame(s) are at least min_gap=%d frames apart and min_distance=%g from each "
            "other and the labelled frames; lower them to propose more",
            len(chosen),
            count,
            min_gap,
            min_distance,
        )
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    file_of = {p.stem: p for p in frames}
    rows = [
        [rank, s, str(file_of[s]), round(uncertainty[s], 6), round(margins[s], 6)]
        for rank, s in enumerate(chosen, 1)
    ]
    table = write_csv(out / NEXT_CSV, ["rank", "frame", "file", "uncertainty", "margin"], rows)
    (out / NEXT_LIST).write_text("".join(f"{file_of[s]}\n" for s in chosen))
    return table, chosen
