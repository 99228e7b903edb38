"""Every checkpoint carries the resolved run config, so a checkpoint alone rebuilds data and model."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from segvn.models.checkpoint import CONFIG_KEY


class ConfigInCheckpoint(Callback):
    """Stores the resolved run config (plain types) in every checkpoint under ``segvn_config``.

    ``segvn.evaluate`` and ``segvn.predict`` rebuild model and data settings from it.
    """

    def __init__(self, config: dict | None = None) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self.config is not None:
            checkpoint[CONFIG_KEY] = self.config
