"""Boundary F1 (BF) score with MATLAB ``bfscore`` / ``evaluateSemanticSegmentation`` semantics.

For each image and class, the boundary of a mask is its pixels that have a 4-neighbour outside
the mask (pixels on the image border count as boundary). A boundary pixel *matches* when some
boundary pixel of the other mask lies at squared Euclidean distance ``< theta**2``, with
``theta = tolerance * hypot(H, W)``. Precision and recall are the matched fractions of the
predicted and true boundary pixels, and ``BF = 2PR / (P + R)``: NaN when either boundary is
empty, 0 when nothing matches.

The computation is pure torch and runs on the inputs' device. Instead of a distance transform
per class, the matching test is a lookup in bit-packed boundary maps: for a query pixel
``(y, x)`` and each row offset ``dy`` of the tolerance disk, the other mask's boundary bits in
columns ``[x - w(dy), x + w(dy)]`` (``w(dy)`` the largest integer with ``w**2 + dy**2 <
theta**2``) are read from two 32-bit words with one gather. The cost scales with the number of
boundary pixels, not with ``classes x pixels``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

_WORD_BITS = 32
_MAX_SEGMENT = 33  # a window of <= 33 bits starting at bit s <= 31 lies inside two 32-bit words
_CHUNK_ELEMENTS = 1 << 22  # bounds the (queries x segments) temporaries to a few tens of MB


def float_dtype(device: torch.device) -> torch.dtype:
    """float64 for exact ratios, except on devices without it (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def as_class_indices(preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Bring ``preds`` to ``(N, H, W)`` integer class indices matching ``target`` ``(N, H, W)``.

    ``preds`` may be indices of the target's shape or scores with an extra class dimension 1
    (argmax taken). A single ``(H, W)`` image is accepted and given a batch dimension.
    """
    if target.ndim == 2:
        target = target[None]
        preds = preds[None]
    if target.ndim != 3:
        raise ValueError(f"target must be (N, H, W) or (H, W), got shape {tuple(target.shape)}")
    if preds.ndim == target.ndim + 1:
        preds = preds.argmax(dim=1)
    elif preds.is_floating_point():
        raise ValueError("preds of the target's shape must hold integer class indices, got floats")
    if preds.shape != target.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} do not match")
    return preds, target


def disk_row_half_widths(theta_sq: float) -> list[tuple[int, int]]:
    """``(dy, w)`` for every row of the open disk ``dx**2 + dy**2 < theta_sq`` on the integer grid.

    ``w`` is the largest ``dx >= 0`` in the disk for that ``dy``. Since ``dx**2 + dy**2`` is an
    integer, ``< theta_sq`` is the same as ``<= ceil(theta_sq) - 1``, which makes the strict
    inequality exact (a distance of exactly ``theta`` does not match).
    """
    limit = math.ceil(theta_sq) - 1
    if limit < 0:
        return []
    reach = math.isqrt(limit)
    return [(dy, math.isqrt(limit - dy * dy)) for dy in range(-reach, reach + 1)]


def _segments(theta_sq: float, device: torch.device) -> tuple[Tensor, Tensor, Tensor, int, int]:
    """Row offsets, column offsets and bit masks of disk row windows split into <= 33-bit pieces."""
    rows, offsets, masks = [], [], []
    for dy, w in disk_row_half_widths(theta_sq):
        start, stop = -w, w + 1
        while start < stop:
            length = min(_MAX_SEGMENT, stop - start)
            rows.append(dy)
            offsets.append(start)
            masks.append((1 << length) - 1)
            start += length
    reach_y = max((abs(r) for r in rows), default=0)
    reach_x = max((-o for o in offsets), default=0)

    def as_tensor(values: list[int]) -> Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    return as_tensor(rows), as_tensor(offsets), as_tensor(masks), reach_y, reach_x


def boundary_map(labels: Tensor) -> Tensor:
    """Boundary pixels of every class in a label map, as a bool map of the same shape.

    ``labels`` is ``(N, H, W)`` with negative values meaning "in no mask" (ignored or out of
    range). A pixel is boundary when its label is ``>= 0`` and it lies on the image border or a
    4-neighbour has a different label; the boundary of class ``c`` is then
    ``boundary_map(labels) & (labels == c)``.
    """
    edge = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    vertical = labels[:, 1:, :] != labels[:, :-1, :]
    edge[:, 1:, :] |= vertical
    edge[:, :-1, :] |= vertical
    horizontal = labels[:, :, 1:] != labels[:, :, :-1]
    edge[:, :, 1:] |= horizontal
    edge[:, :, :-1] |= horizontal
    edge[:, 0, :] = True
    edge[:, -1, :] = True
    edge[:, :, 0] = True
    edge[:, :, -1] = True
    return edge & (labels >= 0)


def _masked_labels(labels: Tensor, valid: Tensor, num_classes: int) -> Tensor:
    """Labels as int16/int32 with ignored and out-of-range pixels set to -1."""
    dtype = torch.int16 if num_classes < 2**15 else torch.int32
    keep = valid & (labels >= 0) & (labels < num_classes)
    return torch.where(keep, labels.to(dtype), -1)


def bf_score_per_class(
    preds: Tensor,
    target: Tensor,
    num_classes: int,
    ignore_index: int | None = 255,
    tolerance: float = 0.0075,
) -> Tensor:
    """BF score of every image and class, ``(N, C)`` float (NaN where a boundary is empty).

    Args:
        preds: ``(N, H, W)`` class indices or ``(N, C, H, W)`` scores (argmax over dim 1).
        target: ``(N, H, W)`` class indices; ``ignore_index`` pixels are outside both masks.
        num_classes: number of classes ``C``.
        ignore_index: truth value of pixels to leave out, or None.
        tolerance: match distance as a fraction of the image diagonal.
    """
    preds, target = as_class_indices(preds, target)
    n, h, w = target.shape
    device = target.device
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    # Map 0 holds the truth boundaries, map 1 the predicted ones.
    labels = torch.stack([_masked_labels(target, valid, num_classes), _masked_labels(preds, valid, num_classes)])
    labels = labels.view(2 * n, h, w)
    map_idx, ys, xs = boundary_map(labels).nonzero(as_tuple=True)
    cls = labels[map_idx, ys, xs].long()
    src = map_idx // n  # 0: truth boundary pixel, 1: predicted boundary pixel
    img = map_idx % n

    theta = tolerance * math.hypot(h, w)
    seg_rows, seg_offsets, seg_masks, reach_y, reach_x = _segments(theta * theta, device)

    # Bit-packed boundary maps, shape (2, N, C, H + 2 * reach_y, words), padded so that every
    # window read below stays in bounds and reads zeros outside the image.
    padded_h = h + 2 * reach_y
    words = (w + 2 * reach_x - 1) // _WORD_BITS + 2
    row = ((src * n + img) * num_classes + cls) * padded_h + ys + reach_y
    col = xs + reach_x
    packed = torch.zeros(2 * n * num_classes * padded_h * words, dtype=torch.long, device=device)
    bits = torch.ones_like(col) << (col % _WORD_BITS)
    packed.index_put_((row * words + col // _WORD_BITS,), bits, accumulate=True)  # distinct bits: sum == or
    packed = packed.view(-1, words)
    pairs = (packed[:, :-1] | (packed[:, 1:] << _WORD_BITS)).reshape(-1)  # word k and k + 1 in one int64
    pair_words = words - 1

    # Each boundary pixel looks up the *other* map: shift its row index by one map.
    map_rows = n * num_classes * padded_h
    query_row = row + torch.where(src == 0, map_rows, -map_rows)
    matched = torch.zeros_like(col, dtype=torch.bool)
    if seg_rows.numel() > 0:
        step = max(1, _CHUNK_ELEMENTS // seg_rows.numel())
        for start in range(0, col.numel(), step):
            q_row = query_row[start : start + step, None] + seg_rows
            q_col = col[start : start + step, None] + seg_offsets
            window = pairs[q_row * pair_words + q_col // _WORD_BITS] >> (q_col % _WORD_BITS)
            matched[start : start + step] = ((window & seg_masks) != 0).any(dim=1)

    groups = 2 * n * num_classes
    key = (src * n + img) * num_classes + cls
    total = torch.bincount(key, minlength=groups).view(2, n, num_classes)
    hits = torch.bincount(torch.where(matched, key, groups), minlength=groups + 1)[:groups]
    hits = hits.view(2, n, num_classes)
    dtype = float_dtype(device)
    recall = hits[0].to(dtype) / total[0]
    precision = hits[1].to(dtype) / total[1]
    score = 2 * precision * recall / (precision + recall)
    score = torch.where((precision + recall) == 0, torch.zeros_like(score), score)
    return torch.where((total[0] == 0) | (total[1] == 0), torch.full_like(score, math.nan), score)


def bf_summary(scores: Tensor) -> dict[str, Tensor]:
    """Class, image and dataset means of an ``(N, C)`` BF score matrix, ignoring NaN.

    The dataset ``mean_bf_score`` is the mean over images of each image's mean over classes
    (MATLAB's definition), not the mean of the class means.
    """
    image = scores.nanmean(dim=1)
    return {
        "mean_bf_score": image.nanmean(),
        "class_bf_score": scores.nanmean(dim=0),
        "image_bf_score": image,
        "bf_scores": scores,
    }


class BFScore(Metric):
    """Boundary F1 score (MATLAB ``bfscore`` semantics), accumulated over images.

    State is the ``(N, C)`` matrix of per-image, per-class scores (``cat`` across processes),
    so every summary is exact under DDP. ``compute()`` returns ``mean_bf_score`` (scalar),
    ``class_bf_score`` ``(C,)``, ``image_bf_score`` ``(N,)`` and ``bf_scores`` ``(N, C)``.
    Classes missing from an image's truth or prediction are NaN there and left out of means.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        tolerance: float = 0.0075,
        class_names: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"got {len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.tolerance = tolerance
        self.class_names = tuple(class_names) if class_names is not None else None
        self.add_state("bf_scores", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add the scores of a batch: ``preds`` ``(B, H, W)`` indices or ``(B, C, H, W)`` scores."""
        self.bf_scores.append(
            bf_score_per_class(preds, target, self.num_classes, self.ignore_index, self.tolerance)
        )

    def compute(self) -> dict[str, Tensor]:
        """Dataset, class and image means (NaN-ignoring) plus the raw ``(N, C)`` scores."""
        return bf_summary(dim_zero_cat(self.bf_scores))
