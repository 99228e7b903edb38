"""Pre-labelling: a checkpoint's predictions for a street's frames, written for a labelling tool.

Annotators then correct the model's masks instead of painting from scratch, and
``segvn.labels import`` brings the corrected masks back. Frames that already have a label are skipped
unless ``all_frames`` is set. Formats: ``cvat`` (a "Segmentation mask 1.1" zip to upload as annotations),
``labelstudio`` (brush PNGs + ``tasks.json``) and ``palette`` (RGB masks in our palette, named like the
frames, the layout of ``labels/``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segvn.data.io import list_images, read_image
from segvn.data.labelformats.common import write_mask
from segvn.data.labelformats.cvat import write_cvat
from segvn.data.labelformats.labelstudio import write_labelstudio
from segvn.errors import ConfigError, DataError
from segvn.inference.predictor import Predictor
from segvn.models.checkpoint import Checkpoint
from segvn.utils.io import write_csv

log = logging.getLogger("segvn.labels")

PRELABEL_FORMATS = ("cvat", "labelstudio", "palette")


def frames_to_label(street_dir: Path, all_frames: bool = False, frames_dir: str = "frames") -> list[Path]:
    """The street's frames that have no label yet (all of them with ``all_frames``)."""
    folder = street_dir / frames_dir
    if not folder.is_dir():
        raise DataError(f"{folder}: no extracted frames; run segvn.extract first or check street=")
    labelled = (
        {p.stem for p in list_images(street_dir / "labels")} if (street_dir / "labels").is_dir() else set()
    )
    return [p for p in list_images(folder) if all_frames or p.stem not in labelled]


def predict_frames(
    ckpt_path: str | Path,
    frames: Sequence[Path],
    device: str = "auto",
    image_size: Sequence[int] | None = None,
    batch_size: int = 4,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Class-index maps (frame size) and margins (see :class:`BatchPrediction`) for each frame, by stem; batches group consecutive frames of one size."""
    ckpt = Checkpoint.read(ckpt_path)
    module = ckpt.model()
    if image_size is None:
        image_size = (ckpt.config.get("data") or {}).get("image_size")
    predictor = Predictor(module, device, image_size, None, len(module.class_names), uncertainty=True)
    out: dict[str, np.ndarray] = {}
    margins: dict[str, float] = {}
    batch: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        if batch:
            pred = predictor([img for _, img in batch])
            out.update({stem: lab for (stem, _), lab in zip(batch, pred.labels, strict=True)})
            margins.update({stem: float(m) for (stem, _), m in zip(batch, pred.margin, strict=True)})
            batch.clear()

    for path in frames:
        image = read_image(path)
        if batch and (len(batch) >= batch_size or batch[0][1].shape != image.shape):
            flush()
        batch.append((path.stem, image))
    flush()
    return out, margins


def label_first(stems: Sequence[str], margins: dict[str, float], count: int) -> list[str]:
    """Up to ``count`` frames to label first: the most uncertain (lowest margin), spread over the video.

    Greedy: frames in order of rising margin, skipping any within ``len(stems) // (2 * count)`` positions
    of one already chosen, so a hesitant stretch of road does not fill the whole list.
    """
    position = {s: i for i, s in enumerate(stems)}
    gap = len(stems) // (2 * max(count, 1))
    chosen: list[str] = []
    for stem in sorted(stems, key=lambda s: (margins[s], position[s])):
        if len(chosen) >= count:
            break
        if all(abs(position[stem] - position[c]) > gap for c in chosen):
            chosen.append(stem)
    return chosen


def write_uncertainty(stems: Sequence[str], margins: dict[str, float], out: Path, count: int) -> Path:
    """``uncertainty.csv``: every frame in order with its margin, uncertainty (1 - margin) and label-first rank."""
    rank = {s: i + 1 for i, s in enumerate(label_first(stems, margins, count))}
    rows = [[s, round(margins[s], 6), round(1.0 - margins[s], 6), rank.get(s, "")] for s in stems]
    return write_csv(out, ["frame", "margin", "uncertainty", "label_first_rank"], rows)


def write_prelabels(masks: dict[str, np.ndarray], fmt: str, out: Path) -> Path:
    """Write predicted masks in ``fmt``; returns the file or folder written."""
    if fmt == "cvat":
        return write_cvat(masks, out if out.suffix == ".zip" else out / "prelabels_cvat.zip")
    if fmt == "labelstudio":
        return write_labelstudio(masks, out)
    if fmt == "palette":
        for stem, index in masks.items():
            write_mask(out / f"{stem}.png", index)
        return out
    raise ConfigError(f"format={fmt!r}: prelabel writes one of {', '.join(PRELABEL_FORMATS)}")


def prelabel(
    ckpt_path: str | Path,
    street_dir: str | Path,
    fmt: str,
    out: str | Path,
    device: str = "auto",
    image_size: Sequence[int] | None = None,
    batch_size: int = 4,
    all_frames: bool = False,
    label_first_count: int = 20,
) -> tuple[Path, int]:
    """Predict the street's unlabelled frames and write them for a tool; returns (output, frame count)."""
    if fmt not in PRELABEL_FORMATS:
        raise ConfigError(f"format={fmt!r}: prelabel writes one of {', '.join(PRELABEL_FORMATS)}")
    frames = frames_to_label(Path(street_dir).expanduser(), all_frames)
    if not frames:
        raise DataError(
            f"{street_dir}: every frame already has a label; set all_frames=true to pre-label them anyway"
        )
    log.info("pre-labelling %d frame(s) of %s", len(frames), street_dir)
    masks, margins = predict_frames(ckpt_path, frames, device, image_size, batch_size)
    out = Path(out).expanduser()
    written = write_prelabels(masks, fmt, out)
    table = (out.parent if out.suffix == ".zip" else out) / "uncertainty.csv"
    write_uncertainty([p.stem for p in frames], margins, table, label_first_count)
    log.info("per-frame uncertainty and the frames to label first: %s", table)
    return written, len(masks)
