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
from segvn.models.checkpoint import checkpoint_config, load_checkpoint, model_from_checkpoint
from segvn.models.inference import Predictor

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
    input_size: Sequence[int] | None = None,
    batch_size: int = 4,
) -> dict[str, np.ndarray]:
    """Class-index maps (frame size) for each frame, by stem; batches group consecutive frames of one size."""
    ckpt = load_checkpoint(ckpt_path)
    module = model_from_checkpoint(ckpt, path=ckpt_path)
    if input_size is None:
        data_cfg = checkpoint_config(ckpt).get("data") or {}
        input_size = data_cfg.get("image_size")
    try:
        predictor = Predictor(module, device, input_size, None, len(module.class_names))
    except ValueError as err:
        raise ConfigError(f"{err} (prelabel settings)") from err
    out: dict[str, np.ndarray] = {}
    batch: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        if batch:
            labels = predictor([img for _, img in batch]).labels
            out.update({stem: lab for (stem, _), lab in zip(batch, labels, strict=True)})
            batch.clear()

    for path in frames:
        image = read_image(path)
        if batch and (len(batch) >= batch_size or batch[0][1].shape != image.shape):
            flush()
        batch.append((path.stem, image))
    flush()
    return out


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
    input_size: Sequence[int] | None = None,
    batch_size: int = 4,
    all_frames: bool = False,
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
    masks = predict_frames(ckpt_path, frames, device, input_size, batch_size)
    return write_prelabels(masks, fmt, Path(out).expanduser()), len(masks)
