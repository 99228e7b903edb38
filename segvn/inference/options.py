"""Typed options of the commands that start from a checkpoint: ``segvn.predict`` and ``segvn.evaluate``.

Each dataclass is the schema of one command's config, registered in Hydra's ConfigStore as
``<command>_schema`` and named first in ``conf/<command>.yaml``'s defaults list, so every default is
written here once, a wrong type fails when the config is composed (``batch_size=abc`` names the key
before anything is loaded), and the pipeline reads the same fields whether it is called from the
command line or from Python (``PredictConfig(batch_size=2)``). Settings with a fixed set of values are
:class:`~segvn.utils.schema.Choice` enums (a new runtime or format is one more member), numeric ranges
are :func:`~segvn.utils.schema.bounded` fields (:func:`~segvn.utils.schema.check_bounds`), and what
depends on two settings at once is checked by :func:`check_predict` / :func:`check_export` /
:func:`check_evaluate`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from segvn.errors import ConfigError
from segvn.utils.schema import Choice, OnError, Split, VideoBackend, VideoConfig, bounded, check_bounds


class Runtime(Choice):
    """What runs the network: PyTorch, or an export of it (ONNX Runtime, TorchScript, OpenVINO); auto picks."""

    auto = "auto"
    torch = "torch"
    onnx = "onnx"
    torchscript = "torchscript"
    openvino = "openvino"


RUNTIMES = tuple(r.value for r in Runtime if r is not Runtime.auto)
"""The runtimes a model can run in (``auto`` is a choice among them)."""


class Precision(Choice):
    """runtime=torch: auto (bf16 autocast on a GPU, else fp32) | fp32 | bf16."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class ExportFormat(Choice):
    onnx = "onnx"
    torchscript = "torchscript"
    openvino = "openvino"


class Quantize(Choice):
    int8 = "int8"


class FlowPreset(Choice):
    """OpenCV DIS optical-flow presets (temporal consistency and flow-aligned smoothing)."""

    ultrafast = "ultrafast"
    fast = "fast"
    medium = "medium"


class X264Preset(Choice):
    """libx264's speed presets, fastest first."""

    ultrafast = "ultrafast"
    superfast = "superfast"
    veryfast = "veryfast"
    faster = "faster"
    fast = "fast"
    medium = "medium"
    slow = "slow"
    slower = "slower"
    veryslow = "veryslow"
    placebo = "placebo"


MAX_EMA = 0.95
"""The largest ``temporal.ema``: above it the average lags too far behind the video."""

LEGEND_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
LegendCorner = Choice("LegendCorner", [(c, c) for c in LEGEND_CORNERS])  # type: ignore[misc]
"""Where the class legend goes (the members are named as written: ``legend_corner=top-left``)."""


@dataclass
class OutputOptions:
    """The overlay video: H.264 (libx264 via PyAV), yuv420p, constant frame rate = the input's."""

    crf: int = bounded(20, ge=0, le=51)  # libx264 quality: 0 = lossless, 51 = worst
    # libx264 preset; null = preset_for(): ultrafast on machines of up to 4 cores, superfast above.
    preset: X264Preset | None = None
    encoder_threads: int = bounded(0, ge=0)  # libx264 threads; 0 = x264's choice (1.5 per core)


@dataclass
class TemporalOptions:
    """Smoothing over time and the temporal-consistency measure (videos only)."""

    ema: float = bounded(0.0, ge=0.0, le=MAX_EMA)  # EMA of class probabilities over frames: 0 = off
    flow_aligned: bool = False  # warp the running average onto each new frame with DIS optical flow
    tc: bool = True  # measure temporal consistency (TC, Liu et al. 2020) on consecutive frames
    # TC's flow and label comparison run at this fraction of the frame size
    tc_scale: float = bounded(0.5, gt=0.0, le=1.0)
    tc_flow: FlowPreset = FlowPreset.ultrafast  # DIS preset of TC's flow (segvn.inference.consistency)


