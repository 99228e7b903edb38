"""What every label format shares: matching label names to our classes, the import report, writing masks.

A format module turns a tool's export into :class:`LabelItem` s (a frame stem and a function that decodes
the mask to our class indices); :func:`write_labels` matches them to the extracted frames by stem, checks
the size and writes RGB colour masks in our palette, so the thesis layout (``<street>/labels/``) stays the
one place ``data=vietnam`` reads. Problems with one file are reported and skipped, never fatal.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segvn.data.classes import CLASS_NAMES, IGNORE_INDEX, PALETTE, index_to_rgb, rgb_to_index
from segvn.data.io import image_size, list_images
from segvn.errors import DataError, InputNotFoundError
from segvn.utils.io import inside, replace_link, unpack_zip

log = logging.getLogger("segvn.labels")

IGNORE_COLOR = (0, 0, 0)
"""Colour of unlabelled pixels in the masks we write (not in the palette, so it decodes to 255)."""

DEFAULT_MAPPING: dict[str, str] = {
    "pedestrian": "person",
    "people": "person",
    "tree": "vegetation",
    "trees": "vegetation",
    "pavement": "sidewalk",
    "cars": "car",
    "vehicle": "car",
    "buildings": "building",
}
"""Tool label name -> our class name (case-insensitive); ``mapping=`` adds to / overrides these."""

TOP_VALUES = 5
"""How many of a file's most frequent out-of-range values the report lists."""

IGNORE_NAMES = frozenset({"background", "_background_", "unlabelled", "unlabeled", "void", "undefined"})
"""Label names that mean "no class": they become 255 silently (other unknown names are reported)."""

IGNORE_TARGETS = frozenset({"ignore", "unlabelled", "unlabeled", "none", "null", ""})
"""Mapping targets that send a label to 255 on purpose (``mapping={bicyclist: ignore}``)."""


class ClassMatcher:
    """Match a tool's label names to our class indices: exact class name, then the mapping; case-insensitive."""

    def __init__(self, mapping: Mapping[str, Any] | None = None) -> None:
        merged = {**DEFAULT_MAPPING, **{str(k): v for k, v in (mapping or {}).items()}}
        self.mapping: dict[str, int] = {}
        for name, target in merged.items():
            target_name = "" if target is None else str(target).strip().lower()
            if target_name in IGNORE_TARGETS:
                self.mapping[name.strip().lower()] = IGNORE_INDEX
            elif target_name in CLASS_NAMES:
                self.mapping[name.strip().lower()] = CLASS_NAMES.index(target_name)
            else:
                raise DataError(
                    f"mapping: {name!r} -> {target!r} is not one of our classes; use one of "
                    f"{', '.join(CLASS_NAMES)} or 'ignore'"
                )

    def index(self, name: str) -> int | None:
        """Our class index for a label name, 255 for known "no class" names, ``None`` when unknown."""
        key = name.strip().lower()
        if key in self.mapping:
            return self.mapping[key]
        if key in CLASS_NAMES:
            return CLASS_NAMES.index(key)
        if key in IGNORE_NAMES:
            return IGNORE_INDEX
        return None


