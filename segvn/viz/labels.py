"""Pictures of a labelled dataset: frames with their labels overlaid in a grid, and the class weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from segvn.data.classes import PALETTE
from segvn.utils.io import replace_link
from segvn.viz.image import tile
from segvn.viz.overlay import DEFAULT_ALPHA, add_title, draw_legend, legend_box, overlay


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
    fig.savefig(replace_link(out), dpi=120)
    return out