@dataclass
class PredictConfig:
    """``conf/predict.yaml``: segment videos and images with a checkpoint."""

    ckpt_path: str = MISSING
    # a video, an image, a folder of videos and/or images (not recursive), or a .txt list of them (one path a
    # line, relative to the list's folder); null = the data's predict split
    input: Any = None
    # this machine's share of the inputs: the inputs whose file name hashes to `shard` of `num_shards`
    # (segvn/inference/fleet.py); a multirun over shard=0,1,...,n-1 merges the shards' summaries at the end
    shard: int = bounded(0, ge=0)
    num_shards: int = bounded(1, ge=1)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # frames per model call; null = 2 on the CPU, 8 on a GPU (see batch_size_for)
    batch_size: int | None = bounded(None, ge=1)
    # the size frames are resized to before the model (scores are brought back to the frame size):
    # null = the training scale (short side = the checkpoint's training short side, rounded to the output
    # stride, aspect kept; native if it was trained at native size; for input=null a resizing data config's
    # image_size), native = the frame size, [height, width] = that size (see segvn/inference/scale.py)
    image_size: Any = None
    # auto | torch | onnx | torchscript | openvino: onnx, torchscript and openvino run model_file (from
    # segvn.export; openvino: an IR .xml), or without it an export of the checkpoint made in the run directory
    # first. auto = the fastest measured (segvn/inference/precision.py): torch on a GPU; on the CPU whichever
    # of onnx and openvino (fp32), and on a CPU with native bf16 (AVX512-BF16, AMX) torch bf16 +
    # channels_last and openvino bf16, runs this network faster, timed at start
    # (measured: docs/notes/code_defaults.md)
    runtime: Runtime = Runtime.auto
    model_file: Any = None
    # runtime=torch and openvino (segvn/inference/precision.py): auto = bf16 autocast on a GPU (and where
    # runtime=auto picked a bf16 runtime on the CPU), else fp32 | fp32 (with runtime=auto: onnx or openvino fp32
    # on the CPU) | bf16 (openvino: its bf16 precision hint, fp32 where the CPU has no native bf16)
    precision: Precision = Precision.auto
    channels_last: bool | None = (
        None  # runtime=torch: NHWC weights and inputs; null = auto (with auto's bf16)
    )
    max_frames: int | None = bounded(None, ge=1)  # stop each video (and image group) after this many frames
    tta_flip: bool = False  # average with the prediction of the mirrored frame (2x the model time)
    alpha: float = bounded(0.4, ge=0.0, le=1.0)  # class colours blended at alpha (0.4 = MATLAB labeloverlay)
    legend: bool = True
    legend_corner: LegendCorner = LegendCorner["top-right"]  # type: ignore[valid-type]
    save_labels: bool = False  # per-frame label maps as palette PNGs (pixel = class index) under labels/
    output: OutputOptions = field(default_factory=OutputOptions)
    temporal: TemporalOptions = field(default_factory=TemporalOptions)
    queue_size: int = bounded(2, ge=1)  # batches waiting between the decode, model and writer threads
    # threads calling the model at once, on consecutive batches; null = auto (model_workers_for): 2 for
    # runtime=onnx on a CPU of 2+ cores without temporal smoothing, each with half the cores, else 1
    model_workers: int | None = bounded(None, ge=1)
    # an input that cannot be read: skip (record it in summary.json, go on, exit 1 at the end) | stop
    on_error: OnError = OnError.skip
    progress: bool = True
    # decoding runs in its own thread here, so decord's read-ahead thread only competes with the model for
    # the CPU: PyAV is faster here (measured: docs/notes/code_defaults.md)
    video: VideoConfig = field(default_factory=lambda: VideoConfig(backend=VideoBackend.pyav))
    task_name: str = "predict"
    tags: list[str] = field(default_factory=lambda: ["predict"])
    data: Any = None
    model: Any = None
    paths: Any = None