@dataclass
class ImportReport:
    """Everything an import did and skipped; saved as JSON in the run directory."""

    format: str
    src: str
    street_dir: str
    imported: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    unknown_labels: dict[str, int] = field(default_factory=dict)
    overlaps: dict[str, int] = field(default_factory=dict)
    out_of_range: dict[str, dict[str, Any]] = field(default_factory=dict)
    """File -> pixels, share and top values outside the format's value table (left unlabelled)."""
    check_problems: list[str] = field(default_factory=list)

    def skip(self, file: str, reason: str) -> None:
        self.skipped.append({"file": file, "reason": reason})
        log.warning("skipped %s: %s", file, reason)

    def unknown(self, name: str, pixels: int = 0) -> None:
        """Count an unknown label (its pixels become 255); logged once per name."""
        if name not in self.unknown_labels:
            log.warning(
                "unknown label %r: its pixels are left unlabelled (255); add mapping={%s: CLASS} to keep it",
                name,
                name,
            )
            self.unknown_labels[name] = 0
        self.unknown_labels[name] += int(pixels)

    def count_out_of_range(self, file: str, values: np.ndarray, total: int, expected: str) -> None:
        """Count a file's values outside the format's table (their pixels become 255); logged per file."""
        vals, counts = np.unique(values, return_counts=True)
        order = np.argsort(-counts, kind="stable")[:TOP_VALUES]
        top = [[int(vals[i]), int(counts[i])] for i in order]
        share = values.size / max(total, 1)
        self.out_of_range[file] = {"pixels": int(values.size), "share": share, "values": top}
        log.warning(
            "%s: %.2f%% of pixels have values outside %s (top: %s); they are left unlabelled (255) - the "
            "file is corrupt or from another dataset, fix or re-export it",
            file,
            100 * share,
            expected,
            ", ".join(f"{v} x{n}" for v, n in top),
        )

    def overlap(self, stem: str, pixels: int) -> None:
        if pixels:
            self.overlaps[stem] = self.overlaps.get(stem, 0) + int(pixels)
            log.warning("%s: %d pixels painted by more than one label; the later layer wins", stem, pixels)

    def line(self) -> str:
        parts = [f"imported {len(self.imported)} label(s) into {self.street_dir}/labels"]
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)}")
        if self.unknown_labels:
            parts.append(f"{len(self.unknown_labels)} unknown label name(s) left unlabelled")
        if self.overlaps:
            parts.append(f"overlaps in {len(self.overlaps)} frame(s)")
        if self.out_of_range:
            parts.append(f"{len(self.out_of_range)} file(s) with out-of-range values left unlabelled")
        if self.check_problems:
            parts.append(f"{len(self.check_problems)} check problem(s)")
        return f"{self.format}: " + ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "src": self.src,
            "street_dir": self.street_dir,
            "imported": self.imported,
            "skipped": self.skipped,
            "unknown_labels": self.unknown_labels,
            "overlaps": self.overlaps,
            "out_of_range": self.out_of_range,
            "check_problems": self.check_problems,
            "summary": self.line(),
        }


@dataclass(frozen=True)
class LabelItem:
    """One mask of an export: the frame stem it belongs to, where it came from, and how to decode it."""

    stem: str
    source: str
    load: Callable[[], np.ndarray]
    """Returns class indices (H, W) uint8, 255 = unlabelled; raises :class:`DataError` when unreadable."""


@contextlib.contextmanager
def export_dir(src: str | Path) -> Iterator[Path]:
    """A tool's export as a folder: the folder itself, or a zip unpacked into a temporary folder.

    A zip is unpacked under the caps of :func:`segvn.utils.io.unpack_zip` (member count, unpacked size).
    """
    path = Path(src).expanduser()
    if not path.exists():
        raise InputNotFoundError(f"src={src}: no such file or folder; give the tool's export (zip or folder)")
    if path.is_dir():
        yield path
        return
    if not zipfile.is_zipfile(path):
        raise DataError(f"src={src}: not a folder and not a zip file; give the tool's export (zip or folder)")
    with tempfile.TemporaryDirectory(prefix="segvn_labels_") as tmp:
        unpack_zip(path, tmp, "src")
        yield Path(tmp)


def in_export(files: Iterable[Path], root: Path, report: ImportReport) -> list[Path]:
    """The ``files`` that really lie in the export ``root``; a link to a file elsewhere is reported and skipped.

    An export comes from someone else: a mask that is a symbolic link out of it would make the import
    read (and copy into ``labels/``) a file the user never gave.
    """
    kept = []
    for path in files:
        if inside(path, root):
            kept.append(path)
        else:
            report.skip(
                str(path.relative_to(root)),
                f"a link to {path.resolve()}, outside the export {report.src}; not read",
            )
    return kept


def open_mask(path: Path) -> Image.Image:
    """Open a mask fully (so a truncated file fails here), as a :class:`DataError` naming the file."""
    try:
        img = Image.open(path)
        img.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path.name}: cannot read mask ({err})") from err
    return img


def index_values(path: Path, known: np.ndarray, report: ImportReport, source: str) -> np.ndarray:
    """A single-channel index mask's values, range-checked for its bit depth before any mapping.

    ``known`` (bool per value) is the format's value table. A value outside it -- above the table, as
    263 in a 16-bit map, or a hole in it -- is counted in ``report.out_of_range`` and returned as -1 (the
    caller leaves it unlabelled), never wrapped to 8 bits onto a real class.
    """
    img = open_mask(path)
    values = np.asarray(img)
    if values.ndim != 2:
        raise DataError(f"{path.name}: expected a single-channel index mask, got mode {img.mode}")
    if values.dtype.kind == "f" and not (np.isfinite(values).all() and (values == np.round(values)).all()):
        raise DataError(f"{path.name}: a floating-point mask with non-integer values; save 8-bit index PNGs")
    values = values.astype(np.int64)
    inside = (values >= 0) & (values < len(known))
    inside[inside] = known[values[inside]]
    if not inside.all():
        bits = 16 if img.mode.startswith("I;16") else 8 if img.mode in ("L", "P") else 32
        allowed = ", ".join(_ranges(np.flatnonzero(known)))
        report.count_out_of_range(
            source, values[~inside], values.size, f"{allowed} (a {bits}-bit {img.mode} mask)"
        )
    return np.where(inside, values, -1)


