"""Cityscapes ``*_gtFine_labelIds.png``: single-channel maps of the 34 Cityscapes label ids.

Ids are turned into Cityscapes label names and then matched like any tool's names, so the default gives
road 7, sidewalk 8, building 11, fence 13, vegetation 21, sky 23, person 24, car 26 and leaves the rest
unlabelled. ``rider`` (25) is unlabelled by default, as CamVid's Bicyclist is in ``data=camvid``;
``mapping={rider: person}`` keeps it as a person.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segvn.data.classes import CLASS_NAMES, IGNORE_INDEX
from segvn.data.labelformats.common import (
    ClassMatcher,
    ImportReport,
    LabelItem,
    in_export,
    index_values,
    save_png,
)
from segvn.errors import DataError

SUFFIX = "_gtFine_labelIds"
FRAME_SUFFIX = "_leftImg8bit"

CITYSCAPES_NAMES: tuple[str, ...] = (
    "unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic", "ground",
    "road", "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge",
    "tunnel", "pole", "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky",
    "person", "rider", "car", "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle",
)  # fmt: skip
"""Cityscapes label names by id (0..33), from the official ``labels.py``."""
VOID_ID = 255
"""The usual "license plate"/void value: unlabelled, not reported. Any other id outside 0..33 (e.g.
263 in a 16-bit file) is counted as out of range."""


def id_lut(matcher: ClassMatcher) -> tuple[np.ndarray, dict[int, str]]:
    """256-entry table Cityscapes id -> our index, and the ids whose names are unknown to us."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    unknown: dict[int, str] = {}
    for cid, name in enumerate(CITYSCAPES_NAMES):
        index = matcher.index(name)
        if index is None:
            unknown[cid] = name
        else:
            lut[cid] = index
    return lut, unknown


def frame_stem(path: Path) -> str:
    """``aachen_000000_000019_gtFine_labelIds.png`` -> ``aachen_000000_000019``."""
    stem = path.stem
    return stem[: -len(SUFFIX)] if stem.endswith(SUFFIX) else stem


def read_cityscapes(root: Path, matcher: ClassMatcher, report: ImportReport) -> list[LabelItem]:
    """The ``*_gtFine_labelIds.png`` files under ``root`` (any depth), decoded lazily."""
    files = sorted(root.rglob(f"*{SUFFIX}.png"))
    if not files:
        raise DataError(
            f"{report.src}: no *{SUFFIX}.png files; give the gtFine folder of a Cityscapes export"
        )
    lut, unknown = id_lut(matcher)

    known = np.zeros(256, dtype=bool)
    known[: len(CITYSCAPES_NAMES)] = True
    known[VOID_ID] = True

    def loader(path: Path, source: str):
        def load() -> np.ndarray:
            ids = index_values(path, known, report, source)
            counts = np.bincount(ids[ids >= 0].ravel(), minlength=256)
            for cid, name in unknown.items():
                if counts[cid]:
                    report.unknown(name, int(counts[cid]))
            return np.where(ids >= 0, lut[np.maximum(ids, 0)], IGNORE_INDEX).astype(np.uint8)

        return load

    return [
        LabelItem(
            stem=frame_stem(p), source=str(p.relative_to(root)), load=loader(p, str(p.relative_to(root)))
        )
        for p in in_export(files, root, report)
    ]


def export_ids() -> np.ndarray:
    """256-entry table our index -> Cityscapes id (unlabelled -> 0 ``unlabeled``)."""
    lut = np.zeros(256, dtype=np.uint8)
    for i, name in enumerate(CLASS_NAMES):
        lut[i] = CITYSCAPES_NAMES.index(name)
    return lut


def write_cityscapes(masks: dict[str, np.ndarray], out: Path) -> Path:
    """Write class-index masks as ``out/<stem>_gtFine_labelIds.png``."""
    lut = export_ids()
    for stem, index in sorted(masks.items()):
        save_png(out / f"{stem}{SUFFIX}.png", lut[index])
    return out
