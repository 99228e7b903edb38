"""Batched inference of a segmentation model on raw RGB frames: labels and class shares per frame.

:class:`Predictor` is the model half of ``segvn.predict``: it takes a batch of frames as they come out of
a video decoder (RGB ``uint8``, or the decoder's I420 planes, :mod:`segvn.data.yuv`), optionally resizes
them to the model's input size (models trained at a low resolution are run on 1080p video this way; I420
planes are resized before they are converted; :class:`~segvn.inference.scale.FrameResizer`), moves them
to the device as ``uint8`` (the network normalises them itself), runs the network, applies an optional
temporal smoothing hook (:class:`~segvn.inference.smoothing.TemporalEMA`), takes the labels of the scores
brought back to the frame size (bilinear; :func:`~segvn.inference.upsample.upsampled_labels` computes
that argmax without resizing every class map) and returns the label maps and the share of each class
per frame. It keeps count
of the frames and seconds it spent, which is the *model-only* speed that ``segvn.predict`` reports.

No drawing and no I/O here (that is :mod:`segvn.inference.video`), so it is as fast on a GPU as on a
CPU and usable from a notebook (``segvn.load_model`` builds one as ``segvn.predict`` does)::

    predictor = Predictor(model_from_checkpoint(load_checkpoint(path)), "auto", image_size=(270, 480))
    result = predictor([rgb0, rgb1, rgb2, rgb3])   # result.labels (4, H, W) uint8, result.shares (4, C)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segvn.data.yuv import I420Frame, image_size
from segvn.errors import ConfigError
from segvn.inference.device import pick_device
from segvn.inference.scale import FrameResizer
from segvn.inference.smoothing import TemporalEMA
from segvn.inference.upsample import upsampled_labels
from segvn.models.tta import predict_logits

log = logging.getLogger(__name__)

Image = np.ndarray | I420Frame
"""A frame the predictor takes: RGB uint8 ``(H, W, 3)``, or I420 straight from the decoder."""


def check_image_size(size: Sequence[int] | None) -> tuple[int, int] | None:
    """``None`` or a validated ``(height, width)``."""
    if size is None:
        return None
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(
            f"image_size must be [height, width] with positive sides (or null), got {list(size)}"
        )
    return size  # type: ignore[return-value]


@dataclass(frozen=True)
class BatchPrediction:
    """Per-frame results of one batch: ``labels`` (B, H, W) uint8 at the frames' size, ``shares`` (B, C)."""

    labels: np.ndarray
    shares: np.ndarray
    margin: np.ndarray | None = None
    """Per frame, the mean over pixels of top-1 minus top-2 class probability (``uncertainty=True`` only):
    low where the model hesitates between two classes; pre-labelling ranks frames by it."""
    probabilities: np.ndarray | None = None
    """``(B, C, H, W)`` float32 class probabilities at the frames' size (``probabilities=True`` only): the
    softmax of the bilinearly resized scores, so their argmax is ``labels``."""


