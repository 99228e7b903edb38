"""Evaluate a checkpoint: ``python -m segvn.evaluate ckpt_path=PATH [split=test|val] [data=...]``.

Rebuilds model and data from the config stored in the checkpoint (command-line overrides win),
runs the split through the model and writes MATLAB-parity metrics into the run directory:
``metrics.json``, ``metrics.md``, ``class_metrics.csv``, ``image_metrics.csv``,
``confusion_matrix.png`` and, with ``save_images=true``, per-image overlays and comparisons.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from segvn.cli import Checkpoint, command
from segvn.inference.evaluation import evaluate_split
from segvn.inference.options import absent_mode, check_evaluate
from segvn.inference.precision import inference_model
from segvn.inference.scale import (
    ImageSizeChoice,
    ResizedModel,
    model_stride,
    resolve_image_size,
    training_size,
)
from segvn.utils import instantiate_dict, save_resolved_config
from segvn.viz.report import log_to_wandb, write_evaluation_report

log = logging.getLogger("segvn.evaluate")


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


def evaluate(cfg: DictConfig, ckpt: Checkpoint) -> dict:
    """Run the split through the checkpoint's model and write the reports; returns metrics.json."""
    check_evaluate(cfg)
    out = Path(cfg.paths.output_dir)
    save_resolved_config(cfg, out / "config.yaml")
    module = ckpt.model(cfg.model)
    dm = instantiate(cfg.data)
    ckpt.require_classes(dm.class_names)
    dataset = dm.require(cfg.split)
    choice = evaluation_image_size(cfg.get("image_size"), ckpt, module, dm.image_size)
    runtime, engine, precision, device = inference_model(cfg, ckpt, module, out)
    model = ResizedModel(runtime, choice)  # records the size used; a no-op at the data's size
    log.info(
        "model input: %s (image_size rule %s), runtime %s %s",
        choice.describe(), choice.rule, engine, precision.describe(),
    )  # fmt: skip
    pictures = out / "images.partial" if cfg.save_images else None
    if pictures is not None:
        pictures.mkdir(parents=True, exist_ok=True)
    columns = (TextColumn(f"evaluate {cfg.split}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("eval", total=len(dataset))
        run = evaluate_split(
            model, dm.eval_dataloader(cfg.split, cfg.batch_size), list(dm.class_names), device,
            absent_mode(cfg), cfg.metrics.bf_tolerance, pictures, cfg.max_images,
            lambda n: progress.advance(task, n), cfg.tta_flip,
        )  # fmt: skip
    sizes = {
        "image_size_rule": choice.rule,
        "image_size": _first_size(model.sizes_used, choice, dm.image_size),
    }
    if pictures is not None:
        shutil.rmtree(out / "images", ignore_errors=True)
        pictures.rename(out / "images")
    metrics, cm_png = write_evaluation_report(
        out, run.result, dm.class_names, run.paths, f"Evaluation of {ckpt.path.name} ({cfg.split})",
        checkpoint=str(ckpt.path.resolve()), split=cfg.split, absent_mode=absent_mode(cfg), tta_flip=cfg.tta_flip,
        runtime=engine, precision=precision.name, channels_last=precision.channels_last, **sizes,
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


main = command("evaluate", from_checkpoint=True, exports=True)(evaluate)

if __name__ == "__main__":
    main()
