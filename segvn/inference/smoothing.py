"""Optional temporal smoothing of per-frame predictions for video inference.

Per-frame models flicker: a pixel's class can flip between consecutive frames although the scene barely
moved. :class:`TemporalEMA` keeps an exponential moving average of the class probabilities over the
stream, ``avg_t = ema * avg_{t-1} + (1 - ema) * p_t``, which damps such flicker (an alternating signal of
amplitude ``a`` settles at ``a * (1 - ema) / (1 + ema)``). With ``flow_aligned=True`` the running average
is first warped onto the new frame with optical flow, so moving objects are averaged with themselves
instead of smearing into their background. ``ema=0`` turns smoothing off (output = input).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from segvn.errors import ConfigError
from segvn.inference.options import MAX_EMA
from segvn.metrics.temporal import dis_flow, warp_values


class TemporalEMA:
    """Stateful EMA of class probabilities across a video stream (call once per frame, in order).

    ``__call__(probs, flow=None, frame=None)`` takes probabilities ``(C, H, W)`` or ``(B, C, H, W)``; a
    batch is treated as ``B`` consecutive frames, processed in order. With ``flow_aligned``, give for each
    frame either ``flow`` (``(H, W, 2)``, or ``(B, H, W, 2)`` for a batch) that maps the current frame onto
    the previous one, i.e. ``dis_flow(frame_t, frame_t-1)``, or the RGB ``frame`` (``(H, W, 3)``, or
    ``(B, H, W, 3)``) and the flow is computed with DIS against the previous frame. Call :meth:`reset` at
    a cut or a new video; a change of size resets too.
    """

    def __init__(self, ema: float = 0.0, flow_aligned: bool = False) -> None:
        if not 0.0 <= ema <= MAX_EMA:
            raise ConfigError(f"temporal.ema must be in [0, {MAX_EMA}] (0 = off), got {ema}")
        self.ema = float(ema)
        self.flow_aligned = flow_aligned
        self.reset()

    def reset(self) -> None:
        """Forget the running average (and the previous frame)."""
        self._avg: Tensor | None = None
        self._prev_frame: np.ndarray | None = None

    def __call__(
        self, probs: Tensor, flow: Tensor | np.ndarray | None = None, frame: np.ndarray | Tensor | None = None
    ) -> Tensor:
        if self.ema == 0.0:
            return probs
        single = probs.ndim == 3
        batch = probs.unsqueeze(0) if single else probs
        if batch.ndim != 4:
            raise ValueError(f"expected probabilities (C, H, W) or (B, C, H, W), got {tuple(probs.shape)}")
        flows = self._per_item(flow, batch.shape[0], 3)
        frames = self._per_item(frame, batch.shape[0], 3)
        out = torch.stack([self._step(p, f, fr) for p, f, fr in zip(batch, flows, frames, strict=True)])
        return out[0] if single else out

    @staticmethod
    def _per_item(x, n: int, item_ndim: int) -> list:
        if x is None:
            return [None] * n
        if x.ndim == item_ndim:
            if n != 1:
                raise ValueError(f"got one flow/frame for a batch of {n}; give one per frame")
            return [x]
        return list(x)

    def _step(self, probs: Tensor, flow, frame) -> Tensor:
        current = probs.float().unsqueeze(0)
        if frame is not None and self.flow_aligned and flow is None and self._prev_frame is not None:
            flow = dis_flow(frame, self._prev_frame)
        if frame is not None:
            self._prev_frame = (
                frame.detach().cpu().numpy() if isinstance(frame, Tensor) else np.asarray(frame)
            )
        previous = self._avg
        if previous is None or previous.shape != current.shape:
            self._avg = current
            return probs
        if self.flow_aligned:
            if flow is None:
                raise ValueError("flow_aligned smoothing needs a flow or the RGB frame for every frame")
            warped, inside = warp_values(previous, flow)
            previous = torch.where(inside, warped, current)  # no history where the scene just came in
        self._avg = self.ema * previous + (1.0 - self.ema) * current
        return self._avg[0].to(probs.dtype)
