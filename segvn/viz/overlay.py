"""Pictures of label maps on video frames: colour overlays, legends, prediction-vs-truth comparisons.

Everything here is plain numpy/cv2 so it is fast enough to run on every frame of a 1080p video; the
images are RGB ``uint8`` arrays of shape (H, W, 3) and label maps are (H, W) class indices with
``IGNORE_INDEX`` (255) for unlabelled pixels.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from segvn.data.classes import CLASS_NAMES, IGNORE_INDEX, PALETTE
from segvn.data.yuv import I420Frame, as_rgb, i420_planes, image_size

DEFAULT_ALPHA = 0.4
"""Overlay transparency of the thesis figures (MATLAB ``labeloverlay`` default)."""

# Comparison colours (RGB). Magenta/green follow MATLAB's imshowpair false colour: magenta is what only
# the prediction says, green is what only the ground truth says.
MAGENTA = (255, 0, 255)
GREEN = (0, 255, 0)
HIT_WHITE = (245, 245, 245)
HATCH_DARK = (25, 25, 25)
_ERROR_ALPHA = 0.75


def _as_index(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    """Label map as uint8; values outside 0..255 become ``IGNORE_INDEX``."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a label map of shape (H, W), got {labels.shape}")
    if labels.dtype == np.uint8:
        return labels
    if labels.size and labels.min() >= 0 and labels.max() <= 255:  # common case: cheap cast
        return labels.astype(np.uint8)
    return np.where((labels < 0) | (labels > 255), IGNORE_INDEX, labels).astype(np.uint8)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return image


