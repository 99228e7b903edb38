"""Pseudo-label folders and unlabelled frame pools, as the data layer sees them.

A pseudo-label folder (written by ``python -m segvn.pseudolabel``) holds ``pseudolabels/<frame>.png``
(class indices, 255 = ignored) and the record ``pseudolabel.json`` of the teacher and settings that made
them; while it is being written it holds ``pseudolabel.started.json`` instead. Either file marks the folder
as machine-made, so it can never be taken for human labels.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from segvn.data.io import list_images, read_image
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


def read_record(folder: str | Path) -> dict:
    """The record of a finished pseudo-label folder; :class:`DataError` naming it when there is none."""
    path = Path(folder).expanduser()
    record = path / RECORD_NAME
    if not record.is_file():
        if (path / STARTED_NAME).is_file():
            raise DataError(
                f"data.pseudo.dir={folder}: a half-written pseudo-label run (killed?); run the same "
                "segvn.pseudolabel command again to finish it"
            )
        raise DataError(
            f"data.pseudo.dir={folder}: no {RECORD_NAME}; give a folder written by segvn.pseudolabel"
        )
    return json.loads(record.read_text())


def frame_hash(path: Path) -> str:
    """A hash of a frame's pixels: the same frame saved twice (or under another name) hashes the same."""
    rgb = read_image(path)
    return hashlib.blake2b(rgb.tobytes() + str(rgb.shape).encode(), digest_size=16).hexdigest()


def shared_frames(pool: Sequence[Path], evaluated: Sequence[Path]) -> list[str]:
    """The pool frames that are also evaluation frames, by path or by pixels."""
    resolved = {p.resolve() for p in evaluated}
    same_path = [p for p in pool if p.resolve() in resolved]
    rest = [p for p in pool if p.resolve() not in resolved]
    if not rest or not evaluated:
        return sorted(p.name for p in same_path)
    hashes = {frame_hash(p) for p in evaluated}
    return sorted(p.name for p in same_path + [p for p in rest if frame_hash(p) in hashes])


class PseudoLabelDataset(Dataset):
    """The frames of a pseudo-label folder with their pseudo-labels (255 = ignored), as training items.

    Items are those of :class:`~segvn.data.dataset.SegmentationDataset` plus ``weight``, the loss weight
    of their pixels, and ``class_weighted``: whether the model's class weights also apply to them. Off by
    default: the teacher's mistakes fall mostly on the rare classes, which the class weights multiply
    (docs/notes/selftraining.md); the per-class thresholds of ``segvn.pseudolabel`` already keep the rare
    classes. ``street`` is ``"pseudo"``.
    """

    def __init__(
        self, folder: str | Path, transform: A.Compose, weight: float = 1.0, class_weighted: bool = False
    ) -> None:
        self.folder = Path(folder).expanduser()
        self.record = read_record(self.folder)
        self.frames = [
            (Path(path), self.folder / "pseudolabels" / f"{stem}.png")
            for stem, path in self.record["frames"].items()
        ]
        missing = [str(label) for image, label in self.frames if not label.is_file() or not image.is_file()]
        if missing:
            raise DataError(
                f"data.pseudo.dir={folder}: {len(missing)} frame(s) or pseudo-labels missing, e.g. {missing[0]}"
            )
        self.transform = transform
        self.weight = float(weight)
        self.class_weighted = bool(class_weighted)

    @property
    def class_names(self) -> list[str]:
        return list(self.record["class_names"])

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict:
        image_path, label_path = self.frames[index]
        image = read_image(image_path)
        with Image.open(label_path) as img:
            label = np.asarray(img)
        out = self.transform(image=image, mask=label)
        return {
            "image": out["image"],
            "mask": torch.as_tensor(out["mask"], dtype=torch.long),
            "path": str(image_path),
            "street": "pseudo",
            "weight": self.weight,
            "class_weighted": self.class_weighted,
        }


class Weighted(Dataset):
    """A dataset whose items carry a loss ``weight`` (1.0 for human labels beside pseudo-labels) and are
    class-weighted."""

    def __init__(self, dataset: Dataset, weight: float = 1.0) -> None:
        self.dataset = dataset
        self.weight = float(weight)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], "weight": self.weight, "class_weighted": True}


__all__ = [
    "RECORD_NAME",
    "STARTED_NAME",
    "PseudoLabelDataset",
    "Weighted",
    "is_pseudolabel_folder",
    "pool_frames",
    "read_record",
    "shared_frames",
]
