"""Learning-rate schedules over a wall-clock budget, so a run cut by ``trainer.max_time`` ends decayed.

A schedule over epochs or steps needs to know how many there will be; under a time budget
(``+budget=45min``) nobody does. :class:`TimeBudgetSchedule` sets the learning rate before every
optimizer step from the share of the budget used so far: a linear warm-up over ``warmup`` of the
budget, then poly (``(1 - t)^power``) or cosine decay to ``min_factor`` at the end of the budget,
exactly when Lightning stops the run. Time is wall-clock since fitting started, validation included,
which is what ``trainer.max_time`` counts too. On resume the elapsed time continues from the
checkpoint (callback state), so a resumed run keeps its place in the schedule.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from segvn.errors import ConfigError


class TimeBudgetSchedule(Callback):
    """Warm-up then poly/cosine decay of every param group's lr over ``minutes`` of training."""

    def __init__(
        self,
        minutes: float,
        schedule: str = "poly",
        warmup: float = 0.02,
        power: float = 0.9,
        min_factor: float = 0.0,
    ) -> None:
        if minutes <= 0:
            raise ConfigError(f"budget.minutes must be > 0, got {minutes}")
        if schedule not in ("poly", "cosine"):
            raise ConfigError(f"budget.schedule must be poly or cosine, got {schedule!r}")
        if not 0.0 <= warmup < 1.0:
            raise ConfigError(f"budget.warmup must be a fraction in [0, 1), got {warmup}")
        self.seconds = float(minutes) * 60.0
        self.schedule, self.warmup, self.power, self.min_factor = schedule, warmup, power, min_factor
        self.elapsed_before = 0.0
        self._start: float | None = None
        self._base: list[float] | None = None

    def factor(self, fraction: float) -> float:
        """The learning-rate multiplier after ``fraction`` (0..1) of the budget."""
        t = min(max(fraction, 0.0), 1.0)
        if self.warmup and t < self.warmup:
            return (t / self.warmup) * self._decay(self.warmup)
        return self._decay(t)

    def _decay(self, t: float) -> float:
        cosine = self.schedule == "cosine"
        shape = 0.5 * (1.0 + math.cos(math.pi * t)) if cosine else (1.0 - t) ** self.power
        return self.min_factor + (1.0 - self.min_factor) * shape

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self._start if self._start is not None else 0.0)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()
        optimizer = trainer.optimizers[0]
        self._base = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for g, base in zip(optimizer.param_groups, self._base, strict=True):
            g["initial_lr"] = base
        self._set_lr(trainer)  # already the warm-up value when the first step (and its lr log) comes

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._set_lr(trainer)

    def _set_lr(self, trainer: L.Trainer) -> None:
        factor = self.factor(self.elapsed / self.seconds)
        for g, base in zip(trainer.optimizers[0].param_groups, self._base or [], strict=False):
            g["lr"] = base * factor

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.elapsed_before = float(state_dict.get("elapsed", 0.0))
