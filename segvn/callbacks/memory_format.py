"""The network's memory order while training, validating and testing: NCHW or channels_last (NHWC).

``channels_last=true`` stores the network's weights (and feeds its inputs) in NHWC order, which
oneDNN runs faster on CPUs for the same numbers; ``eval`` trains in NCHW and validates, tests and
predicts in NHWC, for networks whose NHWC backward is slow or wrong (MobileNetV2's dilated depthwise
convolutions in bf16) while their NHWC forward is fast. Measurements: docs/notes/code_defaults.md.
Converting in place keeps the parameters the optimizer holds.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from segvn.errors import ConfigError

SETTING = "callbacks.memory_format.channels_last"


class MemoryFormat(Callback):
    """Weights and input batches in channels_last order: ``true`` always, ``eval`` outside training steps."""

    def __init__(self, channels_last: bool | str = False) -> None:
        if not (isinstance(channels_last, bool) or channels_last == "eval"):
            raise ConfigError(f"{SETTING}={channels_last!r}: give true, false or eval")
        self.channels_last = channels_last

    def _nhwc(self, training: bool) -> bool:
        return self.channels_last is True or (self.channels_last == "eval" and not training)

    def _weights(self, pl_module: L.LightningModule, training: bool) -> None:
        memory = torch.channels_last if self._nhwc(training) else torch.contiguous_format
        pl_module.net.to(memory_format=memory)

    def _inputs(self, batch: Any, training: bool) -> None:
        if not (self._nhwc(training) and isinstance(batch, dict)):
            return
        for key, value in batch.items():  # images, an online batch's views, and nested batches
            if key in ("image", "weak", "strong") and torch.is_tensor(value) and value.ndim == 4:
                batch[key] = value.contiguous(memory_format=torch.channels_last)
            elif isinstance(value, dict):
                self._inputs(value, training)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.channels_last is not False:
            self._weights(pl_module, training=stage == "fit")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.channels_last == "eval":
            self._weights(pl_module, training=False)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.channels_last == "eval":
            self._weights(pl_module, training=True)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.channels_last == "eval":
            self._weights(pl_module, training=False)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.channels_last == "eval":
            self._weights(pl_module, training=True)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._inputs(batch, training=True)

    def on_validation_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._inputs(batch, training=False)

    def on_test_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._inputs(batch, training=False)

    def on_predict_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._inputs(batch, training=False)
