"""From a predict config and a checkpoint to what the video pipeline needs: model, inputs, metadata.

The option mapping of ``segvn.predict``: which files to read (``input``, or the data config's
``predict`` split grouped by street), at which size the model sees them, the smoothing, and the
metadata that ``summary.json`` records. :func:`load_predictor` (the model half) is also how
``segvn.load_model`` builds its model, so the Python API labels a frame as the command does.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from torch import nn

from segvn.inference.fleet import take_shard
from segvn.inference.options import batch_size_for, model_threads_for, model_workers_for, preset_for
from segvn.inference.precision import InferencePrecision
from segvn.inference.predictor import Predictor
from segvn.inference.runtime_choice import inference_model
from segvn.inference.runtimes import RuntimeModel
from segvn.inference.scale import ImageSizeChoice, model_stride, parse_size, resolve_image_size, training_size
from segvn.inference.smoothing import TemporalEMA
from segvn.inference.video import collect_inputs, output_names
from segvn.models.checkpoint import Checkpoint

log = logging.getLogger(__name__)


@dataclass
class PredictionSession:
    """A loaded model and the inputs of one ``segvn.predict`` run."""

    predictor: Predictor
    class_names: list[str]
    videos: list[Path] = field(default_factory=list)
    image_groups: list[tuple[str, list[tuple[Path, str]]]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def _inputs(cfg: Any, ckpt: Checkpoint) -> tuple[list[Path], list, Any, str]:
    """``(videos, image_groups, data image size, description)`` of ``cfg.input`` or the prediction set."""
    if cfg.input is not None:
        videos, images = collect_inputs(cfg.input)
        groups = [(str(cfg.input), list(zip(images, output_names(images), strict=True)))] if images else []
        return videos, groups, None, str(cfg.input)
    dm = instantiate(cfg.data)
    ckpt.require_classes(dm.class_names)
    by_street: dict[str, list[Path]] = defaultdict(list)
    for sample in dm.require("predict").samples:
        by_street[sample.street].append(sample.image)
    groups = [
        (street, [(p, f"{street}/{n}") for p, n in zip(paths, output_names(paths), strict=True)])
        for street, paths in by_street.items()
    ]
    return [], groups, dm.image_size, f"prediction set ({', '.join(by_street)}) under {dm.source.root}"


def predict_image_size(
    setting: Any, trained: tuple[int, int] | None, stride: int, data_size: Any = None
) -> ImageSizeChoice:
    """``image_size`` of predict: the training scale by default (:mod:`segvn.inference.scale`).

    With ``input=null`` the frames come from a data config; when it resizes (``data.image_size``, for the
    stored ``data=checkpoint`` the training size itself) that size is kept, as training saw those frames.
    """
    if setting is None and data_size is not None:
        size = parse_size(data_size, "data.image_size")
        return ImageSizeChoice(size, "training-scale" if size == trained else "data")
    return resolve_image_size(setting, trained, stride)


@dataclass
class LoadedPredictor:
    """A checkpoint's (or export's) model ready to label frames: what ``segvn.predict`` and
    :func:`segvn.load_model` both build, through :func:`load_predictor`."""

    predictor: Predictor
    class_names: list[str]
    choice: ImageSizeChoice
    trained: tuple[int, int] | None
    runtime: str
    precision: InferencePrecision
    model: nn.Module
    smoother: TemporalEMA


def load_predictor(cfg: Any, ckpt: Checkpoint, out_dir: Path, data_size: Any = None) -> LoadedPredictor:
    """The model of ``ckpt`` with a :class:`~segvn.inference.options.PredictConfig`'s settings (``model``,
    ``device``, ``runtime``, ``model_file``, ``precision``, ``channels_last``, ``image_size``, ``temporal``,
    ``tta_flip``, ``model_workers``) as a :class:`Predictor`. ``out_dir`` receives the export that
    ``runtime=onnx|torchscript`` makes of a ``.ckpt`` without ``model_file``; ``data_size`` is the frame
    size of a resizing data config (``input=null``, :func:`predict_image_size`)."""
    module = ckpt.model(cfg.model)
    class_names = list(module.class_names)
    trained = training_size(ckpt.config)
    choice = predict_image_size(cfg.image_size, trained, model_stride(module), data_size)
    temporal = cfg.temporal
    smoother = TemporalEMA(float(temporal.ema), bool(temporal.flow_aligned))
    chosen = inference_model(cfg, ckpt, module, Path(out_dir))
    model = chosen.model
    predictor = Predictor(
        model, cfg.device, choice.size, smoother, len(class_names), tta_flip=bool(cfg.tta_flip)
    )
    predictor.workers = model_workers_for(cfg.model_workers, predictor.device, chosen.runtime, smoother.ema)
    if predictor.workers > 1 and isinstance(model, RuntimeModel):  # the cores shared out between them
        model.set_threads(model_threads_for(predictor.workers))
    return LoadedPredictor(
        predictor, class_names, choice, trained, chosen.runtime, chosen.precision, model, smoother
    )


def prediction_meta(cfg: Any, ckpt: Checkpoint, loaded: LoadedPredictor, described: str) -> dict[str, Any]:
    """What ``summary.json`` records of the model and settings of a run on ``described`` inputs."""
    predictor, choice, trained, precision = loaded.predictor, loaded.choice, loaded.trained, loaded.precision
    smoother, temporal, model = loaded.smoother, cfg.temporal, loaded.model
    return {
        "checkpoint": str(ckpt.path.resolve()),
        "input": described,
        "device": str(predictor.device),
        "runtime": loaded.runtime,
        "precision": precision.name,
        "channels_last": precision.channels_last,
        "model_file": str(getattr(model, "path", "")) or None,
        "batch_size": batch_size_for(cfg.batch_size, predictor.device),
        "model_workers": predictor.workers,
        "video_preset": preset_for(cfg.output.preset),
        # the model input size (per frame size in image_sizes once frames were seen; see run_prediction)
        "image_size": list(choice.size) if isinstance(choice.size, tuple) else None,
        "image_size_rule": choice.rule,
        "training_image_size": list(trained) if trained else None,
        "temporal": {
            "ema": smoother.ema,
            "flow_aligned": smoother.flow_aligned,
            "tc": temporal.tc,
            "tc_scale": temporal.tc_scale,
            "tc_flow": str(temporal.tc_flow),
        },
        "class_names": loaded.class_names,
        "tta_flip": bool(cfg.tta_flip),
        "shard": int(cfg.get("shard", 0)),
        "num_shards": int(cfg.get("num_shards", 1)),
    }


def setup_prediction(cfg: Any, ckpt: Checkpoint) -> PredictionSession:
    """Build the predictor and list the inputs of a :class:`~segvn.inference.options.PredictConfig`."""
    videos, groups, data_size, described = _inputs(cfg, ckpt)
    shard, num_shards = int(cfg.get("shard", 0)), int(cfg.get("num_shards", 1))
    if num_shards > 1:
        videos = take_shard(videos, shard, num_shards)
        groups = [
            (label, take_shard(items, shard, num_shards, key=lambda i: i[0].name)) for label, items in groups
        ]
        groups = [(label, items) for label, items in groups if items]
        images = sum(len(items) for _, items in groups)
        described += f" (shard {shard} of {num_shards}: {len(videos)} video(s), {images} image(s))"
    loaded = load_predictor(cfg, ckpt, Path(cfg.paths.output_dir), data_size)
    meta = prediction_meta(cfg, ckpt, loaded, described)
    predictor, smoother = loaded.predictor, loaded.smoother
    log.info(
        "predicting %s on %s (%s %s, batch %d, %d model worker(s), model input %s, ema %s%s)",
        described, predictor.device, loaded.runtime, loaded.precision.describe(), meta["batch_size"],
        predictor.workers, loaded.choice.describe(), smoother.ema,
        ", flow-aligned" if smoother.flow_aligned and smoother.ema else "",
    )  # fmt: skip
    if smoother.ema and groups:
        log.info("temporal smoothing applies to videos only; images are predicted one by one")
    return PredictionSession(predictor, loaded.class_names, videos, groups, meta)
