"""W&B dashboard media: class-IoU table, confusion matrix and example frames at every validation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from segvn.callbacks.config import ConfigInCheckpoint
from segvn.data.classes import IGNORE_INDEX
from segvn.data.transforms import to_image
from segvn.metrics import class_indices, metrics_from_confmat
from segvn.viz.plots import plot_confusion_matrix

log = logging.getLogger(__name__)


def validation_confmat(pl_module: L.LightningModule) -> Any:
    """The validation confusion matrix (C, C) the module accumulated this epoch, or ``None``.

    Looks for a torchmetrics metric named ``val*`` with a square ``confmat`` state (segvn's
    ``SegmentationMetrics`` or torchmetrics' ``MulticlassConfusionMatrix``), summed across processes.
    Must be called before the module's ``on_validation_epoch_end`` resets it (callback hooks run first).
    """
    from torchmetrics import Metric

    for name, metric in pl_module.named_modules():
        if not (isinstance(metric, Metric) and name.startswith("val")):
            continue
        state = getattr(metric, "confmat", None)
        if isinstance(state, torch.Tensor) and state.ndim == 2 and state.shape[0] == state.shape[1]:
            with metric.sync_context():
                return metric.confmat.detach().cpu().clone()
    return None


class WandbMedia(Callback):
    """W&B dashboard media at every validation epoch; a no-op unless a ``WandbLogger`` is attached.

    Logs under ``val/``: ``class_iou`` (a ``wandb.Table`` of per-class IoU, accuracy and pixels),
    ``confusion_matrix`` (W&B's confusion-matrix chart built from the pixel counts) and
    ``confusion_matrix_image`` (the normalised heat map as a picture), and ``examples``: ``num_images``
    fixed validation frames (spread evenly over the split) with the model's prediction and the ground
    truth as W&B masks (overlay toggles in the UI; ignored pixels are the ``unlabelled`` label).
    With ``log_checkpoint=true`` the best checkpoint (else the last) is logged as a ``model``
    artifact when training ends, aliases ``best`` and ``latest``; unlike Lightning's
    ``logger.wandb.log_model``, which refuses offline runs, this also works offline (the artifact
    is uploaded by ``wandb sync``). The file is referenced in place, not copied.
    Also makes sure the run's config holds the resolved training config (``segvn.train`` logs it as
    hyper-parameters; if that did not happen, the config of :class:`ConfigInCheckpoint` is sent).
    """

    def __init__(
        self,
        num_images: int = 4,
        confusion_matrix: bool = True,
        class_table: bool = True,
        ignore_label: str = "unlabelled",
        log_checkpoint: bool = False,
    ) -> None:
        self.num_images = num_images
        self.log_checkpoint = log_checkpoint
        self.confusion_matrix = confusion_matrix
        self.class_table = class_table
        self.ignore_label = ignore_label
        self._frames: list[dict] | None = None

    @staticmethod
    def wandb_logger(trainer: L.Trainer) -> Any:
        from lightning.pytorch.loggers import WandbLogger

        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self.wandb_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        config = next((cb.config for cb in trainer.callbacks if isinstance(cb, ConfigInCheckpoint)), None)
        if config and not all(key in logger.experiment.config for key in config):
            logger.experiment.config.update(config, allow_val_change=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self.wandb_logger(trainer)
        if not self.log_checkpoint or logger is None or not trainer.is_global_zero:
            return
        ckpt = trainer.checkpoint_callback
        path = (getattr(ckpt, "best_model_path", "") or getattr(ckpt, "last_model_path", "")) if ckpt else ""
        if not path or not Path(path).is_file():
            log.info("no checkpoint to log to W&B")
            return
        import wandb

        run = logger.experiment
        score = getattr(ckpt, "best_model_score", None)
        artifact = wandb.Artifact(
            f"model-{run.id}",
            type="model",
            metadata={
                "file": Path(path).name,
                "monitor": getattr(ckpt, "monitor", None),
                "score": float(score) if score is not None else None,
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
            },
        )
        artifact.add_file(str(path), name=Path(path).name, policy="immutable")
        run.log_artifact(artifact, aliases=["best", "latest"])

    def _fixed_frames(self, trainer: L.Trainer) -> list[dict]:
        if self._frames is None:
            self._frames = []
            loaders = trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            dataset = getattr(loader, "dataset", None)
            if dataset is not None and self.num_images > 0:
                n = len(dataset)
                picks = sorted(
                    {round(i * (n - 1) / max(self.num_images - 1, 1)) for i in range(self.num_images)}
                )
                self._frames = [dataset[i] for i in picks[:n]]
        return self._frames

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        logger = self.wandb_logger(trainer)
        if logger is None:
            return
        confmat = validation_confmat(pl_module) if (self.confusion_matrix or self.class_table) else None
        if not trainer.is_global_zero:
            return
        names = list(getattr(pl_module, "class_names", []))
        payload: dict[str, Any] = {}
        if confmat is not None and len(names) == confmat.shape[0]:
            payload.update(self._confmat_media(confmat.numpy(), names))
        images = self._examples(trainer, pl_module, names)
        if images:
            payload["val/examples"] = images
        if payload:
            payload["trainer/global_step"] = trainer.global_step
            payload["epoch"] = trainer.current_epoch
            logger.experiment.log(payload)

    def _confmat_media(self, cm: Any, names: list[str]) -> dict[str, Any]:
        import tempfile

        import numpy as np
        import wandb
        from PIL import Image
        from wandb.plot.custom_chart import plot_table

        out: dict[str, Any] = {}
        cm = np.asarray(cm, dtype=np.int64)
        scores = metrics_from_confmat(torch.from_numpy(cm))
        rows, cols = cm.sum(1), cm.sum(0)
        if self.class_table:
            table = wandb.Table(columns=["class", "iou", "accuracy", "pixels", "predicted_pixels"])
            for c, name in enumerate(names):
                iou, acc = (float(scores[k][c]) for k in ("class_iou", "class_accuracy"))
                table.add_data(
                    name,
                    None if rows[c] == 0 else iou,
                    None if rows[c] == 0 else acc,
                    int(rows[c]),
                    int(cols[c]),
                )
            out["val/class_iou"] = table
        if self.confusion_matrix:
            data = [[names[i], names[j], int(cm[i, j])] for i in range(len(names)) for j in range(len(names))]
            out["val/confusion_matrix"] = plot_table(
                "wandb/confusion_matrix/v1",
                wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=data),
                {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
                {"title": "Validation confusion matrix (pixels)"},
            )
            with tempfile.TemporaryDirectory() as tmp:
                png = plot_confusion_matrix(cm, names, Path(tmp) / "confusion_matrix.png")
                picture = np.asarray(Image.open(png).convert("RGB"))
            out["val/confusion_matrix_image"] = wandb.Image(
                picture, caption="rows: truth, % of the true class"
            )
        return out

    def _examples(self, trainer: L.Trainer, pl_module: L.LightningModule, names: list[str]) -> list[Any]:
        import numpy as np
        import wandb

        frames = self._fixed_frames(trainer)
        if not frames:
            return []
        labels = {i: name for i, name in enumerate(names)}
        labels[IGNORE_INDEX] = self.ignore_label
        images = []
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                for item in frames:
                    x = item["image"].unsqueeze(0).to(pl_module.device)
                    pred = class_indices(pl_module(x))[0].cpu().numpy().astype(np.uint8)
                    truth = item["mask"].cpu().numpy().astype(np.uint8)
                    images.append(
                        wandb.Image(
                            to_image(item["image"]),
                            masks={
                                "prediction": {"mask_data": pred, "class_labels": labels},
                                "ground_truth": {"mask_data": truth, "class_labels": labels},
                            },
                            caption=Path(str(item.get("path", ""))).stem,
                        )
                    )
        finally:
            pl_module.train(was_training)
        return images
