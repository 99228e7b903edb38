"""Evaluating a model on a labelled split: the loop behind ``segvn.evaluate``.

Runs every frame of the split through the model, accumulates MATLAB-parity metrics
(:class:`~segvn.metrics.SegmentationMetrics`, with per-image values and BF score) and, when asked,
writes the overlay and the prediction-vs-truth comparison of each frame. The report files come from
:func:`segvn.viz.report.write_evaluation_report`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segvn.data.classes import IGNORE_INDEX
from segvn.data.transforms import denormalize
from segvn.metrics import SegmentationMetrics, class_indices
from segvn.models.tta import predict_logits
from segvn.viz.compare import comparison
from segvn.viz.image import save_image
from segvn.viz.overlay import overlay


@dataclass
class Evaluation:
    """What :func:`evaluate_split` measured: the metric results and the frames, in order."""

    result: dict[str, Any]
    paths: list[str]


def evaluate_split(
    model: torch.nn.Module,
    loader,
    class_names: list[str],
    device: torch.device,
    absent: str = "omit",
    bf_tolerance: float = 0.0075,
    pictures: Path | None = None,
    max_pictures: int | None = None,
    advance: Callable[[int], None] | None = None,
    tta_flip: bool = False,
) -> Evaluation:
    """Metrics of ``model`` over ``loader`` (batches of ``image``, ``mask``, ``path``).

    With ``pictures`` (a folder), the first ``max_pictures`` frames (all with ``None``) get
    ``<stem>_overlay.png`` and ``<stem>_compare.png`` there. ``tta_flip`` averages the logits with
    those of the mirrored frame (:func:`segvn.models.tta.flip_tta`).
    """
    metric = SegmentationMetrics(
        len(class_names), IGNORE_INDEX, absent=absent, class_names=class_names,
        per_image=True, bf_score=True, tolerance=bf_tolerance,
    ).to(device)  # fmt: skip
    model.to(device).eval()
    paths: list[str] = []
    saved = 0
    with torch.inference_mode():
        for batch in loader:
            images, target = batch["image"].to(device), batch["mask"].to(device)
            preds = class_indices(predict_logits(model, images, tta_flip))
            metric.update(preds, target)
            paths.extend(batch["path"])
            for i in range(images.shape[0]):
                if pictures is None or (max_pictures is not None and saved >= max_pictures):
                    break
                frame = denormalize(images[i])
                pred, truth = preds[i].cpu().numpy(), target[i].cpu().numpy()
                stem = Path(batch["path"][i]).stem
                save_image(overlay(frame, pred), pictures / f"{stem}_overlay.png")
                save_image(
                    comparison(pred, truth, frame, class_names=class_names), pictures / f"{stem}_compare.png"
                )
                saved += 1
            if advance is not None:
                advance(images.shape[0])
    return Evaluation(metric.compute(), paths)