@dataclass
class MetricsOptions:
    """MATLAB ``evaluateSemanticSegmentation`` parity (see :mod:`segvn.metrics`)."""

    # classes absent from the truth of the whole set: omit (left out of the means, with a warning;
    # mmsegmentation and older MATLAB) | nan (NaN, as current MATLAB). Text, not an enum: Hydra's
    # parser turns `metrics.absent=nan` into a float before an enum sees it.
    absent: Any = "omit"
    bf_tolerance: float = bounded(0.0075, gt=0.0)  # BF score tolerance as a fraction of the image diagonal


@dataclass
class EvaluateConfig:
    """``conf/evaluate.yaml``: MATLAB-parity metrics of a checkpoint on a split."""

    ckpt_path: str = MISSING
    split: Split = Split.test
    save_images: bool = False  # per image: the overlay and a prediction-vs-truth comparison picture
    max_images: int | None = bounded(None, ge=0)
    device: str = "auto"
    batch_size: int | None = bounded(None, ge=1)  # default: data.eval_batch_size or data.batch_size
    tta_flip: bool = False  # average with the prediction of the mirrored frame (2x the model time)
    # only when the data's image_size differs from the training one (e.g. data.image_size=null): the model
    # sees frames at null = the training scale | native = the data's size | [h, w]; metrics at the data's size
    image_size: Any = None
    # torch | onnx | torchscript | openvino | auto, as in PredictConfig; onnx (fp32) by default, not auto: the metrics of
    # training's own test step, not bf16's (which moves a few boundary pixels)
    runtime: Runtime = Runtime.onnx
    model_file: Any = None
    precision: Precision = Precision.auto  # runtime=torch: auto | fp32 | bf16, as in PredictConfig
    channels_last: bool | None = None  # runtime=torch: null = auto, as in PredictConfig
    metrics: MetricsOptions = field(default_factory=MetricsOptions)
    task_name: str = "evaluate"
    tags: list[str] = field(default_factory=lambda: ["eval"])
    data: Any = None
    model: Any = None
    logger: Any = None
    paths: Any = None


@dataclass
class VerifyOptions:
    """The check of an export against PyTorch on real frames."""

    images: str = "${paths.shared_dir}/datasets/camvid/val"  # a folder of PNG frames or a glob
    frames: int = bounded(4, ge=0)  # how many (sorted); 0 skips the check
    # argmax agreement required; null: 0.999, for quantize=int8 0.95
    min_agreement: float | None = bounded(None, ge=0.0, le=1.0)


@dataclass
class CalibrationOptions:
    """The frames whose activations set the int8 ranges (``quantize=int8``): frames like those the
    model will see, resized to its training scale."""

    images: str = "${paths.shared_dir}/datasets/camvid/train"  # a folder of PNG frames or a glob
    frames: int = bounded(32, ge=1)  # how many, spread evenly over the sorted files


@dataclass
class ExportConfig:
    """``conf/export.yaml``: a checkpoint's network as ONNX or TorchScript, verified against PyTorch."""

    ckpt_path: str = MISSING
    format: ExportFormat = ExportFormat.onnx  # onnx | torchscript | openvino (an IR: FILE.xml + FILE.bin)
    # the file; null = beside the checkpoint with .onnx / .pt / .xml (.int8.onnx / .int8.xml when quantized)
    out: Any = None
    # null (fp32) | int8: ONNX (ONNX Runtime) or OpenVINO (NNCF), calibrated on calibration.images
    quantize: Quantize | None = None
    calibration: CalibrationOptions = field(default_factory=CalibrationOptions)
    verify: VerifyOptions = field(default_factory=VerifyOptions)
    task_name: str = "export"
    tags: list[str] = field(default_factory=lambda: ["export"])
    model: Any = None
    paths: Any = None


