"""Stop a diverging run at once: a non-finite loss or gradient ends training with a clear message.

Without it, ``model.optimizer.lr=1e9`` runs on with NaN weights, the run exits 0, and the NaN model is
saved as best and last. :class:`NonFiniteGuard` checks the loss and the gradients before every optimizer
step (so no NaN ever reaches the weights) and raises :class:`TrainingDivergedError` naming the epoch,
step, loss and learning rate, and which checkpoints were kept (or that none was written);
``segvn.train`` then exits 1 and the last good checkpoint, if any, stays.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from segvn.callbacks.checkpoints import kept_note
from segvn.errors import TrainingDivergedError


class NonFiniteGuard(Callback):
    """Raise :class:`TrainingDivergedError` on a non-finite loss or gradient (see the module docstring).

    With fp16 mixed precision the gradient scaler skips steps with infinite gradients by design, so
    only the loss is checked there.
    """

    def __init__(self, check_gradients: bool = True) -> None:
        self.check_gradients = check_gradients

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        loss = trainer.callback_metrics.get("train/loss_step")
        loss_value = float(loss) if loss is not None else float("nan")
        bad = loss is not None and not math.isfinite(loss_value)
        what = "loss"
        scaled = str(trainer.precision).startswith("16")
        if not bad and self.check_gradients and not scaled:
            grads = [
                p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None
            ]
            if grads and not bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
                bad, what = True, _describe_gradients(pl_module)
        if bad:
            lr = optimizer.param_groups[0].get("lr")
            raise TrainingDivergedError(
                f"training diverged at epoch {trainer.current_epoch}, step {trainer.global_step}: non-finite "
                f"{what} (loss {loss_value:.4g}, learning rate {lr:.4g}). The learning rate is the usual cause: "
                f"lower model.optimizer.lr (or set trainer.gradient_clip_val). {kept_note(_checkpoint_dirs(trainer))}"
            )


def _checkpoint_dirs(trainer: L.Trainer) -> list[Path]:
    """The folders the run's checkpoint callbacks write to."""
    callbacks = getattr(trainer, "checkpoint_callbacks", None) or []
    return [Path(cb.dirpath) for cb in callbacks if getattr(cb, "dirpath", None)]


def _describe_gradients(module: torch.nn.Module) -> str:
    """Which gradients are non-finite, or (all finite but their norm overflowed) the largest one."""
    named = [(n, p.grad) for n, p in module.named_parameters() if p.grad is not None]
    names = [n for n, g in named if not bool(g.isfinite().all())]
    if names:
        more = ", ..." if len(names) > 3 else ""
        return f"gradient in {len(names)} parameter(s): {', '.join(names[:3])}{more}"
    peak, name = max((float(g.abs().max()), n) for n, g in named)
    return f"gradient norm (exploding gradients: |grad| up to {peak:.3g} in {name})"
