"""An exponential moving average of the weights, validated, checkpointed and tested in their place.

Lightning's :class:`~lightning.pytorch.callbacks.EMAWeightAveraging` swaps the average in for
validation and writes it as the checkpoint's ``state_dict`` (the raw weights go to
``current_model_state``), so the best checkpoint, ``segvn.evaluate`` and ``segvn.export`` all use
the average. One gap is closed here: the final ``trainer.test(ckpt_path="best")`` in the same process
would reload the *raw* weights from ``current_model_state`` (the callback still holds its fit-time
state), testing a model that was never validated. Outside fitting the checkpoint's ``state_dict``
is kept as it is.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class EMA(EMAWeightAveraging):
    """EMA of the weights (``decay`` per optimizer step); see the module docstring."""

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return  # test/validate/predict: the checkpoint's state_dict (the average) is the model
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
