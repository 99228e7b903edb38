"""Learning-rate schedules over a time budget, so a run cut by ``trainer.max_time`` ends decayed.

A schedule over epochs or steps needs to know how many there will be; under a time budget
(``+budget=45min``) nobody does. :class:`TimeBudgetSchedule` sets the learning rate before every
optimizer step from the share of the budget used so far: a linear warm-up over ``warmup`` of the
budget, then poly (``(1 - t)^power``) or cosine decay to ``min_factor`` at the end of the budget,
exactly when Lightning stops the run. Time is wall-clock since fitting started, validation included,
which is what ``trainer.max_time`` counts too. On resume the elapsed time continues from the
checkpoint (callback state), so a resumed run keeps its place in the schedule.

``clock="cpu"`` counts CPU time instead: the training process's (all its threads) and its data
workers', so two runs given the same budget do the same work however busy the machine is (another
job on the same cores slows the wall clock, not this one). Lightning's ``max_time`` only knows the
wall clock, so with ``clock="cpu"`` this callback ends the run itself (``trainer.should_stop``, after
which Lightning validates once more), and it also says when to validate: after every ``validate_every``
share of the budget in CPU time (the budget config then has Lightning ask after every batch, counting
batches across epochs, and this callback sets the batch Lightning validates at: only the next one, once
a share has passed since the last validation ended). A share of a short budget is often less than one
epoch, or many epochs of a small data set; per-epoch validation would spend a fixed share of the budget
on it whatever the data.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
import psutil
from lightning.pytorch.callbacks import Callback

from segvn.errors import ConfigError

log = logging.getLogger(__name__)

CLOCKS = ("wall", "cpu")


def cpu_seconds(process: psutil.Process | None = None) -> float:
    """CPU seconds (user + system) of ``process`` (default: this one), its finished children and its
    live descendants (a DataLoader's worker processes)."""
    process = process or psutil.Process()
    own = process.cpu_times()
    total = own.user + own.system + own.children_user + own.children_system
    for child in process.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:  # ended between the listing and the read: its time is in children_*
            continue
        total += times.user + times.system
    return total


class TimeBudgetSchedule(Callback):
    """Warm-up then poly/cosine decay of every param group's lr over ``minutes`` of training."""

    def __init__(
        self,
        minutes: float,
        schedule: str = "poly",
        warmup: float = 0.02,
        power: float = 0.9,
        min_factor: float = 0.0,
        clock: str = "wall",
        validate_every: float | None = None,
    ) -> None:
        if minutes <= 0:
            raise ConfigError(f"budget.minutes must be > 0, got {minutes}")
        if schedule not in ("poly", "cosine"):
            raise ConfigError(f"budget.schedule must be poly or cosine, got {schedule!r}")
        if not 0.0 <= warmup < 1.0:
            raise ConfigError(f"budget.warmup must be a fraction in [0, 1), got {warmup}")
        if clock not in CLOCKS:
            raise ConfigError(f"budget.clock={clock}: give one of {', '.join(CLOCKS)}")
        if validate_every is not None and not 0.0 < validate_every <= 1.0:
            raise ConfigError(
                f"budget.validate_every must be a share in (0, 1] or null, got {validate_every}"
            )
        self.clock, self.validate_every = clock, validate_every
        self.seconds = float(minutes) * 60.0
        self.schedule, self.warmup, self.power, self.min_factor = schedule, warmup, power, min_factor
        self.elapsed_before = 0.0
        self._start: float | None = None
        self._last_validation: float | None = None
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

    def _now(self) -> float:
        return cpu_seconds() if self.clock == "cpu" else time.monotonic()

    @property
    def elapsed(self) -> float:
        """Seconds of the budget used: wall-clock or CPU time (``clock``) since fitting started."""
        return self.elapsed_before + (self._now() - self._start if self._start is not None else 0.0)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last_validation = self._now()
        optimizer = trainer.optimizers[0]
        self._base = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for g, base in zip(optimizer.param_groups, self._base, strict=True):
            g["initial_lr"] = base
        self._set_lr(trainer)  # already the warm-up value when the first step (and its lr log) comes
        if self.clock == "cpu" and self.validate_every is not None:  # Lightning has just said "every batch"
            log.info(
                "budget.clock=cpu: validation after every %.0f CPU seconds (budget.validate_every=%g), and "
                "when the budget of %.0f CPU seconds is spent",
                self.validate_every * self.seconds, self.validate_every, self.seconds,
            )  # fmt: skip

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._set_lr(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.clock != "cpu":  # Lightning's max_time and time-based val_check_interval do the rest
            return
        now = self._now()  # one read of the clock (psutil walks the data workers) for both questions
        if self.elapsed_before + now - self._start >= self.seconds:
            trainer.should_stop = True  # Lightning validates once more when a run stops early
        if self.validate_every is not None:
            # with check_val_every_n_epoch=None Lightning validates when (total batch index + 1) is a
            # multiple of val_check_batch, asked right after this hook: this batch when due, else not yet
            batch = trainer.fit_loop.epoch_loop.total_batch_idx + 1
            due = now - self._last_validation >= self.validate_every * self.seconds
            trainer.val_check_batch = batch if due else batch + 1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._last_validation = self._now()

    def _set_lr(self, trainer: L.Trainer) -> None:
        factor = self.factor(self.elapsed / self.seconds)
        for g, base in zip(trainer.optimizers[0].param_groups, self._base or [], strict=False):
            g["lr"] = base * factor

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.elapsed_before = float(state_dict.get("elapsed", 0.0))
