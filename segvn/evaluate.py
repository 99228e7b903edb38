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

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from segvn.data.classes import IGNORE_INDEX
from segvn.data.transforms import denormalize
from segvn.metrics import SegmentationMetrics
from segvn.models.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from segvn.utils import CONF_DIR, instantiate_dict, run_task, save_resolved_config
from segvn.utils.from_checkpoint import add_checkpoint_configs
from segvn.viz.network import save_image
from segvn.viz.overlay import comparison, overlay
from segvn.viz.plots import plot_class_metrics, plot_confusion_matrix
from segvn.viz.report import (
    IMAGE_KEYS,
    log_to_wandb,
    metrics_dict,
    metrics_markdown,
    write_csv,
    write_json_atomic,
)

log = logging.getLogger("segvn.evaluate")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def evaluate(cfg: DictConfig) -> dict:
    """Run the split through the checkpoint's model and write the reports; returns metrics.json."""
    out = Path(cfg.paths.output_dir)
    save_resolved_config(cfg, out / "config.yaml")
    ckpt = load_checkpoint(cfg.ckpt_path)
    module = model_from_checkpoint(ckpt, cfg.model, cfg.ckpt_path)
    dm = instantiate(cfg.data)
    if list(dm.class_names) != list(module.class_names):
        raise CheckpointError(
            f"{cfg.ckpt_path}: the model predicts {len(module.class_names)} classes ({', '.join(module.class_names)}) "
            f"but the data has {len(dm.class_names)} ({', '.join(dm.class_names)}); evaluate with data whose "
            "classes match the checkpoint"
        )
    dataset = dm.require(cfg.split)
    device = pick_device(cfg.device)
    module.to(device)
    absent_mode = str(cfg.metrics.absent).lower()  # `metrics.absent=nan` arrives as a float
    metric = SegmentationMetrics(
        len(dm.class_names),
        IGNORE_INDEX,
        absent=absent_mode,
        class_names=dm.class_names,
        per_image=True,
        bf_score=True,
        tolerance=cfg.metrics.bf_tolerance,
    ).to(device)

    pictures = out / "images.partial"
    if cfg.save_images:
        pictures.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    saved = 0
    columns = [
        TextColumn("evaluate {task.fields[split]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, transient=False) as progress, torch.inference_mode():
        task = progress.add_task("eval", total=len(dataset), split=cfg.split)
        for batch in dm.eval_dataloader(cfg.split, cfg.batch_size):
            images, target = batch["image"].to(device), batch["mask"].to(device)
            preds = module(images).argmax(1)
            metric.update(preds, target)
            paths.extend(batch["path"])
            if cfg.save_images:
                for i in range(images.shape[0]):
                    if cfg.max_images is not None and saved >= cfg.max_images:
                        break
                    frame = denormalize(images[i])
                    pred, truth = preds[i].cpu().numpy(), target[i].cpu().numpy()
                    stem = Path(batch["path"][i]).stem
                    save_image(overlay(frame, pred), pictures / f"{stem}_overlay.png")
                    save_image(
                        comparison(pred, truth, frame, class_names=dm.class_names),
                        pictures / f"{stem}_compare.png",
                    )
                    saved += 1
            progress.advance(task, images.shape[0])

    result = metric.compute()
    absent = [dm.class_names[i] for i, n in enumerate(result["confmat"].sum(1).tolist()) if n == 0]
    metrics = metrics_dict(
        result,
        dm.class_names,
        images=len(paths),
        checkpoint=str(Path(cfg.ckpt_path).resolve()),
        split=cfg.split,
        absent_classes=absent,
        absent_mode=absent_mode,
    )
    names = list(dm.class_names)
    write_csv(
        out / "class_metrics.csv",
        ["class", "accuracy", "iou", "bf_score"],
        [[n, *metrics["classes"][n].values()] for n in names],
    )
    image = {k: v.reshape(-1).tolist() for k, v in result["image_metrics"].items()}
    write_csv(
        out / "image_metrics.csv",
        ["image", *IMAGE_KEYS],
        [[p, *(image[k][i] for k in IMAGE_KEYS)] for i, p in enumerate(paths)],
    )
    cm_png = plot_confusion_matrix(result["confmat"].cpu().numpy(), names, out / "confusion_matrix.png")
    nan = float("nan")
    plot_class_metrics(
        {
            key: [metrics["classes"][n][field] or nan for n in names]
            for key, field in (("accuracy", "accuracy"), ("IoU", "iou"), ("BF score", "bf_score"))
        },
        names,
        out=out / "class_metrics.png",
        title=f"Per-class metrics ({cfg.split})",
    )
    (out / "metrics.md").write_text(
        metrics_markdown(metrics, f"Evaluation of {Path(cfg.ckpt_path).name} ({cfg.split})")
    )
    if cfg.save_images:
        shutil.rmtree(out / "images", ignore_errors=True)
        pictures.rename(out / "images")
    for lg in instantiate_dict(cfg.get("logger")):
        if type(lg).__name__ == "WandbLogger":
            log_to_wandb(lg.experiment, metrics, {"confusion_matrix": cm_png})
    write_json_atomic(out / "metrics.json", metrics)
    log.info(
        "mIoU %.4f, global accuracy %.4f, mean BF %.4f over %d images -> %s",
        metrics["mean_iou"] or float("nan"),
        metrics["global_accuracy"] or float("nan"),
        metrics["mean_bf_score"] or float("nan"),
        len(paths),
        out,
    )
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_task(evaluate, cfg)


if __name__ == "__main__":
    add_checkpoint_configs()
    main()
