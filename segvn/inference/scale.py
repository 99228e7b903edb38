"""At which size a trained model sees frames: the training-scale default of predict, visualize, evaluate.

A model trained on frames resized to ``data.image_size`` (say 64x96) has learnt objects at that scale;
run on a 540x960 video frame at full size it sees everything ten times larger than in training. So
``image_size`` defaults to the *training scale*: each frame is resized so that its short side equals
the training short side, rounded to the network's output stride (16 for DeepLabV3+ OS16) and keeping
the frame's aspect ratio; outputs are brought back to the frame size. The model size therefore depends
on the frame size, and :class:`ScaleRule` computes it per batch.

The ``image_size`` setting (:func:`resolve_image_size`):

* ``null`` (default): the training scale (:class:`ScaleRule`), or the native frame size when the
  checkpoint was trained at native size (its ``data.image_size`` is null); rule ``training-scale`` /
  ``native``;
* ``native``: the frame size (padded to the stride inside the network); rule ``native``;
* ``[h, w]``: that size for every frame; rule ``explicit``; a warning when its short side differs from
  the training short side by more than 1.5x.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from omegaconf import ListConfig

from segvn.data.yuv import I420Frame, image_size, resize_interpolation
from segvn.errors import ConfigError
from segvn.models.factory import network_of

log = logging.getLogger(__name__)

SCALE_WARN_RATIO = 1.5
"""An explicit size whose short side is this much larger or smaller than the training one is warned about."""

RULES = ("training-scale", "native", "explicit", "data")


@dataclass(frozen=True)
class ScaleRule:
    """Resize a frame so that its short side is ``short_side`` (aspect kept), sides multiples of ``stride``."""

    short_side: int
    stride: int = 16

    def __call__(self, height: int, width: int) -> tuple[int, int]:
        scale = self.short_side / min(height, width)
        return self._round(height * scale), self._round(width * scale)

    def _round(self, side: float) -> int:
        return max(self.stride, int(round(side / self.stride)) * self.stride)

    def __str__(self) -> str:
        return f"short side {self.short_side} (multiples of {self.stride})"


@dataclass(frozen=True)
class ImageSizeChoice:
    """What :func:`resolve_image_size` decided: ``size`` is ``None`` (native), ``(h, w)`` or a ScaleRule."""

    size: ScaleRule | tuple[int, int] | None
    rule: str

    def for_frame(self, height: int, width: int) -> tuple[int, int]:
        """The model input size for a frame of ``height`` x ``width``."""
        if self.size is None:
            return height, width
        if isinstance(self.size, ScaleRule):
            return self.size(height, width)
        return self.size

    def describe(self) -> str:
        if self.size is None:
            return "frame size (native)"
        if isinstance(self.size, ScaleRule):
            return f"training scale: {self.size}"
        return "x".join(map(str, self.size))


def training_size(stored_config: Any) -> tuple[int, int] | None:
    """The ``data.image_size`` a checkpoint was trained at, or ``None`` (native frames)."""
    data = stored_config.get("data") if stored_config is not None else None
    size = data.get("image_size") if data is not None else None
    if size is None:
        return None
    h, w = (int(v) for v in size)
    return h, w


def model_stride(module: Any, default: int = 32) -> int:
    """The side multiple the network needs: ``SegmentationNetwork.stride`` (16 for DeepLabV3+ OS16)."""
    net = network_of(module)
    stride = getattr(net, "stride", None)
    if stride is None:
        stride = getattr(getattr(net, "encoder", None), "output_stride", default)
    return int(stride)


def _is_native(setting: Any) -> bool:
    return isinstance(setting, str) and setting.strip().lower() in ("native", "frame", "full")


def parse_size(setting: Any, name: str = "image_size") -> tuple[int, int]:
    """A validated ``(height, width)`` from ``[h, w]``; :class:`ConfigError` naming the setting otherwise."""
    if isinstance(setting, str) or not isinstance(setting, Sequence | ListConfig):
        raise ConfigError(
            f"{name} must be null (the training scale), native (the frame size) or [height, width], "
            f"got {setting!r}"
        )
    try:
        size = tuple(int(v) for v in setting)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name} must be [height, width] of whole numbers, got {list(setting)}") from err
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"{name} must be [height, width] with positive sides, got {list(size)}")
    return size  # type: ignore[return-value]


def resolve_image_size(setting: Any, trained: tuple[int, int] | None, stride: int) -> ImageSizeChoice:
    """The ``image_size`` setting (null | native | [h, w]) against the training size (see module docstring)."""
    if setting is None:
        if trained is None:
            return ImageSizeChoice(None, "native")
        return ImageSizeChoice(ScaleRule(min(trained), stride), "training-scale")
    if _is_native(setting):
        return ImageSizeChoice(None, "native")
    size = parse_size(setting)
    if trained is not None:
        ratio = min(size) / min(trained)
        if ratio > SCALE_WARN_RATIO or ratio < 1 / SCALE_WARN_RATIO:
            log.warning(
                "image_size=%s: short side %d is %.1fx the training short side %d (trained at %s); "
                "objects look %s to the model than in training. Leave image_size unset for the training "
                "scale",
                list(size), min(size), ratio, min(trained), "x".join(map(str, trained)),
                "larger" if ratio > 1 else "smaller",
            )  # fmt: skip
    return ImageSizeChoice(size, "explicit")


SizeSetting = Callable[[int, int], tuple[int, int]] | tuple[int, int] | None
"""A model input size: ``None`` (the frame's), ``(h, w)``, or a rule ``(H, W) -> (h, w)`` such as
:class:`ScaleRule` or :meth:`ImageSizeChoice.for_frame`."""


def resize_frame(frame: np.ndarray | I420Frame, size: tuple[int, int]) -> np.ndarray:
    """An RGB uint8 frame (or I420, resized before it is converted) as RGB uint8 ``(h, w, 3)`` of ``size``.

    OpenCV on uint8: ``INTER_AREA`` when shrinking (it averages, so fine detail does not alias),
    ``INTER_LINEAR`` otherwise (:func:`~segvn.data.yuv.resize_interpolation`).
    """
    h, w = size
    if isinstance(frame, I420Frame):
        return frame.to_rgb((h, w))
    if frame.shape[:2] == (h, w):
        return frame
    return cv2.resize(frame, (w, h), interpolation=resize_interpolation((h, w), frame.shape[:2]))


class FrameResizer:
    """Batches of frames of one size brought to the model's input size: the one resize path of
    ``segvn.predict`` (:class:`~segvn.inference.predictor.Predictor`) and ``segvn.evaluate``.

    Resizes before the frames become tensors, with :func:`resize_frame` (uint8, OpenCV, I420 planes
    resized before conversion): on the CPU that is the cheap place, and the batch that travels to
    the device is the small uint8 one. ``sizes_used`` maps each frame size seen to the model input size
    it got; the first time a frame size is seen it is logged.
    """

    def __init__(self, size: SizeSetting = None) -> None:
        self.size = size
        self.sizes_used: dict[tuple[int, int], tuple[int, int]] = {}

    def model_size(self, height: int, width: int) -> tuple[int, int]:
        """The size the model sees a ``height`` x ``width`` frame at."""
        if self.size is None:
            return height, width
        if callable(self.size):
            h, w = self.size(height, width)
            return int(h), int(w)
        return int(self.size[0]), int(self.size[1])

    def __call__(self, frames: Sequence[np.ndarray | I420Frame]) -> np.ndarray:
        """RGB uint8 ``(B, h, w, 3)``: the frames (RGB ``(H, W, 3)`` or I420, one size) at the model's size."""
        height, width = image_size(frames[0])
        h, w = self.model_size(height, width)
        if (height, width) not in self.sizes_used:
            self.sizes_used[(height, width)] = (h, w)
            log.info("frames of %dx%d go through the model at %dx%d", height, width, h, w)
        return np.stack([resize_frame(f, (h, w)) for f in frames])


__all__ = [
    "FrameResizer",
    "ImageSizeChoice",
    "ScaleRule",
    "model_stride",
    "parse_size",
    "resize_frame",
    "resolve_image_size",
    "training_size",
]
