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

from segvn.errors import NonFiniteWeightsError
from segvn.models.checkpoint import non_finite_count


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


def _moved(path: Any, old: str, new: str) -> Any:
    if isinstance(path, str) and path.startswith(old.rstrip(os.sep) + os.sep):
        return new.rstrip(os.sep) + path[len(old.rstrip(os.sep)) :]
    return path


class RunModelCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint``, whose saved state follows a run directory that was moved or copied.

    Its state in a checkpoint names absolute files (the best, the k-th best, the last) under the
    directory it wrote to. Lightning drops that state when ``dirpath`` changed, except the best path,
    which then still names a file of the run the directory was copied from (and is what
    ``segvn.train`` tests and reports). Here every path under the saved ``dirpath`` is moved under
    the current one first, so ``resume=`` of a copied run keeps ranking its checkpoints in the copy.
    """

    def _generate_state_key(self, **kwargs: Any) -> str:
        """Lightning's ``ModelCheckpoint`` key, so runs saved with it resume with their best-checkpoint ranking."""
        key = super()._generate_state_key(**kwargs)
        return (
            "ModelCheckpoint" + key.removeprefix(type(self).__qualname__)
            if type(self) is RunModelCheckpoint
            else key
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new:
            state_dict = dict(state_dict, dirpath=new)
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if key in state_dict:
                    state_dict[key] = _moved(state_dict[key], old, new)
            if isinstance(state_dict.get("best_k_models"), dict):
                state_dict["best_k_models"] = {
                    _moved(k, old, new): v for k, v in state_dict["best_k_models"].items()
                }
        super().load_state_dict(state_dict)


class LastCheckpoint(RunModelCheckpoint):
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
