"""Temporal consistency (TC) of video predictions, after Liu et al. 2020, "Efficient Semantic Video
Segmentation with Per-frame Inference" (ECCV).

For consecutive frames ``t, t+1`` the prediction of ``t+1`` is warped back onto frame ``t`` with optical
flow and compared with the prediction of ``t``: a temporally stable model predicts the same class for the
same scene point. Intersection and union per class are summed over all pairs (and devices);
``TC = mean over classes with union > 0 of sum(I) / sum(U)``. Pixels that the flow carries outside the
frame, or that are ``ignore_index`` in either map, are left out.

Flow convention (OpenCV's): ``flow = dis_flow(a, b)`` satisfies ``a[y, x] ~ b[y + fy, x + fx]`` with
``flow[..., 0] = fx``, ``flow[..., 1] = fy`` in pixels; :func:`warp_labels`/:func:`warp_values` with that
flow bring values of ``b`` onto the pixel grid of ``a``.

A leaf module: torch, torchmetrics, numpy and OpenCV only.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from segvn.metrics.labels import class_indices

FlowLike = Tensor | np.ndarray


def _gray(frame: np.ndarray | Tensor) -> np.ndarray:
    frame = frame.detach().cpu().numpy() if isinstance(frame, Tensor) else np.asarray(frame)
    if frame.ndim == 3 and frame.shape[2] == 3:
        frame = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    if frame.ndim != 2:
        raise ValueError(f"expected an RGB (H, W, 3) or grey (H, W) frame, got shape {frame.shape}")
    return np.ascontiguousarray(frame, dtype=np.uint8)


def dis_flow(
    frame_a: np.ndarray | Tensor,
    frame_b: np.ndarray | Tensor,
    preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
) -> np.ndarray:
    """Dense optical flow ``(H, W, 2)`` float32 with OpenCV's DIS on grey frames: ``a(x) ~ b(x + flow(x))``.

    Frames are uint8 RGB ``(H, W, 3)`` or grey ``(H, W)``. Pass ``(next, prev)`` to align a running state
    of the previous frame with the next one; ``(prev, next)`` to warp the next prediction back onto ``prev``.
    """
    a, b = _gray(frame_a), _gray(frame_b)
    if a.shape != b.shape:
        raise ValueError(f"frames differ in size: {a.shape} vs {b.shape}")
    return cv2.DISOpticalFlow_create(preset).calc(a, b, None)


def _flow_tensor(flow: FlowLike, batch: int, height: int, width: int, device: torch.device) -> Tensor:
    flow = torch.as_tensor(flow, device=device, dtype=torch.float32)
    if flow.ndim == 3:
        flow = flow.unsqueeze(0)
    if flow.shape[1:] != (height, width, 2) or flow.shape[0] not in (1, batch):
        raise ValueError(f"flow must be ([B,] {height}, {width}, 2), got {tuple(flow.shape)}")
    return flow.expand(batch, -1, -1, -1)


def _source_coords(flow: Tensor) -> tuple[Tensor, Tensor]:
    """Absolute sampling positions ``x + fx``, ``y + fy`` for a ``(B, H, W, 2)`` flow."""
    _, h, w, _ = flow.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype),
        torch.arange(w, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    return xs + flow[..., 0], ys + flow[..., 1]


def warp_labels(labels: Tensor, flow: FlowLike, ignore_index: int = 255) -> Tensor:
    """Nearest-neighbour backward warp of label maps ``(H, W)`` or ``(B, H, W)``: ``out(x) = labels(x + flow(x))``.

    Pixels whose source lies outside the frame get ``ignore_index``. ``uint8`` maps on the CPU go through
    ``cv2.remap`` (the same labels, both round half to even, at a tenth of the time of the gather).
    """
    squeeze = labels.ndim == 2
    lab = labels.unsqueeze(0) if squeeze else labels
    b, h, w = lab.shape
    if lab.device.type == "cpu" and lab.dtype == torch.uint8 and 0 <= ignore_index <= 255:
        flows = _flow_tensor(flow, b, h, w, lab.device).numpy()
        out = _remap_labels(lab.numpy(), flows, ignore_index)
        return torch.from_numpy(out[0] if squeeze else out)
    x, y = _source_coords(_flow_tensor(flow, b, h, w, lab.device))
    xi, yi = torch.round(x).long(), torch.round(y).long()
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    flat = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).reshape(b, -1)
    out = torch.gather(lab.reshape(b, -1), 1, flat).reshape(b, h, w)
    out = torch.where(inside, out, torch.full_like(out, ignore_index))
    return out[0] if squeeze else out


@functools.lru_cache(maxsize=4)
def _pixel_grid(height: int, width: int) -> np.ndarray:
    """``(H, W, 2)`` float32 pixel coordinates ``(x, y)``, kept for the next frame of a video (read-only)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    grid = np.ascontiguousarray(np.stack([xs, ys], axis=-1))
    grid.flags.writeable = False
    return grid


