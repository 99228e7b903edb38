"""Typed options of the commands that start from a checkpoint: ``segvn.predict`` and ``segvn.evaluate``.

Each dataclass is the schema of one command's config, registered in Hydra's ConfigStore as
``<command>_schema`` and named first in ``conf/<command>.yaml``'s defaults list, so every default is
written here once, a wrong type fails when the config is composed (``batch_size=abc`` names the key
before anything is loaded), and the pipeline reads the same fields whether it is called from the
command line or from Python (``PredictConfig(batch_size=2)``). Ranges Hydra cannot express are
checked by :func:`check_predict` / :func:`check_evaluate`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from segvn.errors import ConfigError
from segvn.utils.schema import VideoBackend, VideoConfig

RUNTIMES = ("torch", "onnx", "torchscript", "openvino")
LEGEND_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


class FlowPreset(str, Enum):
    """OpenCV DIS optical-flow presets (temporal consistency and flow-aligned smoothing)."""

    ultrafast = "ultrafast"
    fast = "fast"
    medium = "medium"

    def __str__(self) -> str:
        return self.value


@dataclass
class OutputOptions:
    """The overlay video: H.264 (libx264 via PyAV), yuv420p, constant frame rate = the input's."""

    crf: int = 20
    # libx264 preset; null = preset_for(): ultrafast on machines of up to 4 cores, superfast above.
    preset: str | None = None
    encoder_threads: int = 0  # libx264 threads; 0 = x264's choice (1.5 per core)


@dataclass
class TemporalOptions:
    """Smoothing over time and the temporal-consistency measure (videos only)."""

    ema: float = 0.0  # EMA of class probabilities over frames: 0 = off, up to 0.95
    flow_aligned: bool = False  # warp the running average onto each new frame with DIS optical flow
    tc: bool = True  # measure temporal consistency (TC, Liu et al. 2020) on consecutive frames
    tc_scale: float = 0.5  # TC's flow and label comparison run at this fraction of the frame size
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
    shard: int = 0
    num_shards: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # frames per model call; null = 2 on the CPU, 8 on a GPU (see batch_size_for)
    batch_size: int | None = None
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
    runtime: str = "auto"
    model_file: Any = None
    # runtime=torch and openvino (segvn/inference/precision.py): auto = bf16 autocast on a GPU (and where
    # runtime=auto picked a bf16 runtime on the CPU), else fp32 | fp32 (with runtime=auto: onnx or openvino fp32
    # on the CPU) | bf16 (openvino: its bf16 precision hint, fp32 where the CPU has no native bf16)
    precision: str = "auto"
    channels_last: bool | None = (
        None  # runtime=torch: NHWC weights and inputs; null = auto (with auto's bf16)
    )
    max_frames: int | None = None  # stop each video (and image group) after this many frames
    tta_flip: bool = False  # average with the prediction of the mirrored frame (2x the model time)
    alpha: float = 0.4  # class colours blended at alpha (0.4 = the thesis / MATLAB labeloverlay)
    legend: bool = True
    legend_corner: str = "top-right"  # top-left | top-right | bottom-left | bottom-right
    save_labels: bool = False  # per-frame label maps as palette PNGs (pixel = class index) under labels/
    output: OutputOptions = field(default_factory=OutputOptions)
    temporal: TemporalOptions = field(default_factory=TemporalOptions)
    queue_size: int = 2  # batches waiting between the decode, model and writer threads
    # threads calling the model at once, on consecutive batches; null = auto (model_workers_for): 2 for
    # runtime=onnx on a CPU of 2+ cores without temporal smoothing, each with half the cores, else 1
    model_workers: int | None = None
    # an input that cannot be read: skip (record it in summary.json, go on, exit 1 at the end) | stop
    on_error: str = "skip"
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
    bf_tolerance: float = 0.0075  # BF score tolerance as a fraction of the image diagonal


@dataclass
class EvaluateConfig:
    """``conf/evaluate.yaml``: MATLAB-parity metrics of a checkpoint on a split."""

    ckpt_path: str = MISSING
    split: str = "test"
    save_images: bool = False  # per image: the overlay and a prediction-vs-truth comparison picture
    max_images: int | None = None
    device: str = "auto"
    batch_size: int | None = None  # default: data.eval_batch_size or data.batch_size
    tta_flip: bool = False  # average with the prediction of the mirrored frame (2x the model time)
    # only when the data's image_size differs from the training one (e.g. data.image_size=null): the model
    # sees frames at null = the training scale | native = the data's size | [h, w]; metrics at the data's size
    image_size: Any = None
    # torch | onnx | torchscript | openvino | auto, as in PredictConfig; onnx (fp32) by default, not auto: the metrics of
    # training's own test step, not bf16's (which moves a few boundary pixels)
    runtime: str = "onnx"
    model_file: Any = None
    precision: str = "auto"  # runtime=torch: auto | fp32 | bf16, as in PredictConfig
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
    frames: int = 4  # how many (sorted); 0 skips the check
    min_agreement: Any = None  # argmax agreement required; null: 0.999, for quantize=int8 0.95


