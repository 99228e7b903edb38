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
theta**2``) are read from two 32-bit words with one gather. Boundary pixels are found once per
label map (not per class), and the matching cost scales with the number of boundary pixels,
not with ``classes x pixels``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from segvn.metrics.labels import class_indices

_WORD_BITS = 32
_MAX_SEGMENT = 33  # a window of <= 33 bits starting at bit s <= 31 lies inside two 32-bit words
_CHUNK_ELEMENTS = 1 << 22  # bounds the (queries x segments) temporaries to a few tens of MB
_CHUNK_PIXELS = 1 << 21  # images per call to _bf_scores: about one 1080p frame (memory, cache)


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
        preds = class_indices(preds)
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


def _row_runs(disk: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Runs of consecutive disk rows with equal half-width, as ``(dy_start, height, half_width)``.

    E.g. the 33 rows of ``theta = 16.5`` (a 1080p frame) form 19 runs.
    """
    runs: list[tuple[int, int, int]] = []
    for dy, half_width in disk:
        if runs and runs[-1][2] == half_width:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, half_width)
        else:
            runs.append((dy, 1, half_width))
    return runs


def _lookup_plan(disk: list[tuple[int, int]]) -> list[tuple[int, list[tuple[int, int]]]]:
    """Passes of ``(map height, [(dy, half_width), ...])`` windows that together cover the disk.

    The disk is cut into runs of rows (:func:`_row_runs`). Pass 1 reads the largest run (one
    window per query; most matches are found there); the following passes, for the still
    unmatched queries only, read the other runs, one pass per run height. Only the heights of
    the runs need OR-ed maps (for ``theta = 16.5``: 1, 2 and 9, built in 4 passes).
    """
    runs = _row_runs(disk)
    largest = max(runs, key=lambda run: run[1] * (2 * run[2] + 1))
    plan: dict[int, list[tuple[int, int]]] = {}
    for dy, height, half_width in runs:
        if (dy, height, half_width) != largest:
            plan.setdefault(height, []).append((dy, half_width))
    return [(largest[1], [(largest[0], largest[2])])] + sorted(plan.items(), reverse=True)


def _vertical_or(rows: Tensor, heights: set[int]) -> dict[int, Tensor]:
    """For each height ``L``: ``out[L][r] = rows[r] | ... | rows[r + L - 1]`` (zeros past the end).

    Built by doubling: ``L`` combines two copies of the largest power of two ``a < L`` shifted
    by ``L - a``, so ``L`` costs about ``log2(L)`` passes.
    """
    cache = {1: rows}

    def get(height: int) -> Tensor:
        if height not in cache:
            half = 1 << ((height - 1).bit_length() - 1)
            base, shift = get(half), height - half
            out = torch.empty_like(base)
            out[-shift:] = 0
            torch.bitwise_or(base[:-shift], base[shift:], out=out[:-shift])
            cache[height] = out
        return cache[height]

    return {height: get(height) for height in heights}


def _window_tables(rows: list[tuple[int, int]], row_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Read offsets and bit masks of the windows covering ``(dy, half_width)`` rows of a map.

    Columns ``[-half_width, half_width]`` of row offset ``dy`` are split into <= 33-bit windows.
    Returns ``(32, S)`` tables indexed by the query's bit position in its word: the flat offset
    of the word pair holding each window, and the window's mask within that 64-bit pair.
    """
    bases, offsets, masks = [], [], []
    for dy, half_width in rows:
        start, stop = -half_width, half_width + 1
        while start < stop:
            length = min(_MAX_SEGMENT, stop - start)
            bases.append(dy * row_size)
            offsets.append(start)
            masks.append((1 << length) - 1)
            start += length
    base, offset, mask = (torch.tensor(v, dtype=torch.long, device=device) for v in (bases, offsets, masks))
    start_bit = torch.arange(_WORD_BITS, device=device)[:, None] + offset  # may be < 0
    return base + (start_bit >> 5), mask << (start_bit & (_WORD_BITS - 1))  # >> 5: floor division


def _lookup(pairs: Tensor, base: Tensor, in_word: Tensor, word_delta: Tensor, bit_masks: Tensor) -> Tensor:
    """Whether any window of each query holds a set bit (chunked to bound the temporaries)."""
    out = torch.empty(base.shape, dtype=torch.bool, device=base.device)
    step = max(1, _CHUNK_ELEMENTS // word_delta.shape[1])
    for start in range(0, base.numel(), step):
        b = in_word[start : start + step]
        index = base[start : start + step, None] + word_delta[b]
        out[start : start + step] = (pairs[index] & bit_masks[b]).any(dim=1)
    return out


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


def _match_other_map(rows: Tensor, xs: Tensor, blocks: int, h: int, w: int, theta_sq: float) -> Tensor:
    """For each boundary pixel, whether the other map has a boundary pixel in the open disk.

    ``rows`` indexes rows ``(map, image, class, y)`` of two stacked boundary maps (map 0 truth,
    map 1 prediction) of ``blocks = 2 * images * classes`` blocks of ``h`` rows; ``xs`` are
    columns.

    The maps are bit-packed into 32-bit words (int64 storage), padded by the disk's reach so
    no read leaves the buffer, and each word is stored with its right neighbour above it so a
    window of up to 33 bits starting anywhere in a word is one 64-bit read. With
    ``x = 32 * a + b``, the word offset and bit mask of a window depend only on ``(b, window)``
    (:func:`_window_tables`), leaving a gather, an add, a gather, an and and an any per query
    and window. Windows are read from maps whose rows are OR-ed over a window's height, in
    passes (:func:`_lookup_plan`): every query reads the largest rectangle inside the disk,
    which settles most matches; only the rest read the remaining runs of disk rows.
    """
    device = xs.device
    matched = torch.zeros(xs.shape, dtype=torch.bool, device=device)
    disk = disk_row_half_widths(theta_sq)
    if not disk or xs.numel() == 0:
        return matched
    reach_y, reach_x = len(disk) // 2, disk[len(disk) // 2][1]
    padded_h = h + 2 * reach_y
    words = (w + 2 * reach_x - 1) // _WORD_BITS + 2
    rows = rows + (rows // h) * (2 * reach_y) + reach_y  # rows of the vertically padded maps
    cols = xs + reach_x
    in_word = cols & (_WORD_BITS - 1)
    packed = torch.zeros(blocks * padded_h * words, dtype=torch.long, device=device)
    packed.index_put_((rows * words + (cols >> 5),), torch.ones_like(cols) << in_word, accumulate=True)
    packed = packed.view(-1, words)
    pairs = packed[:, :-1] | (packed[:, 1:] << _WORD_BITS)  # word k | word k + 1 << 32
    row_size = words - 1

    plan = _lookup_plan(disk)
    maps = _vertical_or(pairs, {height for height, _ in plan})

    # Each boundary pixel reads the *other* map: shift its row by half the blocks.
    half = blocks // 2 * padded_h
    base = (rows + torch.where(rows < half, half, -half)) * row_size + (cols >> 5)
    for i, (height, windows) in enumerate(plan):
        tables = _window_tables(windows, row_size, device)
        buffer = maps[height].reshape(-1)
        if i == 0:
            matched = _lookup(buffer, base, in_word, *tables)
        else:
            todo = (~matched).nonzero().squeeze(1)
            matched[todo] = _lookup(buffer, base[todo], in_word[todo], *tables)
    return matched


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
    step = max(1, _CHUNK_PIXELS // max(1, h * w))
    parts = [
        _bf_scores(preds[i : i + step], target[i : i + step], num_classes, ignore_index, tolerance)
        for i in range(0, n, step)
    ]
    if not parts:
        return torch.empty(0, num_classes, dtype=float_dtype(target.device), device=target.device)
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _bf_scores(
    preds: Tensor, target: Tensor, num_classes: int, ignore_index: int | None, tolerance: float
) -> Tensor:
    """:func:`bf_score_per_class` of a batch of ``(N, H, W)`` index maps, all at once."""
    n, h, w = target.shape
    device = target.device
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    # Map 0 holds the truth boundaries, map 1 the predicted ones.
    labels = torch.cat(
        [_masked_labels(target, valid, num_classes), _masked_labels(preds, valid, num_classes)]
    )
    image_idx, ys, xs = boundary_map(labels).nonzero(as_tuple=True)  # image_idx = map * n + image
    key = image_idx * num_classes + labels[image_idx, ys, xs].long()  # (map, image, class)

    theta = tolerance * math.hypot(h, w)
    groups = 2 * n * num_classes
    matched = _match_other_map(key * h + ys, xs, groups, h, w, theta * theta)
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
    ``class_names`` is kept for reports (``self.class_names``); it does not change the values.
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