def _ranges(values: np.ndarray) -> list[str]:
    """``[0, 1, 2, 5]`` -> ``["0..2", "5"]``."""
    out: list[str] = []
    start = prev = None
    for v in [int(x) for x in values] + [None]:
        if v is not None and prev is not None and v == prev + 1:
            prev = v
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}..{prev}")
        start = prev = v
    return out


def frame_index(street_dir: Path, frames_dir: str = "frames") -> dict[str, Path]:
    """The extracted frames of a street by stem; a missing ``frames/`` is a settings error."""
    folder = street_dir / frames_dir
    if not folder.is_dir():
        raise DataError(
            f"{folder}: no extracted frames; run `python -m segvn.extract ... street={street_dir.name} "
            f"out={street_dir.parent}` first, or check street= and out="
        )
    return {p.stem: p for p in list_images(folder)}


def save_png(path: Path, array: np.ndarray) -> None:
    """Save a uint8 array (H, W) or (H, W, 3) as PNG, creating the folder; a link there is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(replace_link(path))


def write_mask(path: Path, index: np.ndarray) -> None:
    """Write class indices as an RGB colour mask in our palette (unlabelled = black)."""
    save_png(path, index_to_rgb(index, ignore_color=IGNORE_COLOR))


def read_mask(path: Path) -> np.ndarray:
    """Class indices of one of our RGB colour masks (any colour outside the palette is 255)."""
    return rgb_to_index(np.asarray(open_mask(path).convert("RGB")))[0]


def write_labels(
    items: list[LabelItem],
    street_dir: Path,
    report: ImportReport,
    overwrite: bool = False,
    frames_dir: str = "frames",
    labels_dir: str = "labels",
) -> list[Path]:
    """Write each item to ``labels/<stem>.png`` beside its frame; report and skip what does not fit."""
    frames = frame_index(street_dir, frames_dir)
    out_dir = street_dir / labels_dir
    written: list[Path] = []
    seen: set[str] = set()
    for item in items:
        frame = frames.get(item.stem)
        if frame is None:
            report.skip(item.source, f"no extracted frame {item.stem!r} in {street_dir / frames_dir}")
            continue
        if item.stem in seen:
            report.skip(item.source, f"a second mask for frame {item.stem!r}; the first one was kept")
            continue
        target = out_dir / f"{item.stem}.png"
        if target.exists() and not overwrite:
            report.skip(item.source, f"{target} exists; set overwrite=true to replace it")
            continue
        try:
            index = item.load()
        except DataError as err:
            report.skip(item.source, str(err))
            continue
        h, w = image_size(frame)
        if index.shape[:2] != (h, w):
            report.skip(
                item.source,
                f"mask is {index.shape[1]}x{index.shape[0]} but frame {frame.name} is {w}x{h}",
            )
            continue
        write_mask(target, index)
        seen.add(item.stem)
        written.append(target)
        report.imported.append(item.stem)
    return written


def check_written_labels(paths: list[Path], street_dir: Path, frames_dir: str = "frames") -> list[str]:
    """Consistency check after an import: each label has a frame of its size and only palette colours.

    A basic stand-in for ``segvn.check`` on the street; returns one problem line per bad file.
    """
    frames = frame_index(street_dir, frames_dir)
    allowed = np.vstack([PALETTE, np.array([IGNORE_COLOR], dtype=np.uint8)])
    problems = []
    for path in paths:
        frame = frames.get(path.stem)
        if frame is None:
            problems.append(f"{path}: no frame of the same stem")
            continue
        rgb = np.asarray(open_mask(path).convert("RGB"))
        if rgb.shape[:2] != image_size(frame):
            problems.append(f"{path}: size {rgb.shape[1]}x{rgb.shape[0]} differs from its frame")
        _, unknown = rgb_to_index(rgb, allowed)
        if unknown > 0:
            problems.append(f"{path}: {unknown:.2%} of pixels are not palette colours")
    return problems
