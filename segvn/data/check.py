"""Validate a dataset before it is trained on: what ``python -m segvn.check`` and training set-up run.

Findings are plain dataclasses, so the same check prints a table, writes ``check.json`` and stops
training with one :class:`~segvn.errors.DataError`. **Errors** are data that would crash a run or
silently teach or score the model wrong; **warnings** are data that segvn handles safely (ignores or
converts) but that a person should look at.

Errors (each kind can be demoted with ``data.check.warn_only=[kind, ...]``):

- ``missing_root``: the data root does not exist or holds no dataset of this layout;
- ``unknown_street``: a street named in train/val/test is not on disk (in ``predict``: a warning,
  prediction streets need not exist for training);
- ``empty_split``: train or val has no labelled frame (test/predict: a warning);
- ``unreadable``: a frame or label that cannot be decoded (corrupt, truncated, not an image);
- ``size_mismatch``: a label of another size than its frame;
- ``label_mode``: a label of the wrong kind (greyscale where colour masks are expected, or the reverse);
- ``out_of_range``: index label values outside the dataset's table (e.g. 200 in CamVid, 259 in a
  16-bit map): corrupt or foreign labels (share per file);
- ``leak``: the same frame (by content hash, so renamed copies too) in two of train/val/test;
- ``street_leak``: one street listed in two of train/val/test (``split_mode=streets``);
- ``unlabelled_leak``: a frame of the unlabelled set (``data.unlabelled``) that is also a validation/test
  frame, by content hash (a warning with ``data.unlabelled.transductive=true``;
  :func:`segvn.data.unlabelled.check_unlabelled`).

Warnings:

- ``unknown_colour``: colours of an RGB mask outside the palette (share per file, top colours); ignored;
- ``image_mode``: a frame or label that is not plain 8-bit (16-bit, greyscale, RGBA, CMYK...);
  frames are converted (16-bit scaled to 8 bit), labels read by value;
- ``unlabelled_frame``: frames of train/val/test streets without a label (left out of training;
  normal in the ``data=vietnam`` layout, where ``frames/`` holds every extracted frame);
- ``orphan_label``: a label file without a frame of the same name (unused);
- ``duplicate_frame``: the same frame twice within one split;
- ``missing_class``: a class with no pixel in a split (its IoU is undefined there).

Two levels: ``cheap`` (file pairs, streets, image headers, truncation without decoding -- a PNG's chunk
CRCs to the end, a JPEG's end marker --, a hash of each frame's size and first 64 KiB; about a
millisecond per file, run at training set-up) and ``full`` (decodes every frame and label: label
values, colours, missing classes, a hash of the decoded pixels).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segvn.data.classes import CLASS_NAMES
from segvn.data.findings import (
    ERROR_KINDS,
    INDEX_LABEL_MODES,
    KINDS,
    LABELLED_SPLITS,
    LEVELS,
    QUICK_HASH_BYTES,
    RGB_LABEL_MODES,
    WARNING_KINDS,
    CheckReport,
    Finding,
    _Collector,
)
from segvn.data.io import WIDE_MODES, _open, image_mode, image_size, read_label, to_rgb
from segvn.data.sources import SPLITS, Sample, StreetSource
from segvn.errors import ConfigError, DataError

__all__ = ["ERROR_KINDS", "KINDS", "LABELLED_SPLITS", "WARNING_KINDS", "CheckReport", "Finding", "check_dataset",
           "check_source", "validate_options"]  # fmt: skip


def validate_options(level: str, warn_only: Iterable[str]) -> list[str]:
    """Check ``level`` and ``warn_only`` against the known values; a :class:`ConfigError` names them."""
    if level not in LEVELS:
        raise ConfigError(f"data.check.level={level!r}: use one of {', '.join(LEVELS)}")
    kinds = [str(k) for k in (warn_only or ())]
    bad = [k for k in kinds if k not in ERROR_KINDS]
    if bad:
        raise ConfigError(
            f"data.check.warn_only={kinds}: {', '.join(bad)} is not an error kind; use some of "
            f"{', '.join(ERROR_KINDS)}"
        )
    return kinds


def _quick_hash(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(QUICK_HASH_BYTES)
    return hashlib.blake2b(head + str(path.stat().st_size).encode(), digest_size=16).hexdigest()


JPEG_END = b"\xff\xd9"
JPEG_TAIL_BYTES = 1024
"""A JPEG's end-of-image marker must be in its last KiB (some writers pad after it)."""


