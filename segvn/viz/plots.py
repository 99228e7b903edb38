"""Report charts saved as PNG: class frequency, confusion matrix, training progress, per-class metrics.

Uses matplotlib's object-oriented API with the Agg canvas (no display, no pyplot figures), so it works
headless and never touches global figure state. Every function takes the output path and returns it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torchmetrics.utilities.plot import plot_confusion_matrix as draw_confusion_matrix

from segvn.data.classes import CLASS_NAMES, PALETTE
from segvn.utils.io import replace_link

DPI = 120


def _save(fig: Figure, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(replace_link(out), dpi=DPI)
    return out


def _colours(palette: np.ndarray | None, n: int) -> list[tuple[float, float, float]] | None:
    if palette is None:
        return None
    palette = np.asarray(palette, dtype=np.float64).reshape(-1, 3)
    if len(palette) < n:
        raise ValueError(f"{n} classes but only {len(palette)} palette colours")
    return [tuple(c / 255.0) for c in palette[:n]]


def _human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


# ---------------------------------------------------------------------------------------- frequency
def plot_class_frequency(
    pixel_counts: Sequence[float] | np.ndarray,
    class_names: Sequence[str] = CLASS_NAMES,
    palette: np.ndarray | None = PALETTE,
    out: str | Path = "class_frequency.png",
    image_counts: Sequence[float] | np.ndarray | None = None,
    title: str = "Pixel frequency per class",
) -> Path:
    """Bar chart of each class's share of labelled pixels, in class colours (the thesis pixel-count chart).

    Bars show frequency (pixel count / total); each is annotated with its raw pixel count. With
    ``image_counts`` (number of images in which each class appears) a second panel shows those, which
    tells rare-but-everywhere classes (fence, person) from rare-and-rare ones.
    """
    counts = np.asarray(pixel_counts, dtype=np.float64)
    n = len(class_names)
    if counts.shape != (n,):
        raise ValueError(f"expected {n} pixel counts, got shape {counts.shape}")
    total = counts.sum()
    freq = counts / total if total > 0 else np.zeros_like(counts)
    colours = _colours(palette, n)
    rows = 1 if image_counts is None else 2
    fig = Figure(figsize=(max(6.0, 0.8 * n + 2), 3.8 * rows), layout="constrained")
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    x = np.arange(n)

    ax = axes[0]
    bars = ax.bar(x, freq, color=colours, edgecolor="black", linewidth=0.6)
    for bar, c in zip(bars, counts, strict=True):
        ax.annotate(
            _human(c),
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            xytext=(0, 2),
            textcoords="offset points",
            fontsize=8,
        )
    ax.set_ylabel("frequency (share of pixels)")
    ax.set_ylim(0, max(freq.max() * 1.15, 1e-3))
    ax.set_title(title)

    if image_counts is not None:
        images = np.asarray(image_counts, dtype=np.float64)
        if images.shape != (n,):
            raise ValueError(f"expected {n} image counts, got shape {images.shape}")
        ax2 = axes[1]
        bars = ax2.bar(x, images, color=colours, edgecolor="black", linewidth=0.6)
        ax2.bar_label(bars, labels=[f"{v:.0f}" for v in images], fontsize=8, padding=2)
        ax2.set_ylabel("images containing the class")
        ax2.set_ylim(0, max(images.max() * 1.15, 1))
    for a in axes:
        a.set_xticks(x, class_names, rotation=30, ha="right")
        a.grid(axis="y", alpha=0.3)
        a.set_axisbelow(True)
    return _save(fig, out)


# ---------------------------------------------------------------------------------------- confusion
def plot_confusion_matrix(
    confmat: np.ndarray,
    class_names: Sequence[str] = CLASS_NAMES,
    out: str | Path = "confusion_matrix.png",
    normalize: str | None = "true",
    title: str | None = None,
    cmap: str = "Blues",
) -> Path:
    """:func:`confusion_matrix_figure` saved as a PNG at ``out``."""
    return _save(confusion_matrix_figure(confmat, class_names, normalize, title, cmap), out)


def confusion_matrix_figure(
    confmat: np.ndarray,
    class_names: Sequence[str] = CLASS_NAMES,
    normalize: str | None = "true",
    title: str | None = None,
    cmap: str = "Blues",
) -> Figure:
    """Heatmap of a C x C confusion matrix (rows = truth, columns = prediction), values annotated, drawn by
    torchmetrics (:func:`torchmetrics.utilities.plot.plot_confusion_matrix`, what
    ``MulticlassConfusionMatrix.plot`` draws) on a figure of its own, with a colour bar; the cells read
    ``85.4`` (percent, one decimal) or ``1.2M`` (pixel counts).

    ``normalize``: ``"true"`` divides each row by its total (per-class recall on the diagonal, the
    MATLAB ``confusionchart`` row summary), ``"pred"`` each column, ``"all"`` the whole matrix, and
    ``None`` shows raw counts. Rows/columns without samples show as 0.
    """
    cm = np.asarray(confmat, dtype=np.float64)
    n = len(class_names)
    if cm.shape != (n, n):
        raise ValueError(f"expected a {n}x{n} confusion matrix, got shape {cm.shape}")
    if normalize not in ("true", "pred", "all", None):
        raise ValueError(f"normalize must be 'true', 'pred', 'all' or None, got {normalize!r}")
    if normalize == "true":
        denom = cm.sum(axis=1, keepdims=True)
    elif normalize == "pred":
        denom = cm.sum(axis=0, keepdims=True)
    elif normalize == "all":
        denom = np.array(cm.sum())
    else:
        denom = np.array(1.0)
    values = np.divide(cm, denom, out=np.zeros_like(cm), where=denom > 0)
    if normalize:
        values *= 100.0  # shown as percentages, cells and colour bar alike

    vmax = 100.0 if normalize else max(values.max(), 1.0)

    size = max(5.0, 0.8 * n + 2.5)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.subplots()
    draw_confusion_matrix(torch.from_numpy(values), ax=ax, labels=list(class_names), cmap=cmap)
    im = ax.images[0]
    im.set_clim(0.0, vmax)  # percentages on a fixed 0-100 scale, comparable between reports; counts from 0
    fig.colorbar(im, ax=ax, shrink=0.8, label="%" if normalize else "pixels")
    cell_font = 10 if n <= 12 else 7
    for text, v in zip(ax.texts, values.ravel(), strict=True):  # row by row, as torchmetrics draws them
        text.set_text(f"{v:.1f}" if normalize else _human(v))
        text.set_fontsize(cell_font)
        text.set_color("white" if im.norm(v) > 0.55 else "black")  # against the colour on the fixed scale
    ax.set_xticks(np.arange(n), class_names, rotation=45, ha="right", fontsize=10)
    ax.set_yticks(np.arange(n), class_names, rotation=0, fontsize=10)
    ax.set_xlabel("predicted class", fontsize=11)
    ax.set_ylabel("true class", fontsize=11)
    unit = {"true": " (% of true class)", "pred": " (% of predicted class)", "all": " (% of all pixels)"}
    ax.set_title(title or "Confusion matrix" + unit.get(normalize or "", " (pixels)"))
    return fig


# ----------------------------------------------------------------------------------- training progress
_AXIS_COLUMNS = ("step", "epoch")


def _kind(column: str) -> str:
    name = column.lower()
    if "loss" in name:
        return "loss"
    if name.startswith("lr") or "learning_rate" in name or name.endswith("/lr"):
        return "lr"
    return "metric"


def _smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard-style exponential moving average (debiased) for noisy per-step curves."""
    out = np.empty_like(values, dtype=np.float64)
    acc, norm = 0.0, 0.0
    for i, v in enumerate(values):
        acc = weight * acc + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = acc / norm
    return out


