"""Moving labels between labelling tools and the thesis layout (``<street>/labels/<frame stem>.png``).

:func:`import_labels` reads a tool's export (CVAT, Label Studio, Cityscapes, MATLAB), matches each mask to
an extracted frame by file stem and writes RGB colour masks in our palette; :func:`export_labels` writes a
street's labels back out as CVAT or Cityscapes (and MATLAB / Label Studio) files. One module per tool; the
shared name matching, report and writing live in :mod:`segvn.data.labelformats.common`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segvn.data.io import list_images
from segvn.data.labelformats.cityscapes import read_cityscapes, write_cityscapes
from segvn.data.labelformats.common import (
    DEFAULT_MAPPING,
    ClassMatcher,
    ImportReport,
    check_written_labels,
    export_dir,
    frame_index,
    log,
    read_mask,
    write_labels,
)
from segvn.data.labelformats.cvat import read_cvat, write_cvat
from segvn.data.labelformats.labelstudio import read_labelstudio, write_labelstudio
from segvn.data.labelformats.matlab import read_matlab, write_matlab
from segvn.data.pseudo import is_pseudolabel_folder
from segvn.errors import ConfigError, DataError
from segvn.utils.io import write_json

IMPORT_FORMATS = ("cvat", "labelstudio", "cityscapes", "matlab")
EXPORT_FORMATS = ("cvat", "cityscapes", "matlab", "labelstudio")
REPORT_NAME = "labels_import.json"

__all__ = [
    "DEFAULT_MAPPING",
    "EXPORT_FORMATS",
    "IMPORT_FORMATS",
    "ImportReport",
    "check_street",
    "export_labels",
    "import_labels",
]


def check_street(written: list[Path], street_dir: Path, frames_dir: str = "frames") -> list[str]:
    """After every import: the written labels against their frames, then ``segvn.check``'s checks of the
    street (pairs, sizes, unreadable files, stray colours, 16-bit masks, classes absent), as report lines."""
    problems = check_written_labels(written, street_dir, frames_dir)
    from segvn.data.check import check_source
    from segvn.data.sources import StreetFolders

    try:
        source = StreetFolders(
            street_dir.parent, frames_dir=frames_dir, train=[street_dir.name], val=[], test=[], predict=[]
        )
        report = check_source(source, splits=["train"], level="full")
    except DataError as err:
        return [*problems, f"check: {err}"]
    problems += [
        f"check {f.severity} [{f.kind}]: {f.message}"
        for f in report.sorted()
        if f.kind not in ("missing_class", "unlabelled_frame")
    ]
    return problems


def import_labels(
    fmt: str,
    src: str | Path,
    street_dir: str | Path,
    mapping: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    classes: Sequence[str] | None = None,
    tasks: str | Path | None = None,
    report_path: str | Path | None = None,
    frames_dir: str = "frames",
    labels_dir: str = "labels",
) -> ImportReport:
    """Import a tool's export into ``street_dir/labels``; returns the report (also saved to ``report_path``).

    Per-file problems (no frame, size mismatch, unreadable mask, existing label) are reported and skipped.
    Raises :class:`DataError` when nothing could be imported (after saving the report), and
    :class:`ConfigError` for an unknown format.
    """
    if fmt not in IMPORT_FORMATS:
        raise ConfigError(f"format={fmt!r}: import reads one of {', '.join(IMPORT_FORMATS)}")
    street_dir = Path(street_dir).expanduser()
    report = ImportReport(format=fmt, src=str(src), street_dir=str(street_dir))
    matcher = ClassMatcher(mapping)
    known = set(frame_index(street_dir, frames_dir))
    with export_dir(src) as root:
        if fmt == "cvat":
            items = read_cvat(root, matcher, report)
        elif fmt == "labelstudio":
            items = read_labelstudio(root, matcher, report, known, tasks)
        elif fmt == "cityscapes":
            items = read_cityscapes(root, matcher, report)
        else:
            items = read_matlab(root, matcher, report, classes)
        written = write_labels(items, street_dir, report, overwrite, frames_dir, labels_dir)
    report.check_problems = check_street(written, street_dir, frames_dir)
    for problem in report.check_problems:
        log.warning("check: %s", problem)
    if report_path is not None:
        path = Path(report_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, report.as_dict())
    if not report.imported:
        reasons = (
            "; ".join(f"{s['file']}: {s['reason']}" for s in report.skipped[:3]) or "the export has no masks"
        )
        raise DataError(f"nothing imported from {src} into {street_dir}/{labels_dir} ({reasons})")
    return report


def read_street_labels(street_dir: Path, labels_dir: str = "labels") -> dict[str, np.ndarray]:
    """A street's label masks as class indices, by frame stem."""
    folder = street_dir / labels_dir
    if not folder.is_dir():
        raise DataError(f"{folder}: no labels to export; import or draw labels first")
    masks = {p.stem: read_mask(p) for p in list_images(folder)}
    if not masks:
        raise DataError(f"{folder}: no label masks to export")
    return masks


def export_labels(fmt: str, street_dir: str | Path, out: str | Path, labels_dir: str = "labels") -> Path:
    """Write a street's labels in a tool's format (``out`` ending in .zip zips a CVAT export)."""
    writers = {
        "cvat": write_cvat,
        "cityscapes": write_cityscapes,
        "matlab": write_matlab,
        "labelstudio": write_labelstudio,
    }
    if fmt not in writers:
        raise ConfigError(f"format={fmt!r}: export writes one of {', '.join(EXPORT_FORMATS)}")
    street = Path(street_dir).expanduser()
    if not street.is_dir():
        raise DataError(f"street={street_dir}: no such street folder; give DATA_ROOT/<street>")
    if is_pseudolabel_folder(street) or is_pseudolabel_folder(street / labels_dir):
        raise DataError(
            f"street={street_dir}: holds pseudo-labels written by segvn.pseudolabel, not human labels; "
            "they are never exported as labels"
        )
    return writers[fmt](read_street_labels(street, labels_dir), Path(out).expanduser())