def _remap_labels(labels: np.ndarray, flow: np.ndarray, ignore_index: int) -> np.ndarray:
    """:func:`warp_labels` of ``(B, H, W)`` uint8 maps with ``cv2.remap``.

    One two-channel map (grid + flow, as the flow is laid out) costs half the time of separate x and
    y maps cut from the flow's channels (measured: docs/notes/code_defaults.md).
    """
    _, h, w = labels.shape
    grid = _pixel_grid(h, w)
    return np.stack([
        cv2.remap(
            np.ascontiguousarray(lab), grid + f, None, cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT, borderValue=ignore_index,
        )
        for lab, f in zip(labels, flow, strict=True)
    ])  # fmt: skip


def warp_values(values: Tensor, flow: FlowLike) -> tuple[Tensor, Tensor]:
    """Bilinear backward warp of ``(B, C, H, W)`` maps (e.g. class probabilities).

    Returns the warped maps and a ``(B, 1, H, W)`` bool mask of pixels whose source lies inside the frame.
    """
    b, _, h, w = values.shape
    x, y = _source_coords(_flow_tensor(flow, b, h, w, values.device))
    grid = torch.stack((2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1), dim=-1)
    warped = F.grid_sample(values.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    inside = ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).unsqueeze(1)
    return warped.to(values.dtype), inside


def _as_labels(pred: Tensor) -> Tensor:
    """``(H, W)``/``(B, H, W)`` class indices, or ``(B, C, H, W)`` scores reduced by argmax."""
    if pred.ndim == 4:
        return class_indices(pred)
    if pred.ndim == 2:
        return pred.unsqueeze(0)
    if pred.ndim == 3 and not pred.is_floating_point():
        return pred
    raise ValueError(f"expected labels (H, W)/(B, H, W) or scores (B, C, H, W), got {tuple(pred.shape)}")


def _joint_histogram(prev: Tensor, nxt: Tensor, c: int) -> Tensor:
    """The ``c x c`` count of (prev, next) class pairs; pixels outside ``[0, c)`` in either map are left out.

    One joint histogram (a confusion matrix) gives intersection and union at once. ``uint8`` maps on
    the CPU (what ``segvn.predict`` streams) go through ``cv2.calcHist``: the same counts at a twentieth
    of the time of the int64 ``bincount`` (measured: docs/notes/code_defaults.md); it counts in float32,
    exact below 2**24 pixels per map.
    """
    h, w = prev.shape[-2:]
    if prev.device.type == "cpu" and prev.dtype == nxt.dtype == torch.uint8 and h * w < 2**24:
        joint = sum(
            cv2.calcHist([a, b], [0, 1], None, [c, c], [0, c, 0, c])
            for a, b in zip(prev.numpy(), nxt.numpy(), strict=True)
        )
        return torch.from_numpy(np.asarray(joint, dtype=np.int64))
    prev, nxt = prev.long(), nxt.long()
    valid = (prev >= 0) & (prev < c) & (nxt >= 0) & (nxt < c)
    pairs = torch.where(valid, prev * c + nxt, c * c)  # invalid pixels: a dropped extra bin, no host sync
    return torch.bincount(pairs.flatten(), minlength=c * c + 1)[: c * c].view(c, c)


class TemporalConsistency(Metric):
    """TC: mean over classes of the flow-aligned IoU between consecutive predictions (see module docstring).

    ``update(prev_pred, next_pred, flow)`` takes predictions of frames ``t`` and ``t+1`` (labels or scores,
    batched pairs allowed) and ``flow = dis_flow(frame_t, frame_t1)``; ``flow=None`` compares without motion
    compensation. :meth:`update_frames` computes the DIS flow from the frames for you.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        zeros = torch.zeros(num_classes, dtype=torch.long)
        self.add_state("intersection", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("union", default=zeros.clone(), dist_reduce_fx="sum")

    def update(self, prev_pred: Tensor, next_pred: Tensor, flow: FlowLike | None = None) -> None:
        prev, nxt = _as_labels(prev_pred), _as_labels(next_pred)
        if prev.shape != nxt.shape:
            raise ValueError(f"prediction shapes differ: {tuple(prev.shape)} vs {tuple(nxt.shape)}")
        if flow is not None:
            nxt = warp_labels(nxt, flow, self.ignore_index)
        joint = _joint_histogram(prev, nxt, self.num_classes)
        inter = joint.diagonal()
        self.intersection += inter
        self.union += joint.sum(0) + joint.sum(1) - inter

    def update_frames(
        self,
        prev_frame: np.ndarray | Tensor,
        next_frame: np.ndarray | Tensor,
        prev_pred: Tensor,
        next_pred: Tensor,
    ) -> np.ndarray:
        """Compute the DIS flow between two RGB frames, update with it, and return the flow."""
        flow = dis_flow(prev_frame, next_frame)
        self.update(prev_pred, next_pred, flow)
        return flow

    def per_class(self) -> Tensor:
        """``sum(I) / sum(U)`` per class (NaN where a class never occurred)."""
        union = self.union.double()
        return torch.where(union > 0, self.intersection.double() / union.clamp(min=1), torch.nan)

    def compute(self) -> Tensor:
        """TC in [0, 1]; NaN before any pixel was compared."""
        return self.per_class().nanmean()
