"""MATLAB Image Labeler / ``pixelLabelDatastore`` index PNGs: value k (1..N) is the k-th class, 0 undefined.

The class list comes from ``classes=[...]`` (the label definitions' order in the Image Labeler), or a
``classes.txt`` (one name per line) in the export, or else our own ``CLASS_NAMES``. Mask files are
matched to frames by stem, so export them named after their frames (``<frame stem>.png``).
"""

from __future__ import annotations

from collections.abc import Sequence
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
from segvn.utils.io import write_atomic

CLASSES_FILE = "classes.txt"


def class_list(root: Path, classes: Sequence[str] | None, report: ImportReport | None = None) -> list[str]:
    """The export's class names in value order (value 1 = first); a ``classes.txt`` linking out is skipped."""
    if classes:
        return [str(c) for c in classes]
    listed = root / CLASSES_FILE
    if listed.is_file() and (report is None or in_export([listed], root, report)):
        names = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
        if names:
            return names
    return list(CLASS_NAMES)


def read_matlab(
    root: Path, matcher: ClassMatcher, report: ImportReport, classes: Sequence[str] | None = None
) -> list[LabelItem]:
    """The index PNGs under ``root`` (any depth), decoded lazily with the class list."""
    names = class_list(root, classes, report)
    if len(names) > 254:
        raise DataError(f"classes: {len(names)} names; index PNGs hold at most 254 classes")
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    unknown: dict[int, str] = {}
    for value, name in enumerate(names, start=1):
        index = matcher.index(name)
        if index is None:
            unknown[value] = name
        else:
            lut[value] = index
    files = sorted(p for p in root.rglob("*.png") if p.is_file())
    if not files:
        raise DataError(f"{report.src}: no .png index masks; export the pixel labels as PNG files")

    known = np.ones(len(names) + 1, dtype=bool)  # 0 undefined, 1..N the listed classes; above: out of range

    def loader(path: Path, source: str):
        def load() -> np.ndarray:
            values = index_values(path, known, report, source)
            counts = np.bincount(values[values >= 0].ravel(), minlength=len(known))
            for value, name in unknown.items():
                if counts[value]:
                    report.unknown(name, int(counts[value]))
            return np.where(values >= 0, lut[np.maximum(values, 0)], IGNORE_INDEX).astype(np.uint8)

        return load

    return [
        LabelItem(stem=p.stem, source=str(p.relative_to(root)), load=loader(p, str(p.relative_to(root))))
        for p in in_export(files, root, report)
    ]


def write_matlab(masks: dict[str, np.ndarray], out: Path) -> Path:
    """Write class-index masks as index PNGs (our class k -> value k+1, unlabelled -> 0) and classes.txt."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[: len(CLASS_NAMES)] = np.arange(1, len(CLASS_NAMES) + 1)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / CLASSES_FILE, "".join(f"{n}\n" for n in CLASS_NAMES))
    for stem, index in sorted(masks.items()):
        save_png(out / f"{stem}.png", lut[index])
    return out