def _epoch_spans(df: pd.DataFrame) -> list[tuple[int, float, float]]:
    """(epoch, first step, last step) per epoch, from the rows that carry both columns."""
    if "epoch" not in df or "step" not in df:
        return []
    rows = df[["epoch", "step"]].dropna()
    if rows.empty:
        return []
    spans = rows.groupby("epoch")["step"].agg(["min", "max"]).sort_index()
    return [(int(e), float(lo), float(hi)) for e, (lo, hi) in spans.iterrows()]


def _epoch_label_step(epochs: int, most: int = 25) -> int:
    """Label (and draw the boundary of) every n-th epoch, n in 1, 2, 5, 10, 20, 50, ...: at most ``most``."""
    return next(m * 10**e for e in itertools.count() for m in (1, 2, 5) if epochs <= most * m * 10**e)


def _plot_series(ax, df: pd.DataFrame, columns: list[str], smoothing: float) -> None:
    for i, col in enumerate(columns):
        data = df[["step", col]].dropna().sort_values("step")
        x, y = data["step"].to_numpy(float), data[col].to_numpy(float)
        colour = f"C{i}" if len(columns) <= 10 else matplotlib.colormaps["tab20"](i % 20)
        dense = len(x) > 20 or col.endswith("_step")
        if col.endswith("_best"):  # running best: a thin step under the metric, whose markers stay visible
            ax.plot(
                x, y, color=colour, linewidth=1.0, alpha=0.8, drawstyle="steps-post", zorder=1.5, label=col
            )
        elif dense and smoothing > 0:  # noisy per-step curve: raw values faint, smoothed on top (MATLAB)
            ax.plot(x, y, color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(x, _smooth(y, smoothing), color=colour, linewidth=1.6, label=f"{col} (smoothed)")
        elif dense:
            ax.plot(x, y, color=colour, linewidth=1.4, drawstyle="steps-post", label=col)
        else:
            style = "--" if col.lower().startswith("val") else "-"
            ax.plot(x, y, style, color=colour, marker="o", markersize=4, linewidth=1.4, label=col)
    ax.grid(alpha=0.3)
    if len(columns) > 6:  # e.g. per-class IoUs: beside the panel rather than over the curves
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    else:
        ax.legend(fontsize=8, loc="best")


def plot_training_progress(
    metrics: str | Path | pd.DataFrame,
    out: str | Path = "training_progress.png",
    title: str = "Training progress",
    smoothing: float = 0.6,
) -> Path:
    """MATLAB-style training-progress figure from a Lightning ``CSVLogger`` ``metrics.csv``.

    Top panel: accuracy-like metrics (everything that is not a loss or learning rate, e.g.
    ``train/acc_step``, ``val/miou``); middle: losses; bottom (only if logged): learning rate. All
    against the iteration (``step``), with epoch boundaries as dotted lines and epoch numbers on a
    secondary axis along the top. The CSV's sparse rows are handled per column; missing columns are
    simply not drawn. Raises ``ValueError`` if there are no metric columns at all.
    """
    df = pd.read_csv(metrics) if not isinstance(metrics, pd.DataFrame) else metrics.copy()
    candidates = [c for c in df.columns if c not in _AXIS_COLUMNS and not str(c).startswith("Unnamed")]
    columns = [c for c in candidates if pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().any()]
    if not columns:
        source = metrics if not isinstance(metrics, pd.DataFrame) else "the DataFrame"
        raise ValueError(f"no metric columns to plot in {source}; columns are {list(df.columns)}")
    if "step" not in df:
        df["step"] = np.arange(len(df), dtype=float)

    groups = {k: [c for c in columns if _kind(c) == k] for k in ("metric", "loss", "lr")}
    panels = [k for k in ("metric", "loss", "lr") if groups[k]]
    ratios = [1.0 if k == "lr" else 2.5 for k in panels]
    fig = Figure(figsize=(9.0, 1.6 + sum(ratios) * 1.3), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False, height_ratios=ratios)[:, 0]
    labels = {"metric": "accuracy / IoU", "loss": "loss", "lr": "learning rate"}
    spans = _epoch_spans(df)
    every = _epoch_label_step(len(spans))
    for ax, kind in zip(axes, panels, strict=True):
        _plot_series(ax, df, groups[kind], 0.0 if kind == "lr" else smoothing)
        ax.set_ylabel(labels[kind])
        for epoch, _, last in spans[:-1]:
            if (epoch + 1) % every == 0:
                ax.axvline(last + 0.5, color="grey", linestyle=":", linewidth=1.0)
    axes[-1].set_xlabel("iteration (step)")
    if spans:
        top = axes[0].secondary_xaxis("top")
        shown = [(e, lo, hi) for e, lo, hi in spans if e % every == 0]
        top.set_xticks([(lo + hi) / 2 for _, lo, hi in shown], [str(e) for e, _, _ in shown])
        top.set_xlabel("epoch" if every == 1 else f"epoch (every {every})")
    fig.suptitle(title)
    return _save(fig, out)


# ------------------------------------------------------------------------------------- class metrics
def plot_class_metrics(
    metrics: Mapping[str, Sequence[float]] | pd.DataFrame,
    class_names: Sequence[str] = CLASS_NAMES,
    out: str | Path = "class_metrics.png",
    palette: np.ndarray | None = PALETTE,
    title: str = "Per-class metrics",
) -> Path:
    """Grouped bars of per-class scores in [0, 1] (e.g. ``{"IoU": [...], "accuracy": [...], "BF": [...]}``).

    With one metric the bars take the class colours; with several, each metric has its own colour and
    the class colours appear as a strip under the axis. Values are annotated; NaN (class absent) is
    drawn as an empty slot labelled "n/a".
    """
    table = pd.DataFrame(metrics) if not isinstance(metrics, pd.DataFrame) else metrics
    n = len(class_names)
    if len(table) != n:
        raise ValueError(f"expected {n} values per metric, got {len(table)}")
    if table.shape[1] == 0:
        raise ValueError("no metrics given")
    names = list(table.columns)
    colours = _colours(palette, n)
    fig = Figure(figsize=(max(6.0, n * (0.25 * len(names) + 0.4) + 2), 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(n)
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        values = table[name].to_numpy(float)
        offset = (k - (len(names) - 1) / 2) * width
        colour = colours if (len(names) == 1 and colours is not None) else f"C{k}"
        bars = ax.bar(
            x + offset,
            np.nan_to_num(values),
            width,
            color=colour,
            edgecolor="black",
            linewidth=0.5,
            label=str(name),
        )
        ax.bar_label(
            bars,
            labels=["n/a" if np.isnan(v) else f"{v:.2f}" for v in values],
            fontsize=7,
            padding=1,
            rotation=90 if len(names) > 1 else 0,
        )
    if colours is not None and len(names) > 1:
        ax.scatter(x, np.full(n, -0.06), c=colours, marker="s", s=120, edgecolors="black", clip_on=False)
    ax.set_xticks(x, class_names, rotation=30, ha="right")
    ax.set_ylim(-0.1 if (colours is not None and len(names) > 1) else 0, 1.15)
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    ax.set_ylabel("score")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if len(names) > 1:
        ax.legend(fontsize=8, ncols=len(names), loc="upper center")
    ax.set_title(title)
    return _save(fig, out)
