"""Prediction against ground truth, as pictures: MATLAB ``imshowpair``-style comparisons and panels."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from segvn.data.classes import CLASS_NAMES, IGNORE_INDEX, PALETTE
from segvn.viz.overlay import (
    _ERROR_ALPHA,
    _FONT,
    DEFAULT_ALPHA,
    GREEN,
    HATCH_DARK,
    HIT_WHITE,
    MAGENTA,
    _as_index,
    _as_rgb,
    _auto_scale,
    _text_metrics,
    _thickness,
    add_title,
    draw_legend,
    overlay,
)  # fmt: skip


def _neutral_frame(image: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """Greyscale, contrast-reduced frame (float32, H x W) that lets false colours stand out."""
    if image is None:
        return np.full(shape, 128.0, dtype=np.float32)
    image = _as_rgb(image)
    if image.shape[:2] != shape:
        raise ValueError(f"image {image.shape[:2]} does not match the label maps {shape}")
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return grey * 0.6 + 50.0


def _hatch(shape: tuple[int, int], period: int = 6) -> np.ndarray:
    """Diagonal stripe mask, used to mark ignored (unlabelled) pixels."""
    yy, xx = np.indices(shape, sparse=True)
    return ((xx + yy) // (period // 2)) % 2 == 0


def comparison(
    pred: np.ndarray | torch.Tensor,
    truth: np.ndarray | torch.Tensor,
    image: np.ndarray | None = None,
    *,
    class_index: int | None = None,
    class_names: Sequence[str] = CLASS_NAMES,
    legend: bool = True,
) -> np.ndarray:
    """False-colour picture of where a prediction and the ground truth disagree (cf. ``imshowpair``).

    Background is the frame in muted greyscale (flat grey without ``image``). Colours follow
    imshowpair: **magenta = what only the prediction says, green = what only the truth says**.

    * All classes (``class_index=None``): agreement stays grey; every labelled pixel predicted as a
      *different class* is magenta (the prediction claims a class the truth does not have there);
      labelled pixels the prediction left as ignore (255) are green (a truth class that was not
      predicted at all). With multi-class masks every error is both a miss of the true class and a
      false alarm of the predicted one, so a single colour is the honest all-class view.
    * One class (``class_index=c``): the binary imshowpair view of class ``c``: magenta = false alarm
      (predicted ``c``, truth another class), green = miss (truth ``c``, predicted otherwise), white =
      hit, grey = agreement on "not ``c``".

    Pixels whose truth is ignore are never judged: they are drawn as dark diagonal hatching. A legend
    explaining the colours is drawn in the bottom-left corner unless ``legend=False``.
    """
    pred_i, truth_i = _as_index(pred), _as_index(truth)
    if pred_i.shape != truth_i.shape:
        raise ValueError(f"prediction {pred_i.shape} and truth {truth_i.shape} differ in shape")
    shape = truth_i.shape
    grey = _neutral_frame(image, shape)
    out = np.repeat(grey[..., None], 3, axis=2)

    ignored = truth_i == IGNORE_INDEX
    judged = ~ignored
    entries: list[tuple[str, tuple[int, int, int]]] = [("agree", (128, 128, 128))]
    if class_index is None:
        magenta = judged & (pred_i != truth_i) & (pred_i != IGNORE_INDEX)
        green = judged & (pred_i == IGNORE_INDEX)
        entries.append(("wrong class", MAGENTA))
        if green.any():
            entries.append(("not predicted", GREEN))
    else:
        name = class_names[class_index] if 0 <= class_index < len(class_names) else f"class {class_index}"
        is_pred, is_true = pred_i == class_index, truth_i == class_index
        hit = judged & is_pred & is_true
        magenta = judged & is_pred & ~is_true
        green = judged & ~is_pred & is_true
        out[hit] = out[hit] * 0.25 + np.float32(HIT_WHITE) * 0.75
        entries = [(f"{name}: hit", HIT_WHITE), (f"{name}: false alarm", MAGENTA), (f"{name}: missed", GREEN)]
        entries.append(("other: agree", (128, 128, 128)))

    for mask, colour in ((magenta, MAGENTA), (green, GREEN)):
        out[mask] = out[mask] * (1.0 - _ERROR_ALPHA) + np.float32(colour) * _ERROR_ALPHA
    if ignored.any():
        dim = grey * 0.35
        hatch = _hatch(shape)
        out[ignored] = np.where(hatch[ignored][:, None], np.float32(HATCH_DARK), dim[ignored][:, None])
    entries.append(("not labelled", HATCH_DARK))

    result = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if legend:
        names = [e[0] for e in entries]
        colours = np.array([e[1] for e in entries], dtype=np.uint8)
        result = draw_legend(result, names, colours, corner="bottom-left")
    return result


def disagreement_rate(pred: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor) -> float:
    """Share of labelled truth pixels where the prediction differs (1 - pixel accuracy); NaN if none."""
    pred_i, truth_i = _as_index(pred), _as_index(truth)
    judged = truth_i != IGNORE_INDEX
    n = int(judged.sum())
    return float((pred_i[judged] != truth_i[judged]).sum() / n) if n else float("nan")


def _legend_strip(width: int, class_names: Sequence[str], palette: np.ndarray, scale: float) -> np.ndarray:
    """Horizontal legend (wrapping onto more rows as needed) to sit under a figure."""
    line, swatch, pad = _text_metrics(scale)
    thickness = _thickness(scale)
    items, x, row = [], pad, 0
    for name, colour in zip(class_names, palette, strict=False):
        item_w = swatch + pad // 2 + cv2.getTextSize(name, _FONT, scale, thickness)[0][0] + 2 * pad
        if x + item_w > width and x > pad:
            x, row = pad, row + 1
        items.append((x, row, name, colour))
        x += item_w
    strip = np.full(((row + 1) * line + pad, width, 3), 255, dtype=np.uint8)
    for x, r, name, colour in items:
        top = pad // 2 + r * line
        cv2.rectangle(strip, (x, top), (x + swatch - 1, top + swatch - 1), tuple(int(c) for c in colour), -1)
        cv2.rectangle(strip, (x, top), (x + swatch - 1, top + swatch - 1), (0, 0, 0), 1)
        text_y = top + swatch - max(1, swatch // 5)
        cv2.putText(
            strip, name, (x + swatch + pad // 2, text_y), _FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA
        )
    return strip


def side_by_side(
    image: np.ndarray,
    pred: np.ndarray | torch.Tensor,
    truth: np.ndarray | torch.Tensor,
    class_names: Sequence[str] = CLASS_NAMES,
    palette: np.ndarray = PALETTE,
    *,
    alpha: float = DEFAULT_ALPHA,
    ncols: int = 2,
    gap: int = 4,
    titles: Sequence[str] | None = None,
) -> np.ndarray:
    """One report picture per frame: frame | truth overlay | prediction overlay | comparison.

    Panels are laid out ``ncols`` per row (2 gives a 2x2 grid that suits wide frames; 4 gives a strip),
    each under a title bar, with a class-colour legend strip underneath. The comparison panel's title
    reports the share of labelled pixels where prediction and truth disagree.
    """
    image = _as_rgb(image)
    pred_i, truth_i = _as_index(pred), _as_index(truth)
    if not (image.shape[:2] == pred_i.shape == truth_i.shape):
        raise ValueError(f"image {image.shape[:2]}, pred {pred_i.shape}, truth {truth_i.shape} differ")
    rate = disagreement_rate(pred_i, truth_i)
    rate_text = "n/a" if np.isnan(rate) else f"{100 * rate:.1f}%"
    default_titles = (
        "frame",
        "ground truth",
        "prediction",
        f"comparison (pred vs truth, {rate_text} differ)",
    )
    titles = default_titles if titles is None else tuple(titles)
    if len(titles) != 4:
        raise ValueError(f"need 4 titles, got {len(titles)}")
    panels = [
        image,
        overlay(image, truth_i, alpha, palette),
        overlay(image, pred_i, alpha, palette),
        comparison(pred_i, truth_i, image, class_names=class_names),
    ]
    scale = _auto_scale(image.shape[0])
    panels = [add_title(p, t, scale) for p, t in zip(panels, titles, strict=True)]
    ncols = max(1, min(4, ncols))
    height, width = panels[0].shape[:2]
    nrows = -(-4 // ncols)
    grid_w = ncols * width + (ncols - 1) * gap
    grid = np.full((nrows * height + (nrows - 1) * gap, grid_w, 3), 255, dtype=np.uint8)
    for i, panel in enumerate(panels):
        r, c = divmod(i, ncols)
        y, x = r * (height + gap), c * (width + gap)
        grid[y : y + height, x : x + width] = panel
    legend = _legend_strip(grid_w, class_names, np.asarray(palette, dtype=np.uint8).reshape(-1, 3), scale)
    return np.concatenate([grid, legend], axis=0)
