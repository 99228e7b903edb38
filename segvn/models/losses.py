"""Training losses beyond plain cross-entropy: OHEM and region-based (Dice, Lovasz) terms.

Street scenes are mostly road, sky and building that the network learns early; the rare, thin
classes (person, fence) are a sliver of the pixels. OHEM (Shrivastava et al. 2016, for segmentation
as in mmsegmentation's ``OHEMPixelSampler``) averages the loss over the hard pixels only: those
whose predicted probability of their true class is below ``thresh``, and never fewer than the
``min_kept`` hardest, so a batch the network already gets right still trains on something.

A region-based term (Dice, Lovasz-softmax; segmentation_models_pytorch's implementations) scores
each class by its overlap as a whole, so a thin class counts as much as the road: cross-entropy
plus such a term is the usual recipe for mean IoU on imbalanced classes.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from segvn.errors import ConfigError

REGION_LOSSES = ("dice", "lovasz")


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


def sample_weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    sample_weight: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = 255,
    class_weighted: torch.Tensor | None = None,
) -> torch.Tensor:
    """``F.cross_entropy``'s class-weighted mean with each frame's pixels also weighted by ``sample_weight``.

    For pseudo-labelled frames beside labelled ones: their pixels count ``sample_weight`` times, and the
    class weights ``weight`` apply only to the frames whose ``class_weighted`` is true (all when it is
    ``None``). With every weight 1 it equals ``F.cross_entropy``.
    """
    ce = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    safe = torch.where(valid, target, 0)
    w = weight.to(ce.dtype)[safe] if weight is not None else torch.ones_like(ce)
    shape = (-1, *([1] * (ce.dim() - 1)))
    if class_weighted is not None:
        w = torch.where(class_weighted.to(torch.bool).view(shape), w, 1.0)
    w = torch.where(valid, w, 0.0) * sample_weight.to(ce.dtype).view(shape)
    return (ce * w).sum() / w.sum().clamp(min=torch.finfo(w.dtype).tiny)


def build_region_loss(name: str, ignore_index: int = 255) -> nn.Module:
    """The multiclass region-based loss ``name`` (one of ``REGION_LOSSES``), called on fp32 logits.

    Lovasz sorts every pixel's error per class, Dice only sums; in practice both cost about the same
    (measured: docs/notes/code_defaults.md).
    """
    if name not in REGION_LOSSES:
        raise ConfigError(f"model.region_loss must be one of {REGION_LOSSES} or null, not {name!r}")
    cls = smp.losses.DiceLoss if name == "dice" else smp.losses.LovaszLoss
    return cls("multiclass", ignore_index=ignore_index, from_logits=True)
