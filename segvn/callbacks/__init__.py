"""Lightning callbacks of segvn, one module each (see ``conf/callbacks/default.yaml``)."""

from segvn.callbacks.budget import TimeBudgetSchedule
from segvn.callbacks.checkpoints import (
    AtomicCheckpointIO,
    LastCheckpoint,
    RunModelCheckpoint,
)
from segvn.callbacks.compile import TorchCompile
from segvn.callbacks.config import ConfigInCheckpoint
from segvn.callbacks.csv_log import ResumableCSVLogger, trim_csv_log
from segvn.callbacks.ema import EMA
from segvn.callbacks.epoch_csv import EpochMetricsCSV
from segvn.callbacks.finite import NonFiniteGuard
from segvn.callbacks.freeze import FreezeEncoder
from segvn.callbacks.memory_format import MemoryFormat
from segvn.callbacks.progress_plot import TrainingProgressPlot, find_csv_log
from segvn.callbacks.wandb_media import WandbMedia, validation_confmat

__all__ = [
    "AtomicCheckpointIO",
    "EMA",
    "FreezeEncoder",
    "LastCheckpoint",
    "MemoryFormat",
    "NonFiniteGuard",
    "ResumableCSVLogger",
    "RunModelCheckpoint",
    "TimeBudgetSchedule",
    "TorchCompile",
    "ConfigInCheckpoint",
    "EpochMetricsCSV",
    "TrainingProgressPlot",
    "WandbMedia",
    "find_csv_log",
    "trim_csv_log",
    "validation_confmat",
]
