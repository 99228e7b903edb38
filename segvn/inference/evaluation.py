"""Evaluating a model on a labelled split: what ``segvn.evaluate`` runs.

:func:`evaluate_checkpoint` rebuilds model and data from a checkpoint and an evaluate config, chooses
the model's input size, runtime and precision, runs :func:`evaluate_split` and writes the report.
:func:`evaluate_split` runs every frame of the split through the model, accumulates MATLAB-parity
metrics (:class:`~segvn.metrics.SegmentationMetrics`, with per-image values and BF score) and, when
asked, writes the overlay and the prediction-vs-truth comparison of each frame. The report files come
from :func:`segvn.viz.report.write_evaluation_report`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger

from segvn.data.classes import IGNORE_INDEX
from segvn.data.transforms import to_image
from segvn.inference.options import absent_mode
from segvn.inference.runtime_choice import inference_model
from segvn.inference.scale import (
    FrameResizer,
    ImageSizeChoice,
    model_stride,
    resolve_image_size,
    training_size,
)
from segvn.metrics import SegmentationMetrics, class_indices
from segvn.models.checkpoint import Checkpoint
from segvn.models.tta import predict_logits
from segvn.utils import instantiate_dict
from segvn.viz.compare import comparison
from segvn.viz.image import save_image
from segvn.viz.overlay import overlay
from segvn.viz.report import log_to_wandb, write_evaluation_report

log = logging.getLogger(__name__)


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
    resizer: FrameResizer | None = None,
) -> Evaluation:
    """Metrics of ``model`` over ``loader`` (batches of ``image``: RGB 0-255 ``uint8``, ``mask``, ``path``).

    ``resizer`` brings the frames to the model's input size first (on the CPU, still ``uint8``), and the
    logits are brought back to the frames' size (bilinear) before they are scored.

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
            images, target = batch["image"], batch["mask"].to(device)
            x = images
            if resizer is not None:
                x = torch.from_numpy(resizer([to_image(image) for image in images])).permute(0, 3, 1, 2)
            logits = predict_logits(model, x.to(device).contiguous(), tta_flip)
            if logits.shape[-2:] != images.shape[-2:]:
                logits = F.interpolate(
                    logits.float(), size=images.shape[-2:], mode="bilinear", align_corners=False
                )
            preds = class_indices(logits)
            metric.update(preds, target)
            paths.extend(batch["path"])
            for i in range(images.shape[0]):
                if pictures is None or (max_pictures is not None and saved >= max_pictures):
                    break
                frame = to_image(images[i])
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


def evaluation_image_size(setting, ckpt: Checkpoint, module, data_size) -> ImageSizeChoice:
    """The model's input size in evaluate: the data's size when it is the training size (the stored
    ``data=checkpoint`` resizes to it), else the ``image_size`` rule of :mod:`segvn.inference.scale`."""
    trained = training_size(ckpt.config)
    data = tuple(int(v) for v in data_size) if data_size is not None else None
    if setting is None and data == trained:
        return ImageSizeChoice(None, "training-scale" if trained else "native")
    return resolve_image_size(setting, trained, model_stride(module))


def _first_size(used, choice: ImageSizeChoice, data_size) -> list[int] | None:
    if used:
        return list(next(iter(used.values())))
    if isinstance(choice.size, tuple):
        return list(choice.size)
    return list(data_size) if data_size is not None else None


def evaluate_checkpoint(
    cfg: Any, ckpt: Checkpoint, progress: Callable[[int], Callable[[int], None]] | None = None
) -> dict:
    """Evaluate ``ckpt`` on ``cfg.split`` as an :class:`~segvn.inference.options.EvaluateConfig` says
    and write the report files into ``cfg.paths.output_dir``; returns ``metrics.json``'s content.

    ``progress(total)`` returns the ``advance(n)`` the loop calls after every batch.
    """
    out = Path(cfg.paths.output_dir)
    module = ckpt.model(cfg.model)
    dm = instantiate(cfg.data)
    ckpt.require_classes(dm.class_names)
    dataset = dm.require(cfg.split)
    choice = evaluation_image_size(cfg.get("image_size"), ckpt, module, dm.image_size)
    chosen = inference_model(cfg, ckpt, module, out)
    precision = chosen.precision
    resizer = FrameResizer(choice.for_frame)  # records the size used; a no-op at the data's size
    log.info(
        "model input: %s (image_size rule %s), runtime %s %s",
        choice.describe(), choice.rule, chosen.runtime, precision.describe(),
    )  # fmt: skip
    pictures = out / "images.partial" if cfg.save_images else None
    if pictures is not None:
        pictures.mkdir(parents=True, exist_ok=True)
    run = evaluate_split(
        chosen.model, dm.eval_dataloader(cfg.split, cfg.batch_size), list(dm.class_names), chosen.device,
        absent_mode(cfg), cfg.metrics.bf_tolerance, pictures, cfg.max_images,
        progress(len(dataset)) if progress is not None else None, cfg.tta_flip, resizer,
    )  # fmt: skip
    sizes = {
        "image_size_rule": choice.rule,
        "image_size": _first_size(resizer.sizes_used, choice, dm.image_size),
    }
    if pictures is not None:
        shutil.rmtree(out / "images", ignore_errors=True)
        pictures.rename(out / "images")
    metrics, cm_png = write_evaluation_report(
        out, run.result, dm.class_names, run.paths, f"Evaluation of {ckpt.path.name} ({cfg.split})",
        checkpoint=str(ckpt.path.resolve()), split=cfg.split, absent_mode=absent_mode(cfg), tta_flip=cfg.tta_flip,
        runtime=chosen.runtime, precision=precision.name, channels_last=precision.channels_last, **sizes,
    )  # fmt: skip
    for lg in instantiate_dict(cfg.get("logger")):
        if isinstance(lg, WandbLogger):
            log_to_wandb(lg.experiment, metrics, {"confusion_matrix": cm_png})
    nan = float("nan")
    log.info(
        "mIoU %.4f, global accuracy %.4f, mean BF %.4f over %d images -> %s",
        metrics["mean_iou"] or nan, metrics["global_accuracy"] or nan, metrics["mean_bf_score"] or nan,
        len(run.paths), out,
    )  # fmt: skip
    return metrics
