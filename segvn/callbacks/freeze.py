"""Freeze a pretrained encoder's first stages and/or keep its batch norms in eval mode while training.

``frozen_stages`` (0-5, one stage per output stride 2..32; mmdetection's ``frozen_stages``): the first
stages of the encoder (:func:`segvn.models.factory.encoder_stages`) keep the weights and batch-norm
statistics they were loaded with; no backward runs through them, so each step is cheaper, and their
generic ImageNet edges and textures are not fitted to the few training streets. ``norm_eval``
(mmsegmentation's ``norm_eval``): every batch norm of the encoder stays in eval mode (running
statistics as loaded, scale and shift still learnt), so a pretrained encoder computes what it computed
on ImageNet instead of renormalising each channel by the statistics of a small batch of street frames.
Measurements: docs/notes/recipes.md.

Freezing happens in ``setup``, before Lightning calls ``configure_optimizers``, so the optimizer (and
``model.encoder_lr_mult``'s encoder group) never holds a frozen weight.
"""

from __future__ import annotations

import logging
import warnings

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from segvn.errors import ConfigError
from segvn.models.factory import encoder_stages

log = logging.getLogger(__name__)

SETTING = "callbacks.freeze_encoder"


def module_encoder(pl_module: L.LightningModule) -> nn.Module:
    """The encoder of a :class:`~segvn.models.module.SegModule`'s network (through a torch.compile wrapper)."""
    net = getattr(pl_module.net, "_orig_mod", pl_module.net)
    return net.model.encoder


class FreezeEncoder(BaseFinetuning):
    """The encoder's first ``frozen_stages`` frozen, and with ``norm_eval`` all its batch norms in eval mode.

    Uses :class:`~lightning.pytorch.callbacks.BaseFinetuning`'s ``freeze`` (weights without gradients,
    batch norms that no longer track statistics); the frozen stages and, with ``norm_eval``, the
    encoder's batch norms are also put in eval mode, at set-up and again at every training epoch's
    start, so they normalise by their loaded statistics. Nothing is unfrozen later.
    """

    def __init__(self, frozen_stages: int = 0, norm_eval: bool = False) -> None:
        super().__init__()
        if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) or frozen_stages < 0:
            raise ConfigError(
                f"{SETTING}.frozen_stages={frozen_stages!r}: give a whole number of encoder stages, 0 (none) to 5"
            )
        if not isinstance(norm_eval, bool):
            raise ConfigError(f"{SETTING}.norm_eval={norm_eval!r}: give true or false")
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

    @property
    def active(self) -> bool:
        return bool(self.frozen_stages or self.norm_eval)

    def frozen(self, pl_module: L.LightningModule) -> nn.ModuleList:
        """The encoder stages that are kept as loaded (empty with ``frozen_stages=0``)."""
        n = self.frozen_stages
        if n == 0:
            return nn.ModuleList()
        try:
            stages = encoder_stages(module_encoder(pl_module))
        except ValueError as err:
            raise ConfigError(f"{SETTING}.frozen_stages={n}: {err}; set {SETTING}.frozen_stages=0") from err
        if n > len(stages):
            raise ConfigError(
                f"{SETTING}.frozen_stages={n}: this encoder has {len(stages)} stages; give 0-{len(stages)}"
            )
        return nn.ModuleList(stages[:n])

    def _eval_layers(self, pl_module: L.LightningModule) -> list[nn.Module]:
        layers = list(self.frozen(pl_module).modules())
        if self.norm_eval:
            layers += [
                m for m in self.flatten_modules(module_encoder(pl_module)) if isinstance(m, _BatchNorm)
            ]
        return layers

    def _keep_eval(self, pl_module: L.LightningModule) -> None:
        for layer in self._eval_layers(pl_module):
            layer.eval()

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        """Freeze the first stages (BaseFinetuning's ``freeze``, batch norms included) and set eval modes."""
        if not self.active:
            return
        self.freeze(self.frozen(pl_module), train_bn=False)
        self._keep_eval(pl_module)

    def finetune_function(
        self, pl_module: L.LightningModule, current_epoch: int, optimizer: Optimizer
    ) -> None:
        """Nothing is unfrozen; the eval modes are set again (a ``.train()`` since set-up would undo them)."""
        if self.active:
            self._keep_eval(pl_module)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # no super(): BaseFinetuning would replace the optimizer's param groups by the ones stored at the
        # first epoch's start, learning rates included; this callback adds no group, so the groups
        # configure_optimizers built and the restored optimizer state are already right
        if not self.active:
            return
        if self.norm_eval:
            norms = [m for m in module_encoder(pl_module).modules() if isinstance(m, _BatchNorm)]
            log.info(
                "%s.norm_eval: the encoder's %d batch norms keep their running statistics",
                SETTING,
                len(norms),
            )
        if self.frozen_stages:
            frozen = sum(p.numel() for p in self.frozen(pl_module).parameters())
            log.info(
                "%s.frozen_stages: the encoder's first %d stages (%d weights) are not trained",
                SETTING, self.frozen_stages, frozen,
            )  # fmt: skip
        # Lightning's fit loop warns about modules in eval mode at the start of training (a
        # PossibleUserWarning): here the frozen or norm-eval encoder layers are meant to be
        warnings.filterwarnings(
            "ignore",
            message=r"Found \d+ module\(s\) in eval mode at the start of training",
            category=PossibleUserWarning,
        )

    def state_dict(self) -> dict:
        """Nothing to keep: the frozen layers follow from the settings (see :meth:`on_fit_start`)."""
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Nothing to restore (see :meth:`state_dict`)."""
