"""Checkpoints you can trust: ``last.ckpt`` that is really the last state, written atomically, never NaN.

Lightning's ``ModelCheckpoint(save_last=True)`` rewrites ``last.ckpt`` only when a monitored checkpoint
was saved at the same step, so a run whose best epoch was its first leaves ``last.ckpt`` there, and a
resume repeats epochs. :class:`LastCheckpoint` writes it at the end of every training epoch (after that
epoch's validation) and, with ``every_n_train_steps``, also every N optimizer steps.
:class:`AtomicCheckpointIO` writes every checkpoint to a temporary file and renames it over the old one,
so a kill never leaves a truncated file, and refuses to write one whose weights are not finite, so
the last good checkpoint (if one was written) stays.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from segvn.errors import SegvnError
from segvn.models.checkpoint import non_finite_count


class NonFiniteWeightsError(SegvnError, RuntimeError):
    """A model whose weights hold NaN or infinity: training diverged."""


def kept_note(folders: list[Path]) -> str:
    """What a diverged run leaves: the checkpoints in ``folders`` by name, or that none was written."""
    found = sorted({p for folder in folders if folder.is_dir() for p in folder.glob("*.ckpt") if p.is_file()})
    if not found:
        return "No checkpoint was written before this step."
    names = ", ".join(str(p) for p in found[:3]) + (", ..." if len(found) > 3 else "")
    return f"The checkpoints written before this step hold finite weights and are kept: {names}."


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``<name>.tmp`` and ``os.replace`` onto the file; non-finite weights are refused."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        bad = non_finite_count(checkpoint.get("state_dict", {}))
        if bad:
            raise NonFiniteWeightsError(
                f"refused to write {path}: {bad} weights are NaN or infinite (training diverged; lower "
                f"model.optimizer.lr or set trainer.gradient_clip_val). {kept_note([Path(path).parent])}"
            )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class LastCheckpoint(ModelCheckpoint):
    """``<dirpath>/last.ckpt``: the state at the end of every training epoch (and every N steps).

    ``every_n_train_steps`` (0 = off) adds mid-epoch saves, for long epochs on preemptible machines.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 0) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            save_last=False,
            every_n_epochs=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
            auto_insert_metric_name=False,
        )
        self.every_steps = int(every_n_train_steps)

    @property
    def path(self) -> str:
        """The file written (empty before the first save)."""
        return self.best_model_path

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kw: Any
    ) -> None:
        step = trainer.global_step
        due = self.every_steps and step and step % self.every_steps == 0
        if due and step != self._last_global_step_saved and not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
