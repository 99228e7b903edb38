"""Train a segmentation model: ``python -m segvn.train [+experiment=resnet18] [overrides]``.

Composes the config, instantiates data, model, callbacks, loggers and trainer, fits, tests the
best checkpoint, and writes ``config.yaml`` and ``metrics.json`` into the run directory.
"""

from __future__ import annotations

import logging
import math
import secrets
import string
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, open_dict

from segvn.callbacks import ConfigInCheckpoint, LastCheckpoint, trim_csv_log
from segvn.cli import command, frozen_stages, resumable_checkpoint
from segvn.errors import CheckpointError, ConfigError
from segvn.models.checkpoint import Checkpoint
from segvn.models.factory import network_of, pooled_norms
from segvn.utils import instantiate_dict, save_resolved_config, to_container
from segvn.utils.cpu import BF16_CPU_FLAGS, native_bf16_cpu, on_cpu
from segvn.utils.io import write_json

log = logging.getLogger("segvn.train")


def _floats(metrics: dict) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        v = float(value)
        out[key] = None if math.isnan(v) else v
    return out


def _prepare_loggers(cfg: DictConfig) -> None:
    """Give the W&B logger a run id before config.yaml is written, so ``resume=RUN_DIR`` finds it."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if wandb_cfg is not None and not wandb_cfg.get("id"):
        alphabet = string.ascii_lowercase + string.digits  # W&B's own run-id alphabet
        with open_dict(cfg):
            cfg.logger.wandb.id = "".join(secrets.choice(alphabet) for _ in range(8))


def _resume_point(cfg: DictConfig, model: L.LightningModule) -> int | None:
    """The global step of ``ckpt_path``, checked to fit ``model`` (one clear error, nothing written), or ``None``."""
    if not cfg.get("ckpt_path"):
        return None
    ckpt = resumable_checkpoint(cfg.ckpt_path, cfg.model, model, frozen_stages(cfg))
    return int(ckpt.raw.get("global_step", 0))


def _init_weights(cfg: DictConfig, model: L.LightningModule) -> str | None:
    """Load the network weights of ``init_from`` into ``model`` (fine-tuning: fresh optimiser, schedule and
    budget); one clear error when they do not fit or when a resume is asked for too. Returns the path."""
    path = cfg.get("init_from")
    if not path:
        return None
    if cfg.get("ckpt_path"):
        raise ConfigError(
            f"init_from={path} and ckpt_path={cfg.ckpt_path} both given: init_from starts a new run from a "
            "checkpoint's weights, ckpt_path (or resume=) goes on with its training state; choose one"
        )
    try:
        ckpt = Checkpoint.read(path)
        ckpt.require_classes(list(getattr(model, "class_names", [])))
        ckpt.require_fits(cfg.model, model)
    except CheckpointError as err:  # the same facts, with the setting named and the advice of a new run
        message = str(err).replace(
            "; train on with the model settings it was trained with, or start a new run",
            "; give init_from a checkpoint of the network configured here, or set the model settings it was "
            "trained with",
        )
        raise CheckpointError(f"init_from={path}: {message}") from None
    prefix = "net."
    weights = {k[len(prefix) :]: v for k, v in ckpt.raw["state_dict"].items() if k.startswith(prefix)}
    network_of(model).load_state_dict(weights, strict=True)
    log.info("init_from: the network starts from %s (%d tensors)", path, len(weights))
    return str(path)


def _check_precision(cfg: DictConfig) -> None:
    """Log the training precision; warn when bf16 would be emulated (a CPU without native bf16)."""
    precision = str(cfg.trainer.get("precision", "32-true"))
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if on_cpu(accelerator) and "bf16" in precision and not native_bf16_cpu():
        log.warning(
            "trainer.precision=%s on a CPU without native bf16 (no %s flag): bf16 is emulated, several "
            "times slower per step than fp32; set trainer.precision=32-true",
            precision, " or ".join(BF16_CPU_FLAGS),
        )  # fmt: skip
    else:
        log.info("trainer.precision=%s on %s", precision, accelerator)


def _checkpoint_paths(trainer: L.Trainer) -> tuple[ModelCheckpoint | None, str]:
    """The best-by-metric checkpoint callback and the path of last.ckpt."""
    best = next((cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)), None)
    last = next((cb.path for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)), "")
    return best, last


def _check_classes(model: L.LightningModule, datamodule) -> None:
    """One clear error, before any expensive set-up, when the network's classes are not the data's."""
    outputs = getattr(network_of(model), "num_classes", 0)
    if outputs and outputs != datamodule.num_classes:
        raise ConfigError(
            f"model.net.num_classes={outputs} but the data has {datamodule.num_classes} classes "
            f"({', '.join(datamodule.class_names)}); set model.net.num_classes={datamodule.num_classes}"
        )


def _check_batch_of_one(cfg: DictConfig, model: L.LightningModule) -> None:
    """One clear error, before anything is written, for ``data.batch_size=1`` with a network that cannot train on it."""
    one = int(cfg.data.get("batch_size", 0) or 0) == 1
    if not one or not cfg.get("train", True) or cfg.trainer.get("sync_batchnorm"):
        return  # synchronised BatchNorm normalises over the batches of all processes
    norms = pooled_norms(network_of(model))
    if norms:
        raise ConfigError(
            f"data.batch_size=1 cannot train this network: its BatchNorm after global pooling ({norms[0]}) "
            "needs at least 2 frames per batch; set data.batch_size=2 or more (with "
            "trainer.accumulate_grad_batches=N for a larger effective batch)"
        )


def train(cfg: DictConfig) -> dict:
    """Fit (and test) as the config says; returns the final metrics."""
    start = time.time()
    out_dir = Path(cfg.paths.output_dir)
    _prepare_loggers(cfg)
    resolved = to_container(cfg)
    L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    log.info("data: %s", datamodule.describe())
    model = instantiate(cfg.model)
    _check_classes(model, datamodule)
    _check_batch_of_one(cfg, model)
    _check_precision(cfg)
    resume_step = _resume_point(cfg, model)  # before config.yaml, the CSV log or a plot is written
    init_from = _init_weights(cfg, model)
    rank_zero_only(save_resolved_config)(cfg, out_dir / "config.yaml")
    callbacks = instantiate_dict(cfg.get("callbacks"))
    for cb in callbacks:
        if isinstance(cb, ConfigInCheckpoint):
            cb.config = resolved
    loggers = instantiate_dict(cfg.get("logger"))
    if resume_step is not None:
        for lg in loggers:
            if isinstance(lg, CSVLogger):  # rows after the checkpoint are logged again by the resumed run
                trimmed = rank_zero_only(trim_csv_log)(Path(lg.log_dir) / "metrics.csv", resume_step)
                if trimmed:
                    log.info("resume: dropped %d CSV-log rows written after step %d", trimmed, resume_step)
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, _convert_="partial"
    )
    per_device = int(cfg.data.get("batch_size", 0) or 0)
    effective = per_device * trainer.world_size * int(cfg.trainer.get("accumulate_grad_batches", 1) or 1)
    log.info(
        "batch: %d per device x %d process(es) x %s accumulation = %d per optimizer step",
        per_device, trainer.world_size, cfg.trainer.get("accumulate_grad_batches", 1), effective,
    )  # fmt: skip
    for lg in loggers:
        lg.log_hyperparams({**resolved, "effective_batch_size": effective, "world_size": trainer.world_size})

    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = _floats(trainer.callback_metrics)

    ckpt, last = _checkpoint_paths(trainer)
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
        "last_model_path": last,
        "best_model_score": float(ckpt.best_model_score)
        if ckpt is not None and ckpt.best_model_score is not None
        else None,
        "test_confusion_matrix": model.last_summary["test"]["confmat"].long().tolist()
        if "test" in model.last_summary
        else None,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "effective_batch_size": effective,
        "world_size": trainer.world_size,
        "resumed_from_step": resume_step,
        "init_from": init_from,
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
