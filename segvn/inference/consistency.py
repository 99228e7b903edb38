"""Temporal consistency of a predicted video, measured while it streams.

TC (:class:`segvn.metrics.TemporalConsistency`, Liu et al. 2020) compares every pair of consecutive
frames' labels through OpenCV's DIS optical flow. Flow on full-size frames with the ``medium``
preset costs more than drawing and encoding together, so frames and labels are first scaled by
``tc_scale`` (default 0.5) and the flow uses the ``ultrafast`` preset (``tc_flow``): nearly the same TC
at a fraction of the time, while ``tc_scale=0.25`` reads visibly lower, so it is not the default
(measured: docs/notes/code_defaults.md).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from segvn.data.classes import IGNORE_INDEX
from segvn.data.yuv import I420Frame
from segvn.metrics.temporal import TemporalConsistency, dis_flow

"""Errors of an input file (truncated video, unreadable image): the input ends there, outputs are kept."""

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


class TemporalTracker:
    """TC over consecutive frames of one video, at ``scale`` of the frame size (see the module docstring)."""

    def __init__(self, num_classes: int, scale: float = 0.5, flow: str = "ultrafast") -> None:
        self.metric = TemporalConsistency(num_classes, IGNORE_INDEX)
        self.scale = float(scale)
        self.preset = DIS_PRESETS[flow]
        self.pairs = 0
        self._prev: tuple[np.ndarray, torch.Tensor] | None = None

    def _small(self, image: np.ndarray | I420Frame, labels: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        # I420: the luma plane is the grey frame (BT.601 luma in limited range, COLOR_RGB2GRAY's scaled to
        # 16-235: the same motion for the flow)
        grey = image.grey if isinstance(image, I420Frame) else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if self.scale != 1.0:
            h, w = labels.shape
            size = (max(8, round(w * self.scale)), max(8, round(h * self.scale)))
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
            labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
        return grey, torch.from_numpy(np.ascontiguousarray(labels))

    def add(self, image: np.ndarray | I420Frame, labels: np.ndarray) -> None:
        """The next frame of the video (RGB or I420) and its label map; compared with the previous one."""
        grey, lab = self._small(image, labels)
        if self._prev is not None:
            prev_grey, prev_lab = self._prev
            self.metric.update(prev_lab, lab, dis_flow(prev_grey, grey, self.preset))
            self.pairs += 1
        self._prev = (grey, lab)

    @property
    def value(self) -> float | None:
        tc = float(self.metric.compute()) if self.pairs else float("nan")
        return tc if math.isfinite(tc) else None

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        return self.metric.intersection.numpy().copy(), self.metric.union.numpy().copy()