@dataclass
class CalibrationOptions:
    """The frames whose activations set the int8 ranges (``quantize=int8``): frames like those the
    model will see, resized to its training scale."""

    images: str = "${paths.shared_dir}/datasets/camvid/train"  # a folder of PNG frames or a glob
    frames: int = 32  # how many, spread evenly over the sorted files


@dataclass
class ExportConfig:
    """``conf/export.yaml``: a checkpoint's network as ONNX or TorchScript, verified against PyTorch."""

    ckpt_path: str = MISSING
    format: str = "onnx"  # onnx | torchscript | openvino (an IR: FILE.xml + FILE.bin)
    # the file; null = beside the checkpoint with .onnx / .pt / .xml (.int8.onnx / .int8.xml when quantized)
    out: Any = None
    # null (fp32) | int8: ONNX (ONNX Runtime) or OpenVINO (NNCF), calibrated on calibration.images
    quantize: Any = None
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


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_predict(cfg: Any) -> None:
    """Ranges of a :class:`PredictConfig` (or its DictConfig); :class:`ConfigError` naming the setting."""
    _require(
        cfg.batch_size is None or int(cfg.batch_size) >= 1,
        f"batch_size must be >= 1 or null, got {cfg.batch_size}",
    )
    _require(
        cfg.max_frames is None or int(cfg.max_frames) >= 1,
        f"max_frames must be >= 1 or null, got {cfg.max_frames}",
    )
    _require(0.0 <= float(cfg.alpha) <= 1.0, f"alpha must be in [0, 1], got {cfg.alpha}")
    _require(
        cfg.legend_corner in LEGEND_CORNERS,
        f"legend_corner must be one of {', '.join(LEGEND_CORNERS)}, got {cfg.legend_corner!r}",
    )
    _require(
        0.0 < float(cfg.temporal.tc_scale) <= 1.0,
        f"temporal.tc_scale must be in (0, 1], got {cfg.temporal.tc_scale}",
    )
    _require(int(cfg.queue_size) >= 1, f"queue_size must be >= 1, got {cfg.queue_size}")
    workers = cfg.model_workers
    _require(workers is None or int(workers) >= 1, f"model_workers must be >= 1 or null, got {workers}")
    _require(
        workers is None or int(workers) == 1 or float(cfg.temporal.ema) == 0,
        f"model_workers={workers} predicts batches out of order, which temporal.ema={cfg.temporal.ema} "
        "cannot follow; set model_workers=1 (or null) or temporal.ema=0",
    )
    _require(cfg.on_error in ("skip", "stop"), f"on_error must be skip or stop, got {cfg.on_error!r}")
    _require(int(cfg.num_shards) >= 1, f"num_shards must be >= 1, got {cfg.num_shards}")
    _require(
        0 <= int(cfg.shard) < int(cfg.num_shards),
        f"shard={cfg.shard}: give 0 .. num_shards-1 (num_shards={cfg.num_shards})",
    )
    check_runtime(cfg)


def check_runtime(cfg: Any) -> None:
    choices = ("auto", *RUNTIMES)
    _require(cfg.runtime in choices, f"runtime must be one of {', '.join(choices)}, got {cfg.runtime!r}")


def check_export(cfg: Any) -> None:
    """:class:`ConfigError` naming the setting for an unknown format or a negative frame count."""
    formats = ("onnx", "torchscript", "openvino")
    _require(cfg.format in formats, f"format must be one of {', '.join(formats)}, got {cfg.format!r}")
    _require(int(cfg.verify.frames) >= 0, f"verify.frames must be >= 0, got {cfg.verify.frames}")
    floor = cfg.verify.min_agreement
    _require(
        floor is None or 0 <= float(floor) <= 1,
        f"verify.min_agreement must be null or in [0, 1], got {floor}",
    )
    _require(
        not cfg.quantize or int(cfg.calibration.frames) >= 1,
        f"calibration.frames must be >= 1 with quantize={cfg.quantize}, got {cfg.calibration.frames}",
    )


def absent_mode(cfg: Any) -> str:
    """``metrics.absent`` as text (``nan`` arrives from the command line as a float)."""
    mode = str(cfg.metrics.absent).lower()
    _require(mode in ("omit", "nan"), f"metrics.absent must be omit or nan, got {cfg.metrics.absent!r}")
    return mode


def check_evaluate(cfg: Any) -> None:
    """Ranges of an :class:`EvaluateConfig`; :class:`ConfigError` naming the setting."""
    _require(
        cfg.split in ("train", "val", "test", "predict"),
        f"split must be train, val or test, got {cfg.split!r}",
    )
    _require(
        cfg.batch_size is None or int(cfg.batch_size) >= 1, f"batch_size must be >= 1, got {cfg.batch_size}"
    )
    _require(
        cfg.max_images is None or int(cfg.max_images) >= 0, f"max_images must be >= 0, got {cfg.max_images}"
    )
    absent_mode(cfg)
    check_runtime(cfg)


def register_schemas() -> None:
    """Store ``predict_schema``, ``evaluate_schema`` and ``export_schema`` in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="predict_schema", node=PredictConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    cs.store(name="export_schema", node=ExportConfig)


register_schemas()
