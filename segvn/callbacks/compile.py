"""``torch.compile`` of the network for training (``callbacks.torch_compile.enabled=true``).

The network is compiled when fitting starts, after its memory order is set
(:class:`~segvn.callbacks.MemoryFormat` comes first in ``conf/callbacks/default.yaml``); validation
and the final test run the compiled network too.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from segvn.errors import ConfigError


class TorchCompile(Callback):
    """Wrap ``pl_module.net`` in :func:`torch.compile` when fitting (``enabled``), else nothing."""

    def __init__(self, enabled: bool = False) -> None:
        if not isinstance(enabled, bool):
            raise ConfigError(f"callbacks.torch_compile.enabled={enabled!r}: give true or false")
        self.enabled = enabled

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.enabled and stage == "fit" and not hasattr(pl_module.net, "_orig_mod"):
            pl_module.net = torch.compile(pl_module.net)
