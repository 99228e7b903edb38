"""The Python API of segvn: label frames and videos from a notebook or a service, no Hydra command needed.

# Python API

`segvn.load_model` reads a checkpoint (`.ckpt` from `python -m segvn.train`) or an exported file
(`.onnx` or TorchScript `.pt` from `python -m segvn.export`) and returns a `SegvnModel`. Its
`predict` gives the label map of a frame, `(H, W)` `uint8` class indices at the frame's own size,
exactly as `python -m segvn.predict` labels that image: the same objects run it (the model is built by
`segvn.inference.session.load_predictor`, which the command calls too), at the checkpoint's training
scale by default. `predict_video` runs the command's video pipeline (decode, batched model, overlay
video, `class_shares.csv`, `summary.json`), and `segvn.overlay` draws labels on a frame.

`import segvn` is cheap: torch and the rest load on the first use of the API.

A checkpoint of an untrained network (`untrained_checkpoint`) stands in for yours below, so every
example runs as written (they are part of the tests):

```python
>>> import tempfile
>>> import numpy as np
>>> import segvn
>>> from segvn.api import untrained_checkpoint
>>> workdir = tempfile.TemporaryDirectory()
>>> ckpt_path = untrained_checkpoint(f"{workdir.name}/model.ckpt")  # yours: runs/.../last.ckpt

```

## A model

```python
>>> model = segvn.load_model(ckpt_path, device="cpu")
>>> model.class_names
['building', 'car', 'fence', 'person', 'road', 'sidewalk', 'sky', 'vegetation']
>>> model.palette.shape  # the RGB colour of each class, in class order
(8, 3)
>>> model.input_size(540, 960)  # a 960x540 frame goes through the network at the training scale
(64, 112)

```

`device`: `auto` (a GPU when there is one), `cpu`, `cuda` or `cuda:N`. `runtime`: `auto` (as the
command: torch on a GPU, ONNX Runtime on the CPU, exporting the checkpoint to a temporary folder once),
`torch`, `onnx` or `torchscript`; an exported file runs in its own format. Any other setting of
`python -m segvn.predict` is a keyword: `image_size=[270, 480]` or `image_size="native"`,
`tta_flip=True`, `batch_size=4`, `precision="bf16"`, `temporal={"ema": 0.5}` (videos)...

## Labels of frames

A frame is an RGB `uint8` array `(H, W, 3)`, a PIL image or the path of an image file; a batch is a
list of them (any sizes) or an `(N, H, W, 3)` array, and gives a list or an `(N, H, W)` array.

```python
>>> frame = np.zeros((90, 160, 3), np.uint8)
>>> labels = model.predict(frame)
>>> labels.shape, labels.dtype
((90, 160), dtype('uint8'))
>>> labels, probs = model.predict(frame, probabilities=True)
>>> probs.shape  # (classes, H, W), summing to 1 over the classes; labels is their argmax
(8, 90, 160)
>>> bool(np.allclose(probs.sum(axis=0), 1, atol=1e-4))
True
>>> batch = model.predict(np.stack([frame, frame[::-1]]))
>>> batch.shape
(2, 90, 160)
>>> [labels.shape for labels in model.predict([frame, frame[:64, :96]])]
[(90, 160), (64, 96)]

```

## Pictures and videos

```python
>>> picture = segvn.overlay(frame, labels, model.class_names)  # colours at alpha 0.4, with a legend
>>> picture.shape, picture.dtype
((90, 160, 3), dtype('uint8'))

```

`predict_video(path, out)` writes into the folder `out` what the command writes for a video:
`<stem>_overlay.mp4` (same size, frame rate and frame count), `class_shares.csv`, `summary.json` and,
with `save_labels=True`, the label maps as PNGs; it returns the summary. `max_frames` stops early.

```python
>>> summary = model.predict_video("dashcam.mp4", out="dashcam_labels", max_frames=50)  # doctest: +SKIP
>>> summary["inputs"][0]["output"]  # doctest: +SKIP
'dashcam_labels/dashcam_overlay.mp4'
>>> workdir.cleanup()

```

Errors of the caller's making (a missing or corrupt file, a setting out of range) raise a
`segvn.SegvnError` whose one-line message names the file or the setting and how to fix it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image

from segvn.data.classes import palette_for
from segvn.data.io import read_image, to_rgb
from segvn.data.video import VIDEO_EXTENSIONS
from segvn.errors import CheckpointError, ConfigError, DataError, InputNotFoundError, PartialResultError
from segvn.inference.exported import read_model_source
from segvn.inference.options import PredictConfig, batch_size_for, check_predict
from segvn.inference.session import load_predictor, prediction_meta
from segvn.inference.video import run_prediction
from segvn.viz.overlay import DEFAULT_ALPHA, OverlayDrawer
from segvn.viz.overlay import overlay as blend

ImageInput = np.ndarray | Image.Image | str | os.PathLike
"""A frame: RGB ``uint8`` ``(H, W, 3)`` (or greyscale ``(H, W)``) array, PIL image, or image file path."""

COMMAND_ONLY = ("ckpt_path", "input", "data", "model", "paths", "task_name", "tags", "on_error", "progress")
"""Fields of ``PredictConfig`` that only the command has (inputs, run directory, one video vs many)."""
NOT_OPTIONS = (*COMMAND_ONLY, "device", "runtime")
"""Fields that are not keywords of ``load_model``: ``device`` and ``runtime`` are its arguments."""
MODEL_OPTIONS = ("image_size", "precision", "channels_last", "model_file", "tta_flip", "model_workers")
"""Options that shape the loaded model: ``load_model`` takes them, ``predict_video`` does not."""
OPTIONS = tuple(k for k in PredictConfig.__dataclass_fields__ if k not in NOT_OPTIONS)


def _config(base: Any, values: dict[str, Any], where: str) -> DictConfig:
    """``base`` (the ``PredictConfig`` schema or a config of it) with ``values``: a typed, checked config."""
    unknown = [k for k in values if k not in OPTIONS and k not in ("ckpt_path", "device", "runtime")]
    if unknown:
        raise ConfigError(f"{where}: unknown option {unknown[0]}; the options are {', '.join(OPTIONS)}")
    try:
        cfg = OmegaConf.merge(base, values)
    except OmegaConfBaseException as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{where}: {err.full_key or 'option'}: {message}") from err
    check_predict(cfg)
    return cfg  # type: ignore[return-value]


def load_model(
    path: str | os.PathLike, device: str = "auto", runtime: str = "auto", **options: Any
) -> SegvnModel:
    """The model of a checkpoint (``.ckpt``) or of an exported file (``.onnx``, TorchScript ``.pt``).

    ``device``: auto | cpu | cuda | cuda:N. ``runtime``: auto | torch | onnx | torchscript (an exported
    file runs in its own format). ``options``: the other settings of ``python -m segvn.predict``
    (``segvn.inference.options.PredictConfig``), e.g. ``image_size=[270, 480]``, ``tta_flip=True``,
    ``batch_size=4``, ``temporal={"ema": 0.5}``. A missing or unreadable file, or a bad setting, raises a
    ``SegvnError`` naming it.

    >>> import segvn
    >>> segvn.load_model("no/such/model.ckpt")
    Traceback (most recent call last):
    ...
    segvn.errors.CheckpointError: no/such/model.ckpt: checkpoint not found
    """
    cfg = _config(
        OmegaConf.structured(PredictConfig),
        {"ckpt_path": str(path), "device": str(device), "runtime": str(runtime), **options},
        "load_model",
    )
    if Path(path).expanduser().is_dir():
        raise CheckpointError(
            f"{path}: a folder; give a checkpoint file (<run>/checkpoints/last.ckpt) or an export (.onnx, .pt)"
        )
    ckpt = read_model_source(path)
    workdir = tempfile.TemporaryDirectory(prefix="segvn-model-")  # an export for runtime=onnx, if made
    loaded = load_predictor(cfg, ckpt, Path(workdir.name))
    return SegvnModel(cfg, ckpt, loaded, workdir)


def _frame(image: Any, what: str = "image") -> np.ndarray:
    """An RGB ``uint8`` ``(H, W, 3)`` array of an ``ImageInput``; ``DataError`` naming it otherwise."""
    if isinstance(image, str | os.PathLike):
        path = Path(image).expanduser()
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            raise DataError(f"{path}: a video; label it with model.predict_video({str(path)!r}, out=FOLDER)")
        if not path.is_file():
            raise InputNotFoundError(f"{path}: image not found")
        return read_image(path)
    if isinstance(image, Image.Image):
        return to_rgb(image)
    array = np.asarray(image) if not isinstance(image, np.ndarray) else image
    if array.dtype == np.uint8 and array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        hint = (
            " (scale floats in [0, 1] with (image * 255).astype(np.uint8))" if array.dtype.kind == "f" else ""
        )
        raise DataError(
            f"{what}: expected an RGB uint8 array (H, W, 3), a PIL image or an image path, got "
            f"{array.dtype} {array.shape}{hint}"
        )
    return np.ascontiguousarray(array)


def _frames(images: Any) -> tuple[list[np.ndarray], str]:
    """The frames of ``images`` and what was given: ``one`` frame, a ``list`` or an ``array`` batch."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return [_frame(f, f"image {i}") for i, f in enumerate(images)], "array"
    if isinstance(images, list | tuple):
        return [_frame(f, f"image {i}") for i, f in enumerate(images)], "list"
    return [_frame(images)], "one"


