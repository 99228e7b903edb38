"""Running an exported file like the PyTorch network: :class:`RuntimeModel` and :func:`open_export`.

The exported graph takes RGB 0-255 float32 ``(B, 3, H, W)`` with sides divisible by the output stride
(:mod:`segvn.inference.export`). Padding to the stride and cropping back are done around the runtime, by
the same :func:`~segvn.models.factory.pad_to_stride` / :func:`~segvn.models.factory.crop_to` the PyTorch
model uses, so one file runs at any frame size. A file whose metadata ``input`` is not
:data:`~segvn.inference.formats.INPUT_RGB255` is an older export of the smp network alone, which takes
ImageNet-normalised input: :class:`RuntimeModel` normalises for it, so it runs as before.

ONNX files run in ONNX Runtime here, OpenVINO IRs in :class:`~segvn.inference.openvino.OpenVINOModel`
(a subclass that builds compiled models instead of sessions), TorchScript files in ``torch.jit``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segvn.errors import CheckpointError
from segvn.inference.formats import FORMATS, INPUT_RGB255, check_format, read_export
from segvn.models.checkpoint import output_channels
from segvn.models.factory import Normalize, crop_to, pad_to_stride

STATIC_SHAPES = 4  # input shapes given a fixed-shape session each (RuntimeModel.session)


class RuntimeModel(nn.Module):
    """An exported file run like the PyTorch network: RGB 0-255 ``(B, 3, H, W)`` (float or uint8) in, logits
    at that size out.

    Pads to the output stride and crops back around the runtime, exactly as ``SegmentationNetwork``
    does. An older export (metadata ``input`` not :data:`INPUT_RGB255`: the smp network alone) gets its
    input normalised here first, so it predicts as it always did.

    ``class_names``, ``training_image_size`` and ``stride`` come from the file's metadata. ONNX runs
    on onnxruntime's CPU provider, one session per input shape (:meth:`session`); a subclass runs another
    runtime by building its own per-shape object in :meth:`_new_session` and calling it in :meth:`_infer`.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path).expanduser()
        self.meta, channels = read_export(self.path)
        self.format = check_format(self.meta.get("format", ""), f"{self.path}: format")
        self.class_names = list(self.meta["class_names"])
        self.stride = int(self.meta["output_stride"])
        self.precision = str(self.meta.get("precision", "fp32"))  # fp32, or int8 (quantized ONNX)
        # an older export takes ImageNet-normalised input: normalise for it, outside the graph
        self.normalize = None if self.meta.get("input") == INPUT_RGB255 else Normalize()
        trained = self.meta.get("training_image_size")
        self.training_image_size = tuple(trained) if trained else None
        self._sessions: dict[tuple[int, ...] | None, Any] = {}  # by input shape; None: dynamic
        self._session_lock = threading.Lock()
        self._script = None
        self.threads = int(threads) if threads else None
        if self.format == "torchscript":
            self._script = torch.jit.load(str(self.path), map_location="cpu")
            self._script.eval()
            channels = output_channels(dict(self._script.state_dict()))
        if channels is not None and channels != len(self.class_names):
            raise CheckpointError(
                f"{self.path}: the exported network outputs {channels} channels but its metadata names "
                f"{len(self.class_names)} classes ({', '.join(self.class_names)}); the file is damaged or "
                "not the export of its checkpoint - export the checkpoint again with python -m segvn.export"
            )

    def session(self, shape: tuple[int, ...]) -> Any:
        """The runtime's session for inputs of ``shape`` (:meth:`_new_session`), built on first use.

        The first :data:`STATIC_SHAPES` input shapes each get a session with those dimensions fixed: the
        runtime then folds the shape computations and plans memory once, a few percent faster (measured:
        docs/notes/code_defaults.md). A video or a data set has one or two shapes; any further shape runs
        on one session with the dynamic axes (key ``None``).
        """
        with self._session_lock:
            key = shape if shape in self._sessions or len(self._sessions) < STATIC_SHAPES else None
            if key not in self._sessions:
                self._sessions[key] = self._new_session(key)
            return self._sessions[key]

    def _reconfigure(self, **settings: Any) -> None:
        """Set these attributes (``threads``, a subclass's own); sessions built with other values are
        dropped, so the next calls build new ones."""
        with self._session_lock:
            if any(getattr(self, name) != value for name, value in settings.items()):
                self._sessions.clear()
            for name, value in settings.items():
                setattr(self, name, value)

    def set_threads(self, threads: int | None) -> None:
        """The runtime's threads per call (``None``: its own choice, one per physical core), from the next
        call on."""
        self._reconfigure(threads=int(threads) if threads else None)

    def _new_session(self, shape: tuple[int, ...] | None) -> Any:
        """An ONNX Runtime session for inputs of ``shape`` (``None``: the dynamic axes)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        # onnxruntime's idle threads spin by default, taking the CPU from the threads that decode,
        # resize, draw and encode around the model: faster without spinning, model-only and end to end
        # (measured: docs/notes/code_defaults.md)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if shape is not None:
            for name, size in zip(("batch", "height", "width"), (shape[0], *shape[2:]), strict=True):
                options.add_free_dimension_override_by_name(name, size)
        return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def _infer(self, session: Any, image: np.ndarray) -> np.ndarray:
        """Logits of the padded numpy ``image`` from ``session`` (an ONNX Runtime session here)."""
        return session.run(None, {session.get_inputs()[0].name: image})[0]  # "image" in older exports

    def _apply(self, fn, recurse=True):  # .to(device) moves the TorchScript module too
        if self._script is not None:
            self._script._apply(fn)
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x) if self.normalize is not None else x.float()
        x, h, w = pad_to_stride(x, self.stride)
        if self._script is None:
            image = x.detach().cpu().contiguous().numpy()
            out = torch.from_numpy(self._infer(self.session(image.shape), image)).to(x.device)
        else:
            out = self._script(x)
        return crop_to(out, h, w)


def open_export(path: str | Path, threads: int | None = None) -> RuntimeModel:
    """The :class:`RuntimeModel` of an exported file: an OpenVINO IR (``.xml``) runs in OpenVINO."""
    if Path(path).suffix == FORMATS["openvino"]:
        from segvn.inference.openvino import OpenVINOModel

        return OpenVINOModel(path, threads)
    return RuntimeModel(path, threads)


def runtime_name(model: nn.Module) -> str:
    """The runtime that runs ``model``: ``torch``, or the format of an exported file."""
    return model.format if isinstance(model, RuntimeModel) else "torch"


__all__ = ["STATIC_SHAPES", "RuntimeModel", "open_export", "runtime_name"]