def batch_size_for(batch_size: int | None, device: Any) -> int:
    """``batch_size``, or for null the measured default of ``device``'s type: 2 on the CPU, 8 on a GPU.

    On a CPU bigger batches only delay the writer (measured: docs/notes/code_defaults.md); a GPU needs
    batches to be kept busy.
    """
    if batch_size is not None:
        return int(batch_size)
    return 2 if str(getattr(device, "type", device)).startswith("cpu") else 8


def model_workers_for(
    workers: int | None, device: Any, runtime: str, ema: float, cores: int | None = None
) -> int:
    """``workers``, or for null the measured default: 2 for ``runtime=onnx`` on a CPU of 2 cores or more
    without temporal smoothing (``ema == 0``), else 1.

    On 2 cores ONNX Runtime's parallel regions wait for both threads, so whenever the decode or writer
    thread takes a core the model stalls. Two workers of one thread each, on consecutive batches, keep
    going (measured: docs/notes/code_defaults.md). Smoothing needs the batches in order,
    and torch's own thread pool is shared by every caller, so both keep one worker.
    """
    if workers is not None:
        return int(workers)
    cpu = str(getattr(device, "type", device)).startswith("cpu")
    return 2 if cpu and runtime == "onnx" and not ema and (cores or available_cores()) >= 2 else 1


def model_threads_for(workers: int, cores: int | None = None) -> int:
    """ONNX Runtime threads per model worker: the cores shared out between ``workers``."""
    return max(1, (cores or available_cores()) // max(1, workers))


SMALL_MACHINE_CORES = 4
"""Up to this many cores the encoder of the overlay video competes with the model for the CPU."""


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity, which containers and ``taskset`` narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def preset_for(preset: str | None, cores: int | None = None) -> str:
    """``preset``, or for null the libx264 preset for a machine of ``cores`` (default: this one's).

    On up to :data:`SMALL_MACHINE_CORES` cores every millisecond of encoding is taken from the model,
    so ultrafast (somewhat larger files); above, superfast (measured: docs/notes/code_defaults.md).
    """
    if preset is not None:
        return str(preset)
    return "ultrafast" if (cores or available_cores()) <= SMALL_MACHINE_CORES else "superfast"


def check_predict(cfg: Any) -> None:
    """A :class:`PredictConfig` (or its DictConfig) whose settings work together; :class:`ConfigError` if not.

    The ranges of single settings come from the schema (:func:`~segvn.utils.schema.check_bounds`);
    here is what depends on two.
    """
    check_bounds(cfg)
    workers, ema = cfg.model_workers, float(cfg.temporal.ema)
    if workers is not None and int(workers) > 1 and ema != 0:
        raise ConfigError(
            f"model_workers={workers} predicts batches out of order, which temporal.ema={ema} cannot "
            "follow; set model_workers=1 (or null) or temporal.ema=0"
        )
    if not int(cfg.shard) < int(cfg.num_shards):
        raise ConfigError(f"shard={cfg.shard}: give 0 .. num_shards-1 (num_shards={cfg.num_shards})")


def check_export(cfg: Any) -> None:
    """An :class:`ExportConfig` in range (quantize needs format=onnx or openvino: :func:`export_checkpoint`
    says so)."""
    check_bounds(cfg)


def absent_mode(cfg: Any) -> str:
    """``metrics.absent`` as text (``nan`` arrives from the command line as a float)."""
    mode = str(cfg.metrics.absent).lower()
    if mode not in ("omit", "nan"):
        raise ConfigError(f"metrics.absent={cfg.metrics.absent}: give omit or nan")
    return mode


def check_evaluate(cfg: Any) -> None:
    """An :class:`EvaluateConfig` whose settings work; :class:`ConfigError` naming the setting if not."""
    check_bounds(cfg)
    absent_mode(cfg)


def register_schemas() -> None:
    """Store ``predict_schema``, ``evaluate_schema`` and ``export_schema`` in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="predict_schema", node=PredictConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    cs.store(name="export_schema", node=ExportConfig)


register_schemas()
