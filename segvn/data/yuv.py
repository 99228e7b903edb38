"""Video frames kept as the decoder gives them (I420), converted to RGB only where RGB is needed.

H.264 decodes to I420 (YUV 4:2:0 planar). ``segvn.predict`` needs little of a frame in RGB at its full
size: the model sees it at the training scale (resize the planes, then convert a quarter of the pixels),
temporal consistency needs grey (the Y plane as it is), and the overlay video is encoded as I420 again
(the class colours are blended into a copy of the planes). So the decode thread hands on
:class:`I420Frame` s and skips FFmpeg's full-size RGB conversion; a 960x540 frame is also half the bytes
(0.78 vs 1.56 MB) in the queues.

Only BT.601 limited-range frames (or untagged ones, which FFmpeg treats the same) are kept in I420: that
is the conversion OpenCV implements (``COLOR_YUV2RGB_I420``, within 1-3 levels of FFmpeg's, which
interpolates chroma); readers give RGB for anything else (:func:`is_bt601_i420`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

BT601_COLORSPACES = frozenset({2, 5, 6})
"""FFmpeg ``AVColorSpace`` values OpenCV's I420 conversion is right for: unspecified, BT470BG, SMPTE170M."""

LIMITED_RANGES = frozenset({0, 1})
"""FFmpeg ``AVColorRange`` values: unspecified (FFmpeg assumes limited for YUV) and MPEG (limited)."""


def is_bt601_i420(pix_fmt: str, colorspace: int, color_range: int, width: int, height: int) -> bool:
    """Whether a decoded frame converts exactly as :meth:`I420Frame.to_rgb` does (8-bit 4:2:0, BT.601, even)."""
    return (
        pix_fmt == "yuv420p"
        and colorspace in BT601_COLORSPACES
        and color_range in LIMITED_RANGES
        and width % 2 == 0
        and height % 2 == 0
    )


@dataclass(frozen=True, eq=False)
class I420Frame:
    """One frame as I420 uint8 ``yuv`` of shape ``(3H/2, W)``: Y (H, W), then U and V (H/2, W/2); even sides."""

    yuv: np.ndarray

    def __post_init__(self) -> None:
        yuv = self.yuv
        # (3H/2, W) with H even: the rows are a multiple of 3
        if yuv.ndim != 2 or yuv.dtype != np.uint8 or yuv.shape[0] % 3 or yuv.shape[1] % 2:
            raise ValueError(f"I420 needs uint8 (3H/2, W) with even H and W, got {yuv.dtype} {yuv.shape}")
        if not yuv.flags.c_contiguous:
            raise ValueError("I420 needs a contiguous buffer (the planes follow each other)")

    @classmethod
    def from_rgb(cls, rgb: np.ndarray) -> I420Frame:
        """The I420 of an RGB uint8 ``(H, W, 3)`` image of even sides (OpenCV's BT.601 conversion)."""
        return cls(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420))

    @property
    def height(self) -> int:
        return self.yuv.shape[0] * 2 // 3

    @property
    def width(self) -> int:
        return self.yuv.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the picture."""
        return self.height, self.width

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of the Y ``(H, W)``, U and V ``(H/2, W/2)`` planes."""
        return i420_planes(self.yuv, self.height, self.width)

    @property
    def grey(self) -> np.ndarray:
        """The luma plane ``(H, W)``: the frame in grey, without a conversion."""
        return self.yuv[: self.height]

    def to_rgb(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """RGB uint8 ``(h, w, 3)`` at ``size`` (default: the frame's; even sides), resized before converting.

        Shrinking resizes each plane with ``INTER_AREA`` and converts the small planes; the result matches
        converting first and resizing after within a few levels, at a fraction of the time.
        """
        h, w = size or self.size
        if (h, w) == self.size:
            return cv2.cvtColor(self.yuv, cv2.COLOR_YUV2RGB_I420)
        if h % 2 or w % 2:
            return cv2.resize(self.to_rgb(), (w, h), interpolation=resize_interpolation((h, w), self.size))
        interp = resize_interpolation((h, w), self.size)
        small = np.empty((h * 3 // 2, w), np.uint8)
        for src, dst, step in zip(self.planes(), i420_planes(small, h, w), (1, 2, 2), strict=True):
            cv2.resize(src, (w // step, h // step), dst=dst, interpolation=interp)
        return cv2.cvtColor(small, cv2.COLOR_YUV2RGB_I420)

    def crop(self, top: int, bottom: int, left: int, right: int) -> I420Frame:
        """The block ``[top:bottom, left:right]`` (even bounds) as a new frame."""
        if any(v % 2 for v in (top, bottom, left, right)):
            raise ValueError(f"I420 crops need even bounds, got {(top, bottom, left, right)}")
        h, w = bottom - top, right - left
        out = np.empty((h * 3 // 2, w), np.uint8)
        for src, dst, step in zip(self.planes(), i420_planes(out, h, w), (1, 2, 2), strict=True):
            dst[:] = src[top // step : bottom // step, left // step : right // step]
        return I420Frame(out)


def i420_planes(yuv: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y (H, W), U and V (H/2, W/2) planes of an I420 buffer (3H/2, W)."""
    flat, n = yuv.reshape(-1), height * width
    return (
        flat[:n].reshape(height, width),
        flat[n : n + n // 4].reshape(height // 2, width // 2),
        flat[n + n // 4 :].reshape(height // 2, width // 2),
    )


def image_size(image: np.ndarray | I420Frame) -> tuple[int, int]:
    """``(height, width)`` of an RGB array or an :class:`I420Frame`."""
    return image.size if isinstance(image, I420Frame) else (image.shape[0], image.shape[1])


def as_rgb(image: np.ndarray | I420Frame) -> np.ndarray:
    """The image as an RGB array (an :class:`I420Frame` converted; an array as it is)."""
    return image.to_rgb() if isinstance(image, I420Frame) else image


def resize_interpolation(target: tuple[int, int], source: tuple[int, int]) -> int:
    """``INTER_AREA`` when shrinking both sides (no aliasing), else ``INTER_LINEAR``."""
    shrink = target[0] < source[0] and target[1] < source[1]
    return cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