def check_intact(path: Path) -> None:
    """Catch a truncated file without decoding its pixels (the cheap level's check): a PNG's chunks are read
    to the end and their CRCs checked (PIL ``verify``), a JPEG must end with its end-of-image marker.

    Other formats (BMP, TIFF) get their header read only; ``level=full`` decodes everything.
    Raises :class:`DataError` naming the file.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            with Image.open(path) as img:
                img.verify()
        elif suffix in (".jpg", ".jpeg"):
            size = path.stat().st_size
            with open(path, "rb") as fh:
                fh.seek(max(0, size - JPEG_TAIL_BYTES))
                if JPEG_END not in fh.read():
                    raise OSError("no end-of-image marker: the file is cut short")
    except DataError:
        raise
    except Exception as err:  # a damaged file: PIL raises many types
        raise DataError(
            f"{path}: cannot read image ({err}); the file is corrupt or truncated - re-export it or remove it "
            "from the dataset"
        ) from err


def _pixel_hash(rgb: np.ndarray) -> str:
    return hashlib.blake2b(rgb.tobytes() + str(rgb.shape).encode(), digest_size=16).hexdigest()


def _split_samples(source: StreetSource, splits: Sequence[str], out: _Collector) -> dict[str, list[Sample]]:
    found: dict[str, list[Sample]] = {}
    for split in splits:
        try:
            found[split] = source.samples(split)
        except DataError as err:
            out.add("unknown_street", str(err), "warning" if split == "predict" else None, split=split)
            continue
        required = split in ("train", "val")
        if not found[split] and (required or source.streets.get(split)):
            what = "frames" if split == "predict" else "labelled frames"
            out.add(
                "empty_split",
                f"the {split} split has no {what} (data.source.{split}={source.streets.get(split)})",
                None if required else "warning",
                split=split,
            )
    return found


def _counts(source: StreetSource, found: dict[str, list[Sample]]) -> dict[str, dict[str, dict[str, int]]]:
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for split, samples in found.items():
        per: dict[str, dict[str, int]] = {}
        if source.split_mode == "streets" or split == "predict":
            for street in dict.fromkeys(source.streets[split]):
                frames = source.frames.get(street, [])
                per[street] = {"frames": len(frames), "labels": sum(s.label is not None for s in frames)}
        else:
            for s in samples:
                entry = per.setdefault(s.street, {"frames": 0, "labels": 0})
                entry["frames"] += 1
                entry["labels"] += s.label is not None
        counts[split] = per
    return counts


def _structure(source: StreetSource, found: dict[str, list[Sample]], out: _Collector) -> None:
    listed = [s for s in LABELLED_SPLITS if s in found]
    for street in sorted({st for split in listed for st in source.streets[split]}):
        frames = source.frames.get(street, [])
        missing = [s for s in frames if s.label is None]
        if missing:
            out.add(
                "unlabelled_frame",
                f"street {street}: {len(missing)} of {len(frames)} frames have no label (left out of "
                f"training), e.g. {missing[0].image}",
                street=street,
                share=len(missing) / len(frames),
                files=[str(s.image) for s in missing[:5]],
            )
    for street, labels in source.orphan_labels().items():
        for path in labels:
            out.add(
                "orphan_label",
                f"{path}: label without a frame of the same name (it is unused); rename it to match its "
                "frame or add the frame",
                path=str(path),
                street=street,
            )
    if source.split_mode == "streets":
        for i, a in enumerate(listed):
            for b in listed[i + 1 :]:
                for street in sorted(set(source.streets[a]) & set(source.streets[b])):
                    out.add(
                        "street_leak",
                        f"street {street} is in both data.source.{a} and data.source.{b}; a street must "
                        "be in one split only, or val/test scores flatter the model",
                        street=street,
                        split=f"{a}+{b}",
                    )


def _check_file(
    sample: Sample,
    splits: list[str],
    source: StreetSource,
    level: str,
    out: _Collector,
    hashes: dict,
    hists: dict,
) -> None:
    split, street = "+".join(splits), sample.street
    where = {"split": split, "street": street}
    # the frame
    try:
        if level == "full":
            img = _open(sample.image)
            mode, rgb = img.mode, to_rgb(img)
            frame_hw = rgb.shape[:2]
            key = _pixel_hash(rgb)
        else:
            mode, frame_hw, key = (
                image_mode(sample.image),
                image_size(sample.image),
                _quick_hash(sample.image),
            )
            check_intact(sample.image)
    except (DataError, OSError) as err:
        out.add("unreadable", str(err), path=str(sample.image), **where)
        frame_hw = key = None
    else:
        hashes.setdefault(key, []).append(sample)
        if mode not in ("RGB",):
            extra = " (16-bit: scaled to 8 bit on reading)" if mode in WIDE_MODES else " (converted to RGB)"
            out.add(
                "image_mode",
                f"{sample.image}: a {mode} frame, not 8-bit RGB{extra}",
                path=str(sample.image),
                **where,
            )
    if sample.label is None:
        return
    # the label
    label_path = str(sample.label)
    try:
        mode = image_mode(sample.label)
        label_hw = image_size(sample.label)
        if level != "full":
            check_intact(sample.label)  # the full level decodes it below
    except DataError as err:
        out.add("unreadable", str(err), path=label_path, **where)
        return
    expected = RGB_LABEL_MODES if source.label_format == "rgb" else INDEX_LABEL_MODES
    if mode not in expected:
        if source.label_format == "rgb" and mode not in ("RGBA", "RGBX"):
            try:
                read_label(sample.label, "rgb")
            except DataError as err:
                out.add("label_mode", str(err), path=label_path, **where)
                return
        if source.label_format == "index" and mode in ("RGB", "RGBA", "RGBX"):
            try:
                read_label(sample.label, "index")
            except DataError as err:
                out.add("label_mode", str(err), path=label_path, **where)
                return
        out.add(
            "image_mode",
            f"{sample.label}: a {mode} label, expected {' or '.join(expected)}; read by value",
            path=label_path,
            **where,
        )
    if frame_hw is not None and label_hw != frame_hw:
        out.add(
            "size_mismatch",
            f"{sample.label}: label is {label_hw[1]}x{label_hw[0]} but its frame {sample.image} is "
            f"{frame_hw[1]}x{frame_hw[0]}; labels must match their frames",
            path=label_path,
            **where,
        )
    if level != "full":
        return
    try:
        read = read_label(sample.label, source.label_format, source.lut, source.known)
    except DataError as err:
        out.add("unreadable", str(err), path=label_path, **where)
        return
    values = [[list(v) if isinstance(v, tuple) else v, n] for v, n in read.unknown_values]
    if read.out_of_range_share > 0:
        out.add(
            "out_of_range",
            f"{sample.label}: {read.out_of_range_share:.2%} of pixels have values outside the class table "
            f"(top: {', '.join(f'{v} x{n}' for v, n in values)}); they are corrupt or from another "
            "dataset - fix or re-export the label",
            path=label_path,
            share=read.out_of_range_share,
            values=values,
            **where,
        )
    if read.unknown_share > 0:
        out.add(
            "unknown_colour",
            f"{sample.label}: {read.unknown_share:.2%} of pixels have colours outside the palette "
            f"(top: {', '.join(f'{tuple(v)} x{n}' for v, n in values)}); they are ignored",
            path=label_path,
            share=read.unknown_share,
            values=values,
            **where,
        )
    hist = np.bincount(read.labels.ravel(), minlength=256)
    for s in splits:
        hists[s] = hists.get(s, 0) + hist


def _leaks(
    hashes: dict[str, list[Sample]], split_of: dict[Path, list[str]], level: str, out: _Collector
) -> None:
    how = "identical pixels" if level == "full" else "identical size and first 64 KiB"
    for group in hashes.values():
        by_split = {
            s: [str(p.image) for p in group if s in split_of[p.image]]
            for s in LABELLED_SPLITS
            if any(s in split_of[p.image] for p in group)
        }
        if len(by_split) >= 2:
            files = [f for fs in by_split.values() for f in fs]
            out.add(
                "leak",
                f"the same frame ({how}) is in {' and '.join(by_split)}: {', '.join(files)}; remove the copy "
                "so val/test do not score frames the model trained on",
                path=files[0],
                split="+".join(by_split),
                files=files,
            )
        for split, files in by_split.items():
            if len(files) > 1:
                out.add(
                    "duplicate_frame",
                    f"the same frame ({how}) appears {len(files)} times in {split}: {', '.join(files)}",
                    path=files[0],
                    split=split,
                    files=files,
                )


def _stats_findings(stats: Any, out: _Collector) -> None:
    """Out-of-range label values found by the training label scan (cheap level: no second read)."""
    for path, share in zip(stats.files, stats.out_of_range, strict=True):
        if share > 0:
            out.add(
                "out_of_range",
                f"{path}: {share:.2%} of pixels have values outside the class table; they are corrupt or "
                "from another dataset - fix or re-export the label",
                path=path,
                split="train",
                share=float(share),
            )


def check_source(
    source: StreetSource,
    splits: Sequence[str] = SPLITS,
    level: str = "full",
    class_names: Sequence[str] = CLASS_NAMES,
    warn_only: Iterable[str] = (),
) -> CheckReport:
    """Check the frames and labels of ``splits`` of a source; never raises for bad data, reports it."""
    warn_only = validate_options(level, warn_only)
    out = _Collector(warn_only)
    report = CheckReport(str(source.root), type(source).__name__, level)
    if level == "off":
        return report
    try:
        _ = source.frames
    except DataError as err:
        out.add("missing_root", str(err))
        report.findings = out.findings
        return report
    found = _split_samples(source, [s for s in splits if s in SPLITS], out)
    report.counts = _counts(source, found)
    _structure(source, found, out)
    split_of: dict[Path, list[str]] = defaultdict(list)
    unique: dict[Path, Sample] = {}
    for split, samples in found.items():
        for s in samples:
            split_of[s.image].append(split)
            unique.setdefault(s.image, s)
    hashes: dict[str, list[Sample]] = {}
    hists: dict[str, np.ndarray] = {}
    for image, sample in unique.items():
        _check_file(sample, split_of[image], source, level, out, hashes, hists)
    _leaks(hashes, split_of, level, out)
    for split, hist in hists.items():
        if split not in LABELLED_SPLITS:
            continue
        for c, name in enumerate(class_names):
            if hist[c] == 0:
                out.add("missing_class", f"class {name} has no pixel in the {split} split", split=split)
    report.findings = out.findings
    return report


def check_dataset(
    data: Any,
    level: str = "cheap",
    warn_only: Iterable[str] = (),
    splits: Sequence[str] = LABELLED_SPLITS,
    raise_on_error: bool = True,
    label_stats: Any = None,
) -> CheckReport:
    """Check a :class:`~segvn.data.datamodule.SegDataModule` (or a source) and raise on errors.

    What training set-up calls (``level="cheap"`` by default). Returns the report; with errors
    (after ``warn_only`` demotes kinds to warnings) raises one :class:`DataError` whose message is
    the report, worst first. ``label_stats`` (the training label scan's
    :class:`~segvn.data.stats.LabelStats`) adds its out-of-range files at the cheap level.
    """
    source = getattr(data, "source", data)
    names = getattr(data, "class_names", CLASS_NAMES)
    report = check_source(source, splits, level, names, warn_only)
    if label_stats is not None and level == "cheap":
        out = _Collector(validate_options(level, warn_only))
        _stats_findings(label_stats, out)
        report.findings += out.findings
    if raise_on_error and not report.ok:
        raise DataError(
            f"{report.text()}\nfix the data, or turn an error kind into a warning with "
            "data.check.warn_only=[kind,...] (or skip the check with data.check.level=off)"
        )
    return report
