"""Confusion-matrix metrics with MATLAB ``evaluateSemanticSegmentation`` parity.

``CM[i, j]`` counts pixels of truth ``i`` predicted ``j`` over all images, leaving out pixels
whose truth is ``ignore_index``. From it: global accuracy ``trace / sum``; class accuracy
``CM[c, c] / row_c``; class IoU ``CM[c, c] / (row_c + col_c - CM[c, c])`` on the dataset-wide
matrix (not averaged over images); weighted IoU ``sum_c row_c IoU_c / sum_c row_c``.

Classes absent from the truth have NaN class values. With ``absent="omit"`` (mmsegmentation and
older MATLAB) they are left out of the means; with ``absent="nan"`` (current MATLAB) the means
become NaN. Per-image metrics always leave out the classes absent from that image's truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import rank_zero_warn
from torchmetrics.utilities.data import dim_zero_cat

from segvn.metrics.boundary import as_class_indices, bf_score_per_class, bf_summary, float_dtype

ABSENT_MODES = ("omit", "nan")


def confusion_matrices(
    preds: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255
) -> Tensor:
    """Per-image confusion matrices ``(N, C, C)`` int64 (rows truth, columns prediction).

    ``preds`` is ``(N, H, W)`` class indices or ``(N, C, H, W)`` scores (argmax over dim 1).
    One ``bincount`` on the inputs' device; ignored pixels go to a spill bin that is dropped,
    which avoids a data-dependent (host-syncing) boolean selection.
    """
    preds, target = as_class_indices(preds, target)
    n = target.shape[0]
    preds, target = preds.reshape(n, -1).long(), target.reshape(n, -1).long()
    cells = num_classes * num_classes
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    image = torch.arange(n, device=target.device)[:, None] * (cells + 1)
    index = image + torch.where(valid, target * num_classes + preds, cells)
    counts = torch.bincount(index.reshape(-1), minlength=n * (cells + 1))
    return counts.view(n, cells + 1)[:, :cells].reshape(n, num_classes, num_classes)


def _check_labels(preds: Tensor, target: Tensor, num_classes: int, ignore_index: int | None) -> None:
    """Raise if a truth value or a prediction on a non-ignored pixel is not a class index."""
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    if bool((valid & ((target < 0) | (target >= num_classes))).any()):
        raise ValueError(
            f"target has values outside [0, {num_classes}) other than ignore_index={ignore_index}"
        )
    if bool((valid & ((preds < 0) | (preds >= num_classes))).any()):
        raise ValueError(f"preds has values outside [0, {num_classes}) on non-ignored pixels")


def metrics_from_confmat(confmat: Tensor, absent: str = "omit") -> dict[str, Tensor]:
    """Accuracy and IoU metrics of one ``(C, C)`` or a stack ``(..., C, C)`` of confusion matrices.

    Returns ``global_accuracy, mean_accuracy, mean_iou, weighted_iou`` (shape ``(...)``) and
    ``class_accuracy, class_iou`` (``(..., C)``). Classes with an empty truth row are NaN;
    ``absent`` says whether the means leave them out (``"omit"``) or become NaN (``"nan"``).
    Pure function: it does not warn (see :func:`absent_classes`).
    """
    if absent not in ABSENT_MODES:
        raise ValueError(f"absent must be one of {ABSENT_MODES}, got {absent!r}")
    cm = confmat.to(float_dtype(confmat.device))
    true_pos = cm.diagonal(dim1=-2, dim2=-1)
    rows, cols = cm.sum(dim=-1), cm.sum(dim=-2)
    present = rows > 0
    nan = torch.full_like(true_pos, math.nan)
    class_accuracy = torch.where(present, true_pos / rows, nan)
    class_iou = torch.where(present, true_pos / (rows + cols - true_pos), nan)
    weighted_iou = (rows * class_iou.nan_to_num()).sum(dim=-1) / rows.sum(dim=-1)
    if absent == "omit":
        mean_accuracy, mean_iou = class_accuracy.nanmean(dim=-1), class_iou.nanmean(dim=-1)
    else:
        mean_accuracy, mean_iou = class_accuracy.mean(dim=-1), class_iou.mean(dim=-1)
        weighted_iou = torch.where(present.all(dim=-1), weighted_iou, math.nan)
    return {
        "global_accuracy": true_pos.sum(dim=-1) / cm.sum(dim=(-2, -1)),
        "mean_accuracy": mean_accuracy,
        "mean_iou": mean_iou,
        "weighted_iou": weighted_iou,
        "class_accuracy": class_accuracy,
        "class_iou": class_iou,
    }


def absent_classes(confmat: Tensor) -> list[int]:
    """Indices of the classes with no truth pixel in a ``(C, C)`` confusion matrix."""
    return (confmat.sum(dim=1) == 0).nonzero().flatten().tolist()


class SegmentationMetrics(Metric):
    """Dataset-level segmentation metrics of MATLAB's ``evaluateSemanticSegmentation``.

    State is the ``(C, C)`` confusion matrix (``sum`` across processes); ``per_image=True``
    also keeps one matrix per image and ``bf_score=True`` the ``(N, C)`` BF scores (both
    ``cat``), so every number is exact under DDP. ``compute()`` returns scalars
    ``global_accuracy, mean_accuracy, mean_iou, weighted_iou``, ``(C,)`` ``class_accuracy,
    class_iou``, the ``confmat``, with ``bf_score`` the :class:`~segvn.metrics.BFScore` outputs,
    and with ``per_image`` an ``image_metrics`` dict of ``(N,)`` tensors (MATLAB's ImageMetrics).
    Like every torchmetrics metric, ``compute()`` squeezes one-element tensors: with a single
    image the per-image values are 0-dim (use ``.reshape(-1)`` when indexing them).

    Args:
        num_classes: number of classes ``C``.
        ignore_index: truth value of pixels left out of every metric (None: keep all).
        absent: ``"omit"`` leaves classes absent from the whole truth out of the means (with a
            warning naming them); ``"nan"`` makes those means NaN. Class values are NaN in both.
        class_names: names used in the absent-class warning.
        per_image: also compute per-image metrics.
        bf_score: also compute the BF (boundary F1) score.
        tolerance: BF match distance as a fraction of the image diagonal.
        validate_args: check label ranges on every update (costs a host sync on GPU).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        absent: str = "omit",
        class_names: Sequence[str] | None = None,
        per_image: bool = False,
        bf_score: bool = False,
        tolerance: float = 0.0075,
        validate_args: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if absent not in ABSENT_MODES:
            raise ValueError(f"absent must be one of {ABSENT_MODES}, got {absent!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"got {len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.absent = absent
        self.class_names = tuple(class_names) if class_names is not None else None
        self.per_image = per_image
        self.bf_score = bf_score
        self.tolerance = tolerance
        self.validate_args = validate_args
        zeros = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.add_state("confmat", default=zeros, dist_reduce_fx="sum")
        if per_image:
            self.add_state("image_confmats", default=[], dist_reduce_fx="cat")
        if bf_score:
            self.add_state("bf_scores", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch: ``preds`` ``(B, H, W)`` indices or ``(B, C, H, W)`` scores, ``target`` ``(B, H, W)``."""
        preds, target = as_class_indices(preds, target)
        if self.validate_args:
            _check_labels(preds, target, self.num_classes, self.ignore_index)
        per_image = confusion_matrices(preds, target, self.num_classes, self.ignore_index)
        self.confmat += per_image.sum(dim=0)
        if self.per_image:
            self.image_confmats.append(per_image)
        if self.bf_score:
            scores = bf_score_per_class(preds, target, self.num_classes, self.ignore_index, self.tolerance)
            self.bf_scores.append(scores)

    def compute(self) -> dict[str, Tensor]:
        """Dataset metrics (and per-image ones) from the accumulated state; warns on absent classes."""
        self._warn_absent()
        out = metrics_from_confmat(self.confmat, self.absent)
        out["confmat"] = self.confmat.clone()  # the state keeps growing in place
        if self.bf_score:
            out.update(bf_summary(dim_zero_cat(self.bf_scores)))
        if self.per_image:
            image = metrics_from_confmat(dim_zero_cat(self.image_confmats), absent="omit")
            image_metrics = {k: v for k, v in image.items() if not k.startswith("class_")}
            if self.bf_score:
                image_metrics["mean_bf_score"] = out["image_bf_score"]
            out["image_metrics"] = image_metrics
        return out

    def _warn_absent(self) -> None:
        missing = absent_classes(self.confmat)
        if not missing:
            return
        names = [self.class_names[c] if self.class_names else str(c) for c in missing]
        effect = "left out of the means" if self.absent == "omit" else "NaN, so the means are NaN"
        rank_zero_warn(
            f"classes absent from the ground truth: {', '.join(names)}; their accuracy and IoU are {effect}.",
            UserWarning,
        )
