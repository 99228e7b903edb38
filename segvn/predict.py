"""Segment videos and images with a checkpoint: ``python -m segvn.predict ckpt_path=PATH input=PATH``.

``input`` is a video, an image, or a folder of them; ``input=null`` (the default) predicts the data
module's prediction set (the ``predict`` streets of ``data=...``, by default the data config stored in the
checkpoint). Writes into the run directory one ``<video>_overlay.mp4`` per video (same size, frame count
and frame rate as the input), ``overlays/*.png`` for images, ``labels/`` with ``save_labels=true``,
``class_shares.csv``, ``summary.json`` (frames, seconds, end-to-end and model-only fps, TC) and
``config.yaml``. Decoding, inference and encoding run overlapped in threads with bounded queues (see
:mod:`segvn.viz.video_pipeline`); ``temporal.ema``/``temporal.flow_aligned`` smooth the predictions over
time (:class:`segvn.models.smoothing.TemporalEMA`).

Bad input ends in one logged error and exit status 1. A video that is truncated part-way keeps its
partial outputs (a playable video up to the damage, CSV rows), ``summary.json`` says ``partial`` and the
error names the file and the frame.
"""

from __future__ import annotations

import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from segvn.data.video import VideoError
from segvn.models.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from segvn.models.inference import Predictor, check_input_size
from segvn.models.smoothing import TemporalEMA
from segvn.utils import CONF_DIR, run_task, save_resolved_config
from segvn.utils.from_checkpoint import add_checkpoint_configs
from segvn.viz.video_pipeline import (
    PredictOptions,
    ProgressFactory,
    collect_inputs,
    output_names,
    run_prediction,
    summary_line,
)

log = logging.getLogger("segvn.predict")


class PredictConfigError(ValueError):
    """A setting of ``conf/predict.yaml`` that cannot work (the message names it)."""


class PartialPredictionError(RuntimeError):
    """Some input ended early (truncated video, unreadable image); its outputs so far were kept."""


class _FpsColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:.2f} fps" if task.speed else "-- fps", style="progress.data.speed")


def _options(cfg: DictConfig) -> PredictOptions:
    video = cfg.get("video") or {}
    output = cfg.get("output") or {}
    temporal = cfg.get("temporal") or {}
    try:
        return PredictOptions(
            batch_size=cfg.batch_size,
            alpha=cfg.alpha,
            legend=cfg.legend,
            legend_corner=cfg.legend_corner,
            save_labels=cfg.save_labels,
            max_frames=cfg.max_frames,
            tc=temporal.get("tc", True),
            tc_scale=temporal.get("tc_scale", 0.5),
            tc_flow=temporal.get("tc_flow", "fast"),
            crf=output.get("crf", 20),
            preset=output.get("preset", "superfast"),
            backend=str(video.get("backend", "pyav")),
            threads=video.get("threads", 0),
            queue_size=cfg.get("queue_size", 2),
        )
    except ValueError as err:
        raise PredictConfigError(str(err)) from err


def _inputs(cfg: DictConfig, class_names: list[str]) -> tuple[list[Path], list, Any, str]:
    """``(videos, image_groups, default input size, description)`` of ``cfg.input`` or the prediction set."""
    if cfg.input is not None:
        videos, images = collect_inputs(cfg.input)
        groups = [(str(cfg.input), list(zip(images, output_names(images), strict=True)))] if images else []
        return videos, groups, None, str(cfg.input)
    dm = instantiate(cfg.data)
    if list(dm.class_names) != class_names:
        raise CheckpointError(
            f"{cfg.ckpt_path}: the model predicts {len(class_names)} classes ({', '.join(class_names)}) but the "
            f"data has {len(dm.class_names)} ({', '.join(dm.class_names)}); use data whose classes match"
        )
    samples = dm.require("predict").samples
    by_street: dict[str, list[Path]] = defaultdict(list)
    for sample in samples:
        by_street[sample.street].append(sample.image)
    groups = [
        (street, [(p, f"{street}/{n}") for p, n in zip(paths, output_names(paths), strict=True)])
        for street, paths in by_street.items()
    ]
    where = f"prediction set ({', '.join(by_street)}) under {dm.source.root}"
    return [], groups, dm.image_size, where


def _progress_factory(progress: Progress) -> ProgressFactory:
    def start(label: str, total: int | None):
        task = progress.add_task(label, total=total)
        return lambda n: progress.advance(task, n)

    return start


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Run the prediction described by ``cfg``; returns ``summary.json``'s content."""
    out = Path(cfg.paths.output_dir)
    save_resolved_config(cfg, out / "config.yaml")
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise PredictConfigError("missing ckpt_path=PATH (a checkpoint written by segvn.train)")
    options = _options(cfg)
    ckpt = load_checkpoint(cfg.ckpt_path)
    module = model_from_checkpoint(ckpt, cfg.model, cfg.ckpt_path)
    class_names = list(module.class_names)
    videos, groups, data_size, described = _inputs(cfg, class_names)
    input_size = cfg.input_size if cfg.input_size is not None else data_size
    temporal = cfg.get("temporal") or {}
    try:
        input_size = check_input_size(input_size)
        smoother = TemporalEMA(float(temporal.get("ema", 0.0)), bool(temporal.get("flow_aligned", False)))
        predictor = Predictor(module, cfg.device, input_size, smoother, len(class_names))
    except ValueError as err:
        raise PredictConfigError(f"{err} (see conf/predict.yaml)") from err
    meta = {
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "input": described,
        "device": str(predictor.device),
        "batch_size": options.batch_size,
        "input_size": list(input_size) if input_size else None,
        "temporal": {
            "ema": smoother.ema,
            "flow_aligned": smoother.flow_aligned,
            "tc": options.tc,
            "tc_scale": options.tc_scale,
            "tc_flow": options.tc_flow,
        },
        "class_names": class_names,
    }
    log.info(
        "predicting %s on %s (batch %d, model input %s, ema %s%s)",
        described,
        predictor.device,
        options.batch_size,
        "x".join(map(str, input_size)) if input_size else "frame size",
        smoother.ema,
        ", flow-aligned" if smoother.flow_aligned and smoother.ema else "",
    )
    if smoother.ema and groups:
        log.info("temporal smoothing applies to videos only; images are predicted one by one")
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _FpsColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not cfg.get("progress", True)) as progress:
        summary = run_prediction(
            predictor, out, class_names, options, videos, groups, _progress_factory(progress), meta
        )
    log.info("%s", summary_line(summary))
    if summary["errors"]:
        raise PartialPredictionError(
            "; ".join(summary["errors"])
            + f" -- the outputs up to there are kept in {out} (summary.json: status partial)"
        )
    return summary


def _run(cfg: DictConfig) -> dict[str, Any]:
    try:
        return predict(cfg)
    except (VideoError, CheckpointError, PredictConfigError, PartialPredictionError) as err:
        log.error("%s", err)
        sys.exit(1)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    run_task(_run, cfg)


def _add_checkpoint_configs() -> None:
    """:func:`add_checkpoint_configs`, with any unreadable checkpoint ending in one error line, exit 1."""
    try:
        add_checkpoint_configs()
    except Exception as err:  # torch.load lets some errors of garbage files through (IndexError, ...)
        path = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("ckpt_path=")), "checkpoint")
        logging.basicConfig(format="[%(levelname)s] %(message)s")
        log.error(
            "%s: cannot read checkpoint, the file is truncated or corrupt (%s: %s)",
            path,
            type(err).__name__,
            err,
        )
        sys.exit(1)


if __name__ == "__main__":
    _add_checkpoint_configs()
    main()
