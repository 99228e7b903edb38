"""Class statistics of a labelled dataset per split and street, and the class weights training derives.

:func:`dataset_report` gathers, for every split of a :class:`~segvn.data.datamodule.SegDataModule`,
the pixel and image counts of each class over the split and per street, the class frequencies and the
class weights training would derive from them (:func:`segvn.data.stats.class_weights`, the one
implementation training uses). :func:`report_rows` flattens the report into CSV rows.
``python -m segvn.analyze`` writes both and draws them (:mod:`segvn.viz.labels`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from segvn.data.sources import SPLITS, Sample, StreetSource
from segvn.data.stats import LabelStats, class_weights
from segvn.errors import DataError

WEIGHT_METHODS = ("median_frequency", "inverse_frequency")
"""The class weightings reported: median-frequency balancing and inverse (image-)frequency."""

CLASS_FIELDS = (
    "pixel_count",
    "image_count",
    "image_pixel_count",
    "pixel_share",
    "frequency",
    *(f"{m}_weight" for m in WEIGHT_METHODS),
)
"""Per-class values of every group (a split or one street of it), in CSV column order."""

ALL_STREETS = "(all)"
"""The ``street`` value of a split's total in :func:`report_rows`."""


def _num(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def class_table(stats: LabelStats, class_names: Sequence[str]) -> dict[str, Any]:
    """Counts, frequencies and weights of one group of labelled frames.

    Per class: ``pixel_count`` (pixels of the class), ``image_count`` (frames containing it),
    ``image_pixel_count`` (all pixels of those frames), ``pixel_share`` (pixel_count / labelled
    pixels of the group), ``frequency`` (pixel_count / image_pixel_count, the f_c of median-frequency
    balancing; ``None`` for an absent class) and the weights of :data:`WEIGHT_METHODS` as
    :func:`segvn.data.stats.class_weights` computes them (``None`` when the group has no labelled pixel).
    """
    names = list(class_names)
    pixels = stats.pixel_count.astype(np.int64)
    images = stats.image_count.astype(np.int64)
    image_pixels = stats.image_pixel_count.astype(np.int64)
    labelled = int(pixels.sum())
    total = int(stats.pixels.sum())
    weights: dict[str, np.ndarray | None] = {}
    for method in WEIGHT_METHODS:
        try:
            weights[method] = class_weights(stats, method)
        except DataError:
            weights[method] = None
    classes = {}
    for c, name in enumerate(names):
        classes[name] = {
            "pixel_count": int(pixels[c]),
            "image_count": int(images[c]),
            "image_pixel_count": int(image_pixels[c]),
            "pixel_share": pixels[c] / labelled if labelled else None,
            "frequency": pixels[c] / image_pixels[c] if image_pixels[c] else None,
            **{f"{m}_weight": None if weights[m] is None else float(weights[m][c]) for m in WEIGHT_METHODS},
        }
        classes[name] = {k: (_num(v) if isinstance(v, float) else v) for k, v in classes[name].items()}
    return {
        "images": len(stats.files),
        "pixels": total,
        "labelled_pixels": labelled,
        "ignored_pixels": total - labelled,
        "unknown_value_share": float(stats.unknown.mean()) if len(stats.unknown) else 0.0,
        "classes": classes,
    }


def split_frames(source: StreetSource, split: str) -> list[Sample]:
    """Every frame a split draws on, labelled or not (the labelled ones are ``source.samples(split)``).

    In ``streets`` mode (and always for ``predict``) these are all frames of the split's streets; in
    ``ratio`` mode only labelled frames are pooled, so this equals the labelled samples.
    """
    samples = source.samples(split)  # raises on unknown street names
    if split == "predict" or source.split_mode == "streets":
        return [s for street in source.streets[split] for s in source.frames.get(street, [])]
    return samples


def dataset_report(dm: Any, splits: Sequence[str] = SPLITS) -> dict[str, Any]:
    """Class statistics of every split of a data module, in total and per street.

    Each split gets a ``status``: ``ok`` (statistics follow), ``empty`` (no frames; skipped) or
    ``unlabelled`` (frames but no label maps; nothing to count). ``training_weights`` holds the
    weights of the train split, which are exactly what training uses
    (``SegDataModule.class_weights``).
    """
    source: StreetSource = dm.source
    names = list(dm.class_names)
    report: dict[str, Any] = {
        "source": type(source).__name__,
        "root": str(source.root),
        "split_mode": source.split_mode,
        "class_names": names,
        "weight_methods": list(WEIGHT_METHODS),
        "splits": {},
        "training_weights": None,
    }
    for split in splits:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; use some of {', '.join(SPLITS)}")
        frames = split_frames(source, split)
        labelled = [s for s in frames if s.label is not None]
        entry: dict[str, Any] = {
            "streets": list(source.streets.get(split, []))
            if source.split_mode == "streets" or split == "predict"
            else sorted({s.street for s in frames}),
            "frames": len(frames),
            "labelled_frames": len(labelled),
        }
        if not frames:
            entry["status"] = "empty"
            entry["note"] = (
                f"the {split} split has no frames (data.source.{split}={source.streets.get(split)})"
            )
        elif not labelled:
            entry["status"] = "unlabelled"
            entry["note"] = f"the {split} split has {len(frames)} frames but none has a label map"
        else:
            entry["status"] = "ok"
            stats = dm.label_stats(split)
            entry["total"] = class_table(stats, names)
            entry["by_street"] = {street: class_table(s, names) for street, s in stats.by_street().items()}
        report["splits"][split] = entry
    train = report["splits"].get("train")
    if train and train["status"] == "ok":
        report["training_weights"] = {
            m: {n: train["total"]["classes"][n][f"{m}_weight"] for n in names} for m in WEIGHT_METHODS
        }
    return report


def report_rows(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The report as a long table: one row per split, street (``(all)`` = the split) and class."""
    header = ["split", "street", "images", "class", *CLASS_FIELDS]
    rows: list[list[Any]] = []
    for split, entry in report["splits"].items():
        if entry["status"] != "ok":
            continue
        groups = [(ALL_STREETS, entry["total"]), *entry["by_street"].items()]
        for street, table in groups:
            for name, values in table["classes"].items():
                rows.append([split, street, table["images"], name, *(values[f] for f in CLASS_FIELDS)])
    return header, rows
