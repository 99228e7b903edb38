"""Online hard example mining (OHEM) for the pixel-wise cross-entropy.

Street scenes are mostly road, sky and building that the network learns early; the rare, thin
classes (person, fence) are a sliver of the pixels. OHEM (Shrivastava et al. 2016, for segmentation
as in mmsegmentation's ``OHEMPixelSampler``) averages the loss over the hard pixels only: those
whose predicted probability of their true class is below ``thresh``, and never fewer than the
``min_kept`` hardest, so a batch the network already gets right still trains on something.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = 255,
    thresh: float = 0.7,
    min_kept: int = 100_000,
) -> torch.Tensor:
    """Class-weighted cross-entropy averaged over the hard labelled pixels (see the module docstring).

    The average is weighted like ``F.cross_entropy``'s: sum of ``weight[y] * ce`` over the kept
    pixels divided by the sum of their ``weight[y]``. With ``thresh=1`` every labelled pixel is
    kept and the result equals ``F.cross_entropy``.
    """
    ce = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    with torch.no_grad():
        safe = torch.where(valid, target, 0)
        prob = logits.detach().float().softmax(dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
        prob = torch.where(valid, prob, torch.inf)  # ignored pixels are never hard
        count = int(valid.sum())
        limit = torch.tensor(float(thresh), device=prob.device)
        if 0 < min_kept < count:  # the min_kept-th lowest probability raises the threshold if needed
            limit = torch.maximum(limit, prob.flatten().kthvalue(min_kept).values)
        kept = valid & (prob <= limit)
        w = weight[safe] if weight is not None else torch.ones_like(prob)
        w = torch.where(kept, w, 0.0)
    return (ce * kept).sum() / w.sum().clamp(min=torch.finfo(w.dtype).tiny)