class SegvnModel:
    """A model loaded by ``load_model``: ``class_names``, ``palette``, ``predict``,
    ``predict_video`` and ``overlay``.

    Attributes: ``path`` (the file), ``class_names`` (output channel order), ``palette`` (``(C, 3)``
    RGB ``uint8``), ``device``, ``runtime`` (torch | onnx | torchscript), ``precision`` (fp32 | bf16 |
    int8), ``training_image_size`` (``(h, w)`` or ``None`` for native frames), ``predictor`` (the
    ``segvn.inference.predictor.Predictor`` that runs it).
    """

    def __init__(self, cfg: DictConfig, ckpt: Any, loaded: Any, workdir: Any = None) -> None:
        self._cfg, self._ckpt, self._loaded = cfg, ckpt, loaded
        self._workdir = workdir  # lives as long as the model: an ONNX export there is opened lazily
        self.path = Path(ckpt.path)
        self.class_names: list[str] = list(loaded.class_names)
        self.palette: np.ndarray = palette_for(len(self.class_names))
        self.predictor = loaded.predictor
        self.device = self.predictor.device
        self.runtime: str = loaded.runtime
        self.precision: str = loaded.precision.name
        self.training_image_size: tuple[int, int] | None = loaded.trained

    def __repr__(self) -> str:
        return (
            f"SegvnModel({self.path.name}: {len(self.class_names)} classes, {self.runtime} {self.precision} "
            f"on {self.device}, model input {self._loaded.choice.describe()})"
        )

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(h, w)`` the network sees a ``height`` x ``width`` frame at (labels come back at the frame's)."""
        return self.predictor.model_size(int(height), int(width))

    def predict(self, images: Any, probabilities: bool = False) -> Any:
        """Labels of a frame, ``(H, W)`` ``uint8`` class indices at its size; of a batch, a list (for a
        list) or an ``(N, H, W)`` array (for an ``(N, H, W, 3)`` array).

        ``probabilities=True`` returns ``(labels, probabilities)``, the probabilities ``(C, H, W)``
        ``float32`` per frame (stacked ``(N, C, H, W)`` for an array): the softmax of the scores resized
        to the frame, whose argmax the labels are. Frames are independent: no temporal smoothing here.
        """
        frames, given = _frames(images)
        if not frames:
            raise DataError("predict: no images given (an empty batch)")
        labels, probs = self._labels(frames, probabilities)
        if given == "one":
            return (labels[0], probs[0]) if probabilities else labels[0]
        if given == "array":
            labels = np.stack(labels)
            probs = np.stack(probs) if probabilities else probs
        return (labels, probs) if probabilities else labels

    def _labels(self, frames: list[np.ndarray], probabilities: bool) -> tuple[list, list]:
        """Consecutive frames of one size in batches of ``batch_size``, as ``segvn.predict`` runs images."""
        predictor = self.predictor
        size = batch_size_for(self._cfg.batch_size, predictor.device)
        labels: list[np.ndarray] = []
        probs: list[np.ndarray] = []
        smoother, predictor.smoother = predictor.smoother, None  # stills: never smoothed
        try:
            start = 0
            while start < len(frames):
                end = start + 1
                while end < len(frames) and end - start < size and frames[end].shape == frames[start].shape:
                    end += 1
                result = predictor(frames[start:end], probabilities=probabilities)
                labels.extend(result.labels)
                if probabilities:
                    probs.extend(result.probabilities)
                start = end
        finally:
            predictor.smoother = smoother
        return labels, probs

    def predict_video(
        self, path: str | os.PathLike, out: str | os.PathLike, **options: Any
    ) -> dict[str, Any]:
        """Label every frame of a video, as ``python -m segvn.predict input=VIDEO`` does, into folder ``out``.

        Writes ``<stem>_overlay.mp4`` (H.264, the input's size, frame rate and frame count),
        ``class_shares.csv``, ``summary.json`` and, with ``save_labels=True``, ``labels/<stem>/*.png``;
        returns the summary (``summary["inputs"][0]`` is the video's entry, ``output`` its overlay video).
        ``options``: ``max_frames``, ``save_labels``, ``alpha``, ``legend``, ``legend_corner``,
        ``batch_size``, ``temporal={"tc": False}``, ``output={"crf": 23}``... (not the settings of the
        model: give those to ``load_model``). As with the command, a second call into the same
        ``out`` with the same settings keeps the finished video. A video that breaks off part-way
        raises ``PartialResultError`` after writing every frame before the damage.
        """
        fixed = [k for k in options if k in MODEL_OPTIONS]
        fixed += [f"temporal.{k}" for k in ("ema", "flow_aligned") if k in (options.get("temporal") or {})]
        if fixed:
            raise ConfigError(
                f"predict_video: {fixed[0]} is a setting of the model; give it to segvn.load_model(path, "
                f"{fixed[0].split('.')[0]}=...)"
            )
        cfg = _config(self._cfg, options, "predict_video")
        video = Path(path).expanduser()
        if not video.is_file():
            raise InputNotFoundError(f"{video}: video not found")
        if video.suffix.lower() not in VIDEO_EXTENSIONS:
            raise DataError(
                f"{video}: not a video (known suffixes: {', '.join(sorted(VIDEO_EXTENSIONS))}); "
                "label images with model.predict"
            )
        out_dir = Path(out).expanduser()
        if out_dir.exists() and not out_dir.is_dir():
            raise ConfigError(
                f"out={out_dir}: a file; predict_video writes into a folder (give a new or a folder path)"
            )
        meta = prediction_meta(cfg, self._ckpt, self._loaded, str(video))
        predictor = self.predictor
        seen, predictor.sizes_used = predictor.sizes_used, {}  # the summary's image sizes: this video's
        try:
            summary = run_prediction(predictor, out_dir, self.class_names, cfg, [video], meta=meta)
        finally:
            predictor.sizes_used = {**seen, **predictor.sizes_used}
        if summary["errors"]:
            raise PartialResultError(
                "; ".join(summary["errors"])
                + f" -- the outputs up to there are kept in {out_dir} (summary.json: status partial)"
            )
        return summary

    def overlay(
        self, image: ImageInput, labels: np.ndarray, alpha: float = DEFAULT_ALPHA, legend: bool = True
    ) -> np.ndarray:
        """``overlay`` with this model's classes."""
        return overlay(image, labels, self.class_names, alpha=alpha, legend=legend)


def overlay(
    image: ImageInput,
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    alpha: float = DEFAULT_ALPHA,
    legend: bool | None = None,
    corner: str = "top-right",
) -> np.ndarray:
    """The frame with its labels' class colours blended in at ``alpha`` (0.4: the overlays of
    ``segvn.predict``), RGB ``uint8`` ``(H, W, 3)``; pixels of no class (255) stay as they are.

    ``class_names`` (``model.class_names``) choose the palette (the eight segvn classes without them) and
    name the legend, drawn in ``corner`` unless ``legend=False``.

    >>> import numpy as np
    >>> from segvn.api import overlay
    >>> frame = np.full((4, 6, 3), 200, np.uint8)
    >>> overlay(frame, np.full((4, 6), 4, np.uint8))[0, 0]  # road: 0.6 * 200 + 0.4 * (128, 64, 128)
    array([171, 146, 171], dtype=uint8)
    """
    rgb = _frame(image)
    index = np.asarray(labels)
    if index.shape != rgb.shape[:2]:
        raise DataError(
            f"overlay: labels of shape {index.shape} do not fit the image {rgb.shape[:2]}; give the labels "
            "that predict returned for this image"
        )
    if not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"overlay: alpha must be in [0, 1], got {alpha}")
    if class_names is None:
        return blend(rgb, index, float(alpha), palette_for(8))
    show = legend if legend is not None else True
    return OverlayDrawer(class_names, float(alpha), show, corner)(rgb, index)


def untrained_checkpoint(
    path: str | os.PathLike,
    encoder: str = "mobilenet_v2",
    image_size: Sequence[int] = (64, 96),
    seed: int = 0,
) -> Path:
    """Write a segvn checkpoint of an untrained DeepLabV3+ (random weights, ``encoder``, trained size
    ``image_size``, the eight segvn classes) to ``path``: to try the API, and for tests, with no
    training and no download. Its labels mean nothing."""
    import torch
    from hydra.utils import instantiate

    from segvn.models.checkpoint import CONFIG_KEY
    from segvn.utils.config import CONF_DIR

    model_cfg = OmegaConf.load(Path(CONF_DIR) / "model" / "deeplabv3plus.yaml")
    model_cfg.net.encoder_name = encoder
    model_cfg.net.encoder_weights = None
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = instantiate(model_cfg)
    config = {
        "model": OmegaConf.to_container(model_cfg),
        "data": {"image_size": [int(s) for s in image_size], "class_names": list(module.class_names)},
    }
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), CONFIG_KEY: config}, path)
    return path


__all__ = ["ImageInput", "SegvnModel", "load_model", "overlay", "untrained_checkpoint"]
