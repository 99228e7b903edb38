"""``epoch_metrics.csv``: one clean row per epoch, the table people open first after a run."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class EpochMetricsCSV(Callback):
    """One row per epoch (epoch, step, lr and every epoch-level metric) in ``path``.

    Validation metrics appear only in the rows of epochs that validated (``check_val_every_n_epoch``,
    time-based ``val_check_interval`` under ``+budget``), not repeated from an earlier validation. The
    rows travel in every checkpoint (callback state), so a resumed run continues the same table
    without losing or repeating an epoch.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        self._validated = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state_dict.get("rows", [])]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row: dict[str, Any] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        if trainer.optimizers:
            row["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        validated, self._validated = self._validated, False
        for key, value in sorted(trainer.callback_metrics.items()):
            if key.endswith("_step") or (key.startswith("val/") and not validated):
                continue
            v = float(value)
            row[key] = "" if math.isnan(v) else v
        self.rows.append(row)
        fields = list(dict.fromkeys(k for r in self.rows for k in r))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)