class Predictor:
    """Run a segmentation model on batches of RGB ``uint8`` frames of one size (see the module docstring).

    ``model(images)`` takes RGB 0-255 ``(B, 3, h, w)`` (``uint8`` here) and must return logits
    ``(B, C, h, w)`` at the input size (segvn's ``SegModule`` does, for any size). ``image_size=(h, w)``
    resizes the frames before the model (:class:`~segvn.inference.scale.FrameResizer`)
    and upsamples the scores back, so labels always match the frames; a callable ``(H, W) -> (h, w)``
    (a :class:`~segvn.inference.scale.ScaleRule`, the training-scale default of ``segvn.predict``)
    picks the size per batch from the frame size. ``sizes_used`` maps each frame size seen to the
    model input size it got. ``smoother`` (a
    :class:`TemporalEMA`) sees the class probabilities at the model's resolution, together with the
    resized frames when it is flow-aligned; ``ema=0`` (or ``None``) is skipped entirely, so the output
    is exactly the unsmoothed one. Call :meth:`reset` between videos.
    """

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "auto",
        image_size: Sequence[int] | Callable[[int, int], tuple[int, int]] | None = None,
        smoother: TemporalEMA | None = None,
        num_classes: int | None = None,
        uncertainty: bool = False,
        tta_flip: bool = False,
    ) -> None:
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.image_size = image_size if callable(image_size) else check_image_size(image_size)
        self.resizer = FrameResizer(self.image_size)
        self.smoother = smoother if smoother is not None and smoother.ema > 0 else None
        self.num_classes = num_classes or len(getattr(model, "class_names", ())) or None
        self.uncertainty = uncertainty
        self.tta_flip = tta_flip
        self.frames = 0
        self.seconds = 0.0
        self.workers = 1  # threads that may call it at once (segvn.predict's model_workers; no smoother)
        self._clock = threading.Lock()  # the counters, when several threads call the predictor at once
        self._busy, self._since = 0, 0.0
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def _start(self) -> None:
        with self._clock:
            if self._busy == 0:
                self._since = time.perf_counter()
            self._busy += 1

    def _stop(self, frames: int) -> None:
        """Count ``frames``; ``seconds`` grows by the time at least one call was running (wall clock)."""
        with self._clock:
            self._busy -= 1
            self.frames += frames
            if self._busy == 0:
                self.seconds += time.perf_counter() - self._since

    @property
    def fps(self) -> float:
        """Model-only frames per second so far (NaN before the first batch)."""
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    def reset(self) -> None:
        """Start a new video: forget the smoother's history (the timing counters stay)."""
        if self.smoother is not None:
            self.smoother.reset()

    def reset_timing(self) -> None:
        self.frames, self.seconds = 0, 0.0

    @property
    def sizes_used(self) -> dict[tuple[int, int], tuple[int, int]]:
        """Each frame size seen and the model input size it got."""
        return self.resizer.sizes_used

    @sizes_used.setter
    def sizes_used(self, value: dict[tuple[int, int], tuple[int, int]]) -> None:
        self.resizer.sizes_used = value

    def model_size(self, height: int, width: int) -> tuple[int, int]:
        """The size the model sees a ``height`` x ``width`` frame at."""
        return self.resizer.model_size(height, width)

    @torch.inference_mode()
    def __call__(self, frames: Sequence[Image], probabilities: bool = False) -> BatchPrediction:
        """Labels and class shares of a batch of frames of one size, in order: RGB uint8 ``(H, W, 3)``
        arrays or :class:`~segvn.data.yuv.I420Frame` s (as ``open_video(..., i420=True)`` decodes them);
        with ``probabilities`` their class probabilities too."""
        if len(frames) == 0:
            raise ValueError("empty batch")
        size = image_size(frames[0])
        rgb_ok = all(isinstance(f, I420Frame) or (f.ndim == 3 and f.shape[2] == 3) for f in frames)
        if not rgb_ok or any(image_size(f) != size for f in frames):
            shapes = [f.size if isinstance(f, I420Frame) else f.shape for f in frames]
            raise ValueError(f"a batch needs RGB frames (H, W, 3) or I420 frames of one size, got {shapes}")
        self._start()
        done = 0
        try:
            out = self._predict(frames, probabilities)
            done = len(frames)
            return out
        finally:
            self._stop(done)

    def _predict(self, frames: Sequence[Image], probabilities: bool = False) -> BatchPrediction:
        height, width = image_size(frames[0])
        small = self.resizer(frames)
        x = torch.from_numpy(small).to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # uint8 0-255
        scores = predict_logits(self.model, x.contiguous(), self.tta_flip)
        if self.smoother is not None:
            flow_frames = small if self.smoother.flow_aligned else None
            scores = self.smoother(scores.float().softmax(dim=1), frame=flow_frames)
        margin = None
        if self.uncertainty:  # at the model's resolution: cheap, and upsampling adds nothing
            probs = scores.float().softmax(dim=1) if self.smoother is None else scores.float()
            top2 = probs.topk(2, dim=1).values
            margin = (top2[:, 0] - top2[:, 1]).mean(dim=(1, 2)).cpu().numpy()
        labels = upsampled_labels(scores, (height, width))  # argmax of the bilinear resize, exactly
        probs = None
        if probabilities:  # smoothed scores are probabilities already
            full = F.interpolate(scores.float(), size=(height, width), mode="bilinear", align_corners=False)
            probs = (full if self.smoother is not None else full.softmax(dim=1)).cpu().numpy()
        num_classes = self.num_classes or scores.shape[1]
        # per frame on uint8: much faster on the CPU than one bincount of int64 labels offset per frame
        counts = torch.stack([torch.bincount(frame.flatten(), minlength=num_classes) for frame in labels])
        shares = counts.double() / (height * width)
        return BatchPrediction(labels.cpu().numpy(), shares.cpu().numpy(), margin, probs)
