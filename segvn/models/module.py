"""The LightningModule: weighted cross-entropy training and confusion-matrix metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric

from segvn.data.classes import CLASS_NAMES, IGNORE_INDEX
from segvn.data.consistency import cutmix
from segvn.errors import ConfigError
from segvn.metrics import SegmentationMetrics, class_indices
from segvn.models.factory import network_of
from segvn.models.losses import build_region_loss, ohem_cross_entropy, sample_weighted_cross_entropy


class SegModule(L.LightningModule):
    """Semantic segmentation with class-weighted cross-entropy.

    ``optimizer`` and ``scheduler`` are partials (Hydra ``_partial_: true``) so the config owns
    every hyper-parameter. With ``class_weighting`` other than ``none`` the loss weights are taken
    from the data module's training labels when fitting starts and kept in the checkpoint.
    ``ohem`` (``{thresh, min_kept}``) trains on the hard pixels only
    (:func:`~segvn.models.losses.ohem_cross_entropy`); ``region_loss`` (``dice`` or ``lovasz``) adds
    ``region_loss_weight`` times that overlap loss to the training cross-entropy. Validation and test
    keep the plain loss, so ``val/loss`` means the same whatever the training loss.
    Freezing the encoder, its batch norms' eval mode, the memory order and ``torch.compile`` are
    callbacks (:mod:`segvn.callbacks`, ``conf/callbacks/default.yaml``), as is the EMA of the weights.
    ``consistency`` (``{weight, threshold, cutmix}``) is the loss of online self-training, used when the
    training batches bring unlabelled frames (``data.online``): :meth:`consistency_loss`.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        class_names: Sequence[str] = CLASS_NAMES,
        ignore_index: int = IGNORE_INDEX,
        class_weighting: str = "median_frequency",
        scheduler_interval: str = "epoch",
        encoder_lr_mult: float = 1.0,
        ohem: dict | None = None,
        region_loss: str | None = None,
        region_loss_weight: float = 1.0,
        consistency: dict | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.ignore_index = ignore_index
        self.class_weighting = class_weighting
        self.scheduler_interval = scheduler_interval
        self.encoder_lr_mult = encoder_lr_mult
        self.ohem = dict(ohem) if ohem else None  # {thresh, min_kept}: segvn.models.losses
        self.region_loss = build_region_loss(region_loss, ignore_index) if region_loss else None
        self.region_loss_weight = region_loss_weight
        self.consistency = _consistency_settings(consistency)
        self.register_buffer("class_weights", torch.ones(self.num_classes))
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        # pixel accuracy over the epoch (correct / labelled pixels): batch accuracies weighted by their
        # labelled pixels, from the per-step figure already computed (no second pass over the pixels)
        self.train_acc = MeanMetric()
        seg = dict(
            num_classes=self.num_classes,
            ignore_index=ignore_index,
            class_names=self.class_names,
            validate_args=False,
        )
        self.val_metrics = SegmentationMetrics(**seg)
        self.test_metrics = SegmentationMetrics(**seg, bf_score=True)
        self.val_miou_best = MaxMetric()
        self.last_summary: dict[str, dict[str, torch.Tensor]] = {}
        """The latest dataset metrics per stage (``confmat`` included), reduced across processes."""

    def _encoder(self) -> nn.Module:
        return network_of(self).model.encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, H, W) at the input's resolution."""
        return self.net(images)

    # -- set-up ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit" and self.class_weighting != "none":
            dm = getattr(self.trainer, "datamodule", None)
            if dm is None or not hasattr(dm, "class_weights"):
                raise ValueError("class_weighting needs a SegDataModule to compute weights from")
            self.class_weights.copy_(dm.class_weights(self.class_weighting))

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self._param_groups())
        if len(optimizer.param_groups) == 2:
            optimizer.param_groups[1]["lr"] *= self.encoder_lr_mult
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": self.scheduler_interval,
                "monitor": "val/loss",
            },
        }

    def _param_groups(self) -> list[torch.nn.Parameter] | list[dict]:
        """All trainable parameters, or [rest, encoder] when the encoder learns at its own rate.

        A pretrained encoder fine-tuned at a fraction of the decoder's rate keeps more of what it
        learnt on ImageNet. The decoder's group comes first, so ``param_groups[0]`` is the main rate.
        Weights frozen before the optimizer is built (:class:`segvn.callbacks.FreezeEncoder`) are left out.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        if self.encoder_lr_mult == 1.0:
            return params
        encoder = {id(p) for p in self._encoder().parameters()}
        return [
            {"params": [p for p in params if id(p) not in encoder]},
            {"params": [p for p in params if id(p) in encoder]},
        ]

    # -- steps -----------------------------------------------------------------------------
    def _step(self, batch: dict, train: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self(batch["image"])
        target = batch["mask"]
        frame_weights = batch.get("weight") if train else None  # pseudo-labelled frames (data.pseudo)
        if frame_weights is not None:
            if self.ohem is not None:
                raise ConfigError(
                    "model.ohem with data.pseudo: OHEM does not weigh pseudo-labels; set model.ohem=null"
                )
            loss = sample_weighted_cross_entropy(
                logits,
                target,
                frame_weights,
                self.class_weights,
                self.ignore_index,
                class_weighted=batch.get("class_weighted"),
            )
        elif train and self.ohem is not None:  # hard pixels only; validation keeps the plain loss
            loss = ohem_cross_entropy(logits, target, self.class_weights, self.ignore_index, **self.ohem)
        else:
            loss = F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index)
        if train and self.region_loss is not None:
            loss = loss + self.region_loss_weight * self.region_loss(logits.float(), target)
        return loss, class_indices(logits), target

    def consistency_loss(self, weak: torch.Tensor, strong: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weak-to-strong consistency (FixMatch, UniMatch): the model's own labels of the weak views, where
        its confidence reaches ``threshold``, taught on the strong views (CutMixed with probability
        ``cutmix``, labels moved with the pixels). Cross-entropy without class weights, summed over the kept
        pixels and divided by all pixels, so a batch with few confident pixels pulls little. Returns the
        loss and the share of pixels kept."""
        if self.consistency is None:
            raise ConfigError(
                "data.online gives unlabelled frames but model.consistency is null; set both (the "
                "*_online experiments do) or neither"
            )
        with torch.no_grad():
            confidence, target = self(weak).float().softmax(1).max(1)
            target[confidence < self.consistency["threshold"]] = self.ignore_index
        strong, target = cutmix(strong, target, self.consistency["cutmix"])
        logits = self(strong).float()
        loss = (
            F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="sum") / target.numel()
        )
        return loss, (target != self.ignore_index).float().mean()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        unlabelled = None
        if "labelled" in batch:  # data.online: Lightning combined a labelled and an unlabelled batch
            batch, unlabelled = batch["labelled"], batch["unlabelled"]
        loss, preds, target = self._step(batch, train=True)
        valid = target != self.ignore_index
        labelled = valid.sum()
        acc_step = ((preds == target) & valid).sum().float() / labelled  # NaN if no pixel is labelled
        # update() only: the epoch values are computed once at the epoch's end, not per batch
        self.train_loss.update(loss.detach())
        self.train_acc.update(acc_step.nan_to_num(0.0), weight=labelled)
        n = batch["image"].shape[0]
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, batch_size=n)
        self.log("train/acc_step", acc_step, on_step=True, on_epoch=False, batch_size=n)
        if unlabelled is not None:
            loss_u, kept = self.consistency_loss(unlabelled["weak"], unlabelled["strong"])
            m = unlabelled["weak"].shape[0]
            self.log("train/loss_unlabelled", loss_u.detach(), on_step=True, on_epoch=True, batch_size=m)
            self.log("train/confident", kept, on_step=True, on_epoch=True, batch_size=m)
            loss = loss + self.consistency["weight"] * loss_u
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, preds, target = self._step(batch)
        self.val_loss(loss)
        self.val_metrics.update(preds, target)
        self.log(
            "val/loss",
            self.val_loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch["image"].shape[0],
        )

    def _log_summary(self, stage: str, metric: SegmentationMetrics) -> dict[str, torch.Tensor]:
        """Log MATLAB-parity dataset metrics (already reduced across processes) and reset."""
        summary = metric.compute()
        self.log(f"{stage}/miou", summary["mean_iou"].float(), prog_bar=True)
        self.log(f"{stage}/global_acc", summary["global_accuracy"].float(), prog_bar=True)
        self.log(f"{stage}/mean_acc", summary["mean_accuracy"].float())
        self.log(f"{stage}/weighted_iou", summary["weighted_iou"].float())
        if "mean_bf_score" in summary:
            self.log(f"{stage}/mean_bf_score", summary["mean_bf_score"].float())
        for name, value in zip(self.class_names, summary["class_iou"], strict=True):
            if not torch.isnan(value):
                self.log(f"{stage}/iou/{name}", value.float())
        metric.reset()
        self.last_summary[stage] = {k: v.detach().cpu() for k, v in summary.items() if torch.is_tensor(v)}
        return summary

    def on_validation_epoch_end(self) -> None:
        summary = self._log_summary("val", self.val_metrics)
        miou = summary["mean_iou"].float()
        if not self.trainer.sanity_checking:
            self.val_miou_best(miou)
        best = self.val_miou_best.compute() if self.val_miou_best.update_called else miou
        self.log("val/miou_best", best, prog_bar=True)

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        loss, preds, target = self._step(batch)
        self.test_loss(loss)
        self.test_metrics.update(preds, target)
        self.log(
            "test/loss", self.test_loss, on_step=False, on_epoch=True, batch_size=batch["image"].shape[0]
        )

    def on_test_epoch_end(self) -> None:
        self._log_summary("test", self.test_metrics)

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self(batch["image"]).softmax(1)


def _consistency_settings(settings: dict | None) -> dict[str, float] | None:
    """``model.consistency`` checked: ``weight`` >= 0, ``threshold`` in [0, 1), ``cutmix`` in [0, 1]."""
    if settings is None:
        return None
    out = {"weight": 1.0, "threshold": 0.9, "cutmix": 0.5}
    unknown = sorted(set(settings) - set(out))
    if unknown:
        raise ConfigError(f"model.consistency: unknown setting(s) {unknown}; use {', '.join(out)}")
    out.update({k: float(v) for k, v in settings.items()})
    bounds = {"weight": (0.0, float("inf")), "threshold": (0.0, 1.0 - 1e-9), "cutmix": (0.0, 1.0)}
    for key, (low, high) in bounds.items():
        if not low <= out[key] <= high:
            raise ConfigError(
                f"model.consistency.{key}={out[key]:g}: out of range [{low:g}, {min(high, 1):g}]"
            )
    return out
