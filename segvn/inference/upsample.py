"""Label maps at the frame size from scores at the model's size: the argmax of the bilinear resize, fast.

A model run at 270x480 on 960x540 video gives scores four times smaller than the frame. The labels
users see are ``argmax(bilinear(scores))``, but resizing every class map to the frame and taking the
argmax there is a visible share of a frame's time on a CPU (docs/notes/code_defaults.md). Most of
that work is wasted: a
bilinear sample is a convex combination of its four source pixels, so where all four have the same
argmax class the sample has it too (``sum w_i s_c(i) >= sum w_i s_k(i)`` for every class ``k``).
:func:`upsampled_labels` resizes the cheap label map instead (a gather) and computes the bilinear scores
only where the 2x2 source block holds more than one class: the class boundaries, a few percent of the
pixels. The result is ``F.interpolate(scores, size, mode="bilinear", align_corners=False)`` followed by
the argmax, up to float rounding at exact ties.
"""

from __future__ import annotations

import torch
from torch import Tensor

from segvn.metrics import class_indices


def _taps(n_in: int, n_out: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per output index, the first source index and the weight of the next, as PyTorch's bilinear has them."""
    scale = torch.tensor(n_in / n_out, dtype=torch.float32)
    src = ((torch.arange(n_out, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_(min=0)
    first = src.long().clamp_(max=n_in - 1)
    return first.to(device), (src - first).clamp_(max=1).to(device)


def _spans(first: Tensor, n_in: int, sources: Tensor) -> tuple[Tensor, Tensor]:
    """Output indices whose first source index is each of ``sources``: ``(n, R)`` indices and validity."""
    every = torch.arange(n_in, device=first.device)
    start = torch.searchsorted(first, every)
    count = torch.searchsorted(first, every, right=True) - start
    offsets = torch.arange(max(int(count.max()), 1), device=first.device)
    index = start[sources, None] + offsets
    return index.clamp_(max=len(first) - 1), offsets < count[sources, None]


def _mixed_blocks(low: Tensor) -> Tensor:
    """``(B, h, w)`` bool: the block ``[i, i+1] x [j, j+1]`` (clamped at the edges) holds two classes or more."""
    down = torch.cat([low[:, 1:], low[:, -1:]], dim=1)
    right = torch.cat([low[:, :, 1:], low[:, :, -1:]], dim=2)
    diagonal = torch.cat([down[:, :, 1:], down[:, :, -1:]], dim=2)
    return (low != down) | (low != right) | (low != diagonal)


def upsampled_labels(scores: Tensor, size: tuple[int, int]) -> Tensor:
    """``(B, H, W)`` uint8 labels of ``scores`` ``(B, C, h, w)`` resized bilinearly to ``size`` (see the module)."""
    _, classes, h, w = scores.shape
    height, width = size
    if classes > 256:
        raise ValueError(f"uint8 labels hold at most 256 classes, got {classes}")
    low = class_indices(scores).to(torch.uint8)
    if (h, w) == (height, width):
        return low
    y0, fy = _taps(h, height, scores.device)
    x0, fx = _taps(w, width, scores.device)
    labels = low.index_select(1, y0).index_select(2, x0)
    b, i, j = _mixed_blocks(low).nonzero(as_tuple=True)  # source blocks of two classes or more
    if len(b) == 0:
        return labels
    rows, row_ok = _spans(y0, h, i)  # (n, R): the output rows and columns each block covers
    cols, col_ok = _spans(x0, w, j)
    i1, j1 = (i + 1).clamp_(max=h - 1), (j + 1).clamp_(max=w - 1)
    s = scores.float().permute(0, 2, 3, 1)  # (B, h, w, C) view: a class vector per corner
    wx, wy = fx[cols].unsqueeze(-1), fy[rows][:, :, None, None]
    top = s[b, i, j][:, None] * (1 - wx) + s[b, i, j1][:, None] * wx  # (n, Rc, C), PyTorch's order
    bottom = s[b, i1, j][:, None] * (1 - wx) + s[b, i1, j1][:, None] * wx
    fine = class_indices(top[:, None] * (1 - wy) + bottom[:, None] * wy, dim=3).to(torch.uint8)
    ok = row_ok[:, :, None] & col_ok[:, None, :]
    where = (b[:, None, None] * height + rows[:, :, None]) * width + cols[:, None]
    labels.view(-1).index_put_((where.masked_select(ok),), fine.masked_select(ok))
    return labels