def _colour_lut(palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """256-entry colour table and 'is a class' flags for index maps."""
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if len(palette) > IGNORE_INDEX:
        raise ValueError(f"at most {IGNORE_INDEX} classes fit in a uint8 label map, got {len(palette)}")
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = palette
    valid = np.zeros(256, dtype=bool)
    valid[: len(palette)] = True
    return lut, valid


def overlay(
    image_rgb: np.ndarray,
    labels: np.ndarray | torch.Tensor,
    alpha: float = DEFAULT_ALPHA,
    palette: np.ndarray = PALETTE,
) -> np.ndarray:
    """Blend class colours onto a frame: ``out = (1 - alpha) * image + alpha * colour``.

    This is MATLAB's ``labeloverlay`` convention used in the thesis (alpha 0.4). Pixels whose label is
    not a class of ``palette`` (ignore / unlabelled) keep the frame unchanged. Rounds to nearest.
    """
    image = _as_rgb(image_rgb)
    index = _as_index(labels)
    if index.shape != image.shape[:2]:
        raise ValueError(f"labels {index.shape} do not match image {image.shape[:2]}")
    lut, valid = _colour_lut(palette)
    # cv2.LUT and cv2.copyTo are much faster than numpy fancy indexing / np.copyto at 1080p.
    image, index = np.ascontiguousarray(image), np.ascontiguousarray(index)
    colour = cv2.LUT(cv2.merge([index, index, index]), lut.reshape(256, 1, 3))
    out = cv2.addWeighted(image, 1.0 - alpha, colour, alpha, 0.0)
    if index.max(initial=0) < int(valid.sum()):  # every pixel has a class (any prediction): done
        return out
    unlabelled = cv2.LUT(index, np.where(valid, 0, 255).astype(np.uint8))
    return cv2.copyTo(image, unlabelled, out)


def overlay_torch(
    images: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = DEFAULT_ALPHA,
    palette: np.ndarray = PALETTE,
) -> torch.Tensor:
    """Batched :func:`overlay` on any device: images (B, 3, H, W) uint8, labels (B, H, W) -> (B, 3, H, W) uint8."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if labels.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"labels {tuple(labels.shape)} do not match images {tuple(images.shape)}")
    lut_np, valid_np = _colour_lut(palette)
    lut = torch.as_tensor(lut_np, dtype=torch.float32, device=images.device)
    valid = torch.as_tensor(valid_np, device=images.device)
    index = labels.long()
    index = torch.where((index < 0) | (index > 255), IGNORE_INDEX, index)
    colour = lut[index].permute(0, 3, 1, 2)
    frame = images.float()
    blended = frame * (1.0 - alpha) + colour * alpha
    out = torch.where(valid[index].unsqueeze(1), blended, frame)
    return out.round_().clamp_(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------------------------- legend
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _auto_scale(height: int) -> float:
    """Font scale that stays readable from 360p to 2160p."""
    return float(np.clip(height / 900.0, 0.35, 1.6))


def _text_metrics(scale: float) -> tuple[int, int, int]:
    """(line height, swatch size, padding) in pixels for a font scale."""
    (_, text_h), baseline = cv2.getTextSize("Ag", _FONT, scale, 1)
    line = text_h + baseline + max(2, int(round(6 * scale)))
    swatch = text_h + baseline
    pad = max(3, int(round(8 * scale)))
    return line, swatch, pad


def _thickness(scale: float) -> int:
    return max(1, int(round(scale * 1.6)))


def legend_box(
    image_shape: Sequence[int],
    class_names: Sequence[str],
    *,
    corner: str = "top-right",
    scale: float | None = None,
    margin: int | None = None,
) -> tuple[int, int, int, int]:
    """Pixel box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) that :func:`draw_legend` will paint."""
    height, width = int(image_shape[0]), int(image_shape[1])
    scale = _auto_scale(height) if scale is None else scale
    line, swatch, pad = _text_metrics(scale)
    margin = pad if margin is None else margin
    text_w = max((cv2.getTextSize(n, _FONT, scale, _thickness(scale))[0][0] for n in class_names), default=0)
    box_w = pad + swatch + pad + text_w + pad
    box_h = pad + line * len(class_names) + pad // 2
    if corner not in ("top-left", "top-right", "bottom-left", "bottom-right"):
        raise ValueError(f"corner must be top-left, top-right, bottom-left or bottom-right, got {corner!r}")
    x0 = margin if corner.endswith("left") else width - margin - box_w
    y0 = margin if corner.startswith("top") else height - margin - box_h
    x0, y0 = max(0, x0), max(0, y0)
    return x0, y0, min(width, x0 + box_w), min(height, y0 + box_h)


def _colours(palette: np.ndarray | Sequence[Sequence[int]], count: int) -> np.ndarray:
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if len(colours) < count:
        raise ValueError(f"{count} names but only {len(colours)} colours")
    return colours


def draw_legend(
    image: np.ndarray,
    class_names: Sequence[str] = CLASS_NAMES,
    palette: np.ndarray | Sequence[Sequence[int]] = PALETTE,
    *,
    corner: str = "top-right",
    scale: float | None = None,
    margin: int | None = None,
    box_alpha: float = 0.6,
) -> np.ndarray:
    """Return a copy of ``image`` with a colour legend (swatch + name per class) in one corner.

    Drawn with cv2 on a translucent dark box so it costs well under a millisecond per video frame.
    Only pixels inside :func:`legend_box` change. ``scale`` defaults to one derived from the height.
    """
    out = _as_rgb(image).copy()
    _colours(palette, len(class_names))
    scale = _auto_scale(out.shape[0]) if scale is None else scale
    x0, y0, x1, y1 = legend_box(out.shape, class_names, corner=corner, scale=scale, margin=margin)
    if x1 > x0 and y1 > y0:
        paint_legend(out[y0:y1, x0:x1], class_names, palette, scale, box_alpha)
    return out


def paint_legend(
    region: np.ndarray,
    class_names: Sequence[str],
    palette: np.ndarray | Sequence[Sequence[int]],
    scale: float,
    box_alpha: float = 0.6,
) -> None:
    """Paint the legend into ``region``, the view of the :func:`legend_box` of an RGB image (in place)."""
    colours = _colours(palette, len(class_names))
    region[:] = (region.astype(np.float32) * (1.0 - box_alpha)).round().astype(np.uint8)
    line, swatch, pad = _text_metrics(scale)
    thickness = _thickness(scale)
    # Draw on the region view so nothing (anti-aliasing included) can leak outside the box.
    for i, (name, colour) in enumerate(zip(class_names, colours, strict=False)):
        top = pad + i * line
        cv2.rectangle(
            region, (pad, top), (pad + swatch - 1, top + swatch - 1), tuple(int(c) for c in colour), -1
        )
        cv2.rectangle(region, (pad, top), (pad + swatch - 1, top + swatch - 1), (255, 255, 255), 1)
        baseline_y = top + swatch - max(1, swatch // 5)
        cv2.putText(
            region,
            name,
            (2 * pad + swatch, baseline_y),
            _FONT,
            scale,
            (255, 255, 255),
            thickness,
            cv2.LINE_AA,
        )


# ----------------------------------------------------------------------------------------- comparison
# ---------------------------------------------------------------------------------------- side by side
def add_title(panel: np.ndarray, title: str, scale: float | None = None) -> np.ndarray:
    """Return ``panel`` (RGB uint8) with a white title bar of black text on top."""
    scale = _auto_scale(panel.shape[0]) if scale is None else scale
    line, _, pad = _text_metrics(scale)
    bar = np.full((line + pad, panel.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(bar, title, (pad, line), _FONT, scale, (0, 0, 0), _thickness(scale), cv2.LINE_AA)
    return np.concatenate([bar, _as_rgb(panel)], axis=0)


# ------------------------------------------------------------------------------------------------ I420
@functools.lru_cache(maxsize=8)
def _i420_luts(palette: bytes) -> tuple[np.ndarray, ...]:
    """Y, U and V of each RGB class colour as 256-entry tables, from OpenCV's own RGB -> I420 conversion."""
    luts = tuple(np.zeros(256, np.uint8) for _ in range(3))
    for k, colour in enumerate(np.frombuffer(palette, dtype=np.uint8).reshape(-1, 3)):
        swatch = cv2.cvtColor(np.full((2, 2, 3), colour, np.uint8), cv2.COLOR_RGB2YUV_I420).reshape(-1)
        luts[0][k], luts[1][k], luts[2][k] = swatch[0], swatch[4], swatch[5]
    return luts


