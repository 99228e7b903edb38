"""Looking at a labelled dataset: class statistics per split and street, class weights, label grids.

:func:`dataset_report` gathers, for every split of a :class:`~segvn.data.datamodule.SegDataModule`,
the pixel and image counts of each class over the split and per street, the class frequencies and the
class weights training would derive from them (:func:`segvn.data.stats.class_weights`, the one
implementation training uses). :func:`report_rows` flattens the report into CSV rows,
:func:`label_grid` tiles frames with their labels overlaid next to a colour legend, and
:func:`plot_class_weights` draws the weights. ``python -m segvn.analyze`` writes them all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from segvn.data.classes import PALETTE
from segvn.data.sources import SPLITS, Sample, StreetSource
from segvn.data.stats import LabelStats, class_weights
from segvn.errors import DataError
from segvn.viz.network import tile
from segvn.viz.overlay import DEFAULT_ALPHA, add_title, draw_legend, legend_box, overlay

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


# --------------------------------------------------------------------------------------------- grid
def evenly_spaced(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``n <= k``)."""
    if n <= 0 or k <= 0:
        return []
    if n <= k:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


def resize_pair(
    image: np.ndarray, label: np.ndarray, size: Sequence[int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """A frame and its label map resized to ``size`` = (H, W) (area / nearest), or as they are."""
    if not size:
        return image, label
    h, w = int(size[0]), int(size[1])
    return (
        cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA),
        cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST),
    )


def legend_panel(
    class_names: Sequence[str], palette: np.ndarray = PALETTE, height: int = 0, scale: float = 0.45
) -> np.ndarray:
    """A white panel holding just the colour legend (:func:`draw_legend`), at least ``height`` tall."""
    x0, y0, x1, y1 = legend_box((10_000, 10_000, 3), class_names, corner="top-left", scale=scale, margin=6)
    panel = np.full((max(height, y1 + 6), x1 + 6, 3), 255, np.uint8)
    return draw_legend(panel, class_names, palette, corner="top-left", scale=scale, margin=6)


def label_grid(
    frames: Sequence[tuple[np.ndarray, np.ndarray, str]],
    class_names: Sequence[str],
    palette: np.ndarray = PALETTE,
    ncols: int = 4,
    alpha: float = DEFAULT_ALPHA,
    titles: bool = True,
) -> np.ndarray:
    """Frames with their labels overlaid (``alpha`` as MATLAB's labeloverlay), tiled, legend on the right.

    ``frames`` are ``(rgb uint8 (H, W, 3), label (H, W) with 255 = unlabelled, title)``, all of one
    size (see :func:`resize_pair`); frames are shown as stored, without training augmentation. Unlabelled pixels keep the frame's colours. Returns one RGB uint8 picture.
    """
    if not frames:
        raise ValueError("no frames to show")
    scale = float(np.clip(frames[0][0].shape[0] / 900.0, 0.3, 1.0))
    panels = []
    for image, label, title in frames:
        panel = overlay(image, label, alpha, palette)
        panels.append(add_title(panel, title, scale) if titles else panel)
    grid = tile(panels, ncols=min(ncols, len(panels)), pad=4)
    legend = legend_panel(class_names, palette, height=grid.shape[0])
    if legend.shape[0] > grid.shape[0]:
        grid = np.concatenate(
            [grid, np.full((legend.shape[0] - grid.shape[0], grid.shape[1], 3), 255, np.uint8)], axis=0
        )
    return np.concatenate([grid, legend], axis=1)


# -------------------------------------------------------------------------------------------- chart
def plot_class_weights(
    weights: dict[str, Sequence[float | None]],
    class_names: Sequence[str],
    out: str | Path = "class_weights.png",
    palette: np.ndarray | None = PALETTE,
    title: str = "Class weights (train split)",
) -> Path:
    """Grouped bars of class weights per method (median frequency, inverse frequency), values annotated.

    A weight of ``None`` (no labelled pixel) is drawn as an empty slot; a dashed line marks 1.
    """
    n = len(class_names)
    methods = list(weights)
    if not methods:
        raise ValueError("no weights given")
    fig = Figure(figsize=(max(6.0, n * (0.35 * len(methods) + 0.4) + 2), 4.0), layout="constrained")
    ax = fig.subplots()
    x = np.arange(n)
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        values = np.array([np.nan if v is None else float(v) for v in weights[method]], dtype=np.float64)
        if values.shape != (n,):
            raise ValueError(f"{method}: expected {n} weights, got {values.shape}")
        bars = ax.bar(
            x + (k - (len(methods) - 1) / 2) * width,
            np.nan_to_num(values),
            width,
            color=f"C{k}",
            edgecolor="black",
            linewidth=0.5,
            label=method.replace("_", " "),
        )
        ax.bar_label(
            bars, labels=["n/a" if np.isnan(v) else f"{v:.2f}" for v in values], fontsize=7, padding=1
        )
    if palette is not None:
        colours = np.asarray(palette, dtype=np.float64).reshape(-1, 3)[:n] / 255.0
        ax.scatter(x, np.zeros(n), c=colours, marker="s", s=90, edgecolors="black", zorder=3, clip_on=False)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1.0)
    ax.set_xticks(x, class_names, rotation=30, ha="right")
    ax.set_ylabel("loss weight")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8)
    ax.set_title(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=120)
    return out
