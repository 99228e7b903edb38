"""Train a segmentation model: ``python -m segvn.train [+experiment=resnet18] [overrides]``.

Composes the config, instantiates data, model, callbacks, loggers and trainer, fits, tests the
best checkpoint, and writes ``config.yaml`` and ``metrics.json`` into the run directory.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from segvn.callbacks import ConfigInCheckpoint
from segvn.cli import command
from segvn.utils import instantiate_dict, save_resolved_config, to_container
from segvn.utils.io import write_json

log = logging.getLogger("segvn.train")


def _floats(metrics: dict) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        v = float(value)
        out[key] = None if math.isnan(v) else v
    return out


def train(cfg: DictConfig) -> dict:
    """Fit (and test) as the config says; returns the final metrics."""
    start = time.time()
    out_dir = Path(cfg.paths.output_dir)
    resolved = to_container(cfg)
    rank_zero_only(save_resolved_config)(cfg, out_dir / "config.yaml")
    L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    log.info("data: %s", datamodule.describe())
    model = instantiate(cfg.model)
    callbacks = instantiate_dict(cfg.get("callbacks"))
    for cb in callbacks:
        if isinstance(cb, ConfigInCheckpoint):
            cb.config = resolved
    loggers = instantiate_dict(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(resolved)

    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = _floats(trainer.callback_metrics)

    ckpt = trainer.checkpoint_callback
    best = ckpt.best_model_path if ckpt is not None else ""
    if cfg.get("test", True):
        if datamodule.has_split("test"):
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=False)
            metrics.update(
                _floats({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
            )
        else:
            log.warning("no test split (data.source.test is empty): skipping the test stage")

    summary = {
        "metrics": {k: v for k, v in sorted(metrics.items()) if not k.endswith("_step")},
        "best_model_path": best,
        "last_model_path": getattr(ckpt, "last_model_path", "") if ckpt is not None else "",
        "best_model_score": float(ckpt.best_model_score)
        if ckpt is not None and ckpt.best_model_score is not None
        else None,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "seconds": round(time.time() - start, 2),
        "output_dir": str(out_dir),
    }
    if trainer.is_global_zero:
        write_json(out_dir / "metrics.json", summary)
    log.info("run directory: %s", out_dir)
    return summary


def _train_task(cfg: DictConfig) -> float | None:
    """The Hydra task: train, and hand a sweep the value of ``optimized_metric``."""
    summary = train(cfg)
    return summary["metrics"].get(cfg.get("optimized_metric") or "")


main = command("train")(_train_task)

if __name__ == "__main__":
    main()
