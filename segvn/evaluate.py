"""Evaluate a checkpoint: ``python -m segvn.evaluate ckpt_path=PATH [split=test|val] [data=...]``.

Rebuilds model and data from the config stored in the checkpoint (command-line overrides win),
runs the split through the model and writes MATLAB-parity metrics into the run directory:
``metrics.json``, ``metrics.md``, ``class_metrics.csv``, ``image_metrics.csv``,
``confusion_matrix.png`` and, with ``save_images=true``, per-image overlays and comparisons.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from segvn.cli import Checkpoint, command
from segvn.inference.evaluation import evaluate_checkpoint
from segvn.inference.options import check_evaluate
from segvn.utils import save_resolved_config


def evaluate(cfg: DictConfig, ckpt: Checkpoint) -> dict:
    """Run the split through the checkpoint's model and write the reports; returns metrics.json."""
    check_evaluate(cfg)
    save_resolved_config(cfg, Path(cfg.paths.output_dir) / "config.yaml")
    columns = (TextColumn(f"evaluate {cfg.split}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:

        def advance_for(total: int):
            task = progress.add_task("eval", total=total)
            return lambda n: progress.advance(task, n)

        return evaluate_checkpoint(cfg, ckpt, advance_for)


main = command("evaluate", from_checkpoint=True, exports=True)(evaluate)

if __name__ == "__main__":
    main()