def overlay_i420(
    image: np.ndarray | I420Frame,
    labels: np.ndarray | torch.Tensor,
    alpha: float = DEFAULT_ALPHA,
    palette: np.ndarray = PALETTE,
) -> np.ndarray:
    """:func:`overlay`, returned as I420 ``(3H/2, W)`` (what H.264 encoders take); even H and W only.

    ``image`` is RGB, converted first, or an :class:`~segvn.data.yuv.I420Frame` straight from the
    decoder. The colours are blended in YUV: the conversion is affine, so the blend commutes with it and
    luma equals the RGB overlay's (within rounding); chroma takes each 2x2 block's top-left label, as
    OpenCV's conversion takes its top-left pixel. Per video frame it costs a fifth of drawing in RGB and
    converting (measured: docs/notes/code_defaults.md).
    """
    index = _as_index(labels)
    height, width = index.shape
    if not isinstance(image, I420Frame):
        image = _as_rgb(image)
    if image_size(image) != index.shape:
        raise ValueError(f"labels {index.shape} do not match image {image_size(image)}")
    if height % 2 or width % 2:
        raise ValueError(f"I420 needs an even frame size, got {width}x{height}")
    lut, valid = _colour_lut(palette)
    if isinstance(image, I420Frame):
        yuv = image.yuv.copy()
    else:
        yuv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YUV_I420)
    half = np.ascontiguousarray(index[::2, ::2])
    frame = yuv.copy() if index.max(initial=0) >= int(valid.sum()) else None
    indices = (index, half, half)
    for plane, table, idx in zip(
        i420_planes(yuv, height, width), _i420_luts(lut.tobytes()), indices, strict=True
    ):
        cv2.addWeighted(plane, 1.0 - alpha, cv2.LUT(idx, table), alpha, 0.0, dst=plane)
    if frame is None:  # every pixel has a class (any prediction): done
        return yuv
    keep = np.where(valid, 0, 255).astype(np.uint8)  # pixels of no class keep the frame
    planes = zip(i420_planes(yuv, height, width), i420_planes(frame, height, width), indices, strict=True)
    for plane, orig, idx in planes:
        cv2.copyTo(orig, cv2.LUT(idx, keep), plane)
    return yuv


class OverlayDrawer:
    """Overlay (alpha blend of the class colours) plus an optional legend, as written to videos and PNGs."""

    def __init__(
        self,
        class_names: Sequence[str],
        alpha: float = DEFAULT_ALPHA,
        legend: bool = True,
        corner: str = "top-right",
    ) -> None:
        from segvn.data.classes import palette_for

        self.class_names = list(class_names)
        self.palette = palette_for(len(self.class_names))
        self.alpha = float(alpha)
        self.legend = bool(legend)
        self.corner = corner

    def __call__(self, image: np.ndarray | I420Frame, labels: np.ndarray) -> np.ndarray:
        """The picture in RGB (an I420 frame is converted first)."""
        out = overlay(as_rgb(image), labels, self.alpha, self.palette)
        if self.legend:
            out = draw_legend(out, self.class_names, self.palette, corner=self.corner)
        return out

    def i420(self, image: np.ndarray | I420Frame, labels: np.ndarray) -> np.ndarray:
        """The same picture as I420 ``(3H/2, W)`` for a video encoder (even H and W; see :func:`overlay_i420`).

        ``image`` is RGB or an :class:`~segvn.data.yuv.I420Frame`. The legend is drawn in RGB on the
        even-aligned block around its box, which then replaces that block of the planes, so text and
        swatches look as in :meth:`__call__`.
        """
        yuv = overlay_i420(image, labels, self.alpha, self.palette)
        if not self.legend:
            return yuv
        height, width = image_size(image)
        scale = _auto_scale(height)
        x0, y0, x1, y1 = legend_box((height, width), self.class_names, corner=self.corner, scale=scale)
        if x1 <= x0 or y1 <= y0:
            return yuv
        bx0, by0, bx1, by1 = x0 - x0 % 2, y0 - y0 % 2, x1 + x1 % 2, y1 + y1 % 2
        under = (
            image.crop(by0, by1, bx0, bx1).to_rgb()
            if isinstance(image, I420Frame)
            else image[by0:by1, bx0:bx1]
        )
        block = overlay(under, labels[by0:by1, bx0:bx1], self.alpha, self.palette)
        paint_legend(block[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0], self.class_names, self.palette, scale)
        h, w = block.shape[:2]
        for plane, part, step in zip(
            i420_planes(yuv, height, width),
            i420_planes(cv2.cvtColor(block, cv2.COLOR_RGB2YUV_I420), h, w),
            (1, 2, 2),
            strict=True,
        ):
            plane[by0 // step : by1 // step, bx0 // step : bx1 // step] = part
        return yuv


def prediction_picture(
    image: np.ndarray, pred: np.ndarray, class_names: Sequence[str], alpha: float = DEFAULT_ALPHA
) -> np.ndarray:
    """The frame beside the prediction overlaid on it, with a colour legend of the classes."""
    shown = overlay(image, pred, alpha, PALETTE)
    scale = float(np.clip(image.shape[0] / 800.0, 0.35, 1.2))
    shown = draw_legend(shown, class_names, PALETTE, corner="top-right", scale=scale)
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    panels = np.concatenate([image, gap, shown], axis=1)
    return add_title(panels, "frame | prediction", scale)
