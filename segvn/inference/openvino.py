"""OpenVINO: the checkpoint's network as an OpenVINO IR (``.xml`` + ``.bin``), run on the CPU in fp32,
bf16 or int8.

The IR is converted from the very ONNX graph :func:`~segvn.inference.export.export_network` writes, so
whatever that graph contains, the IR contains, and it runs through the same padding and cropping
(:class:`OpenVINOModel` is a :class:`~segvn.inference.runtimes.RuntimeModel`). The segvn metadata (class
names, training size, output stride, the stored configs) travel in the IR's ``rt_info`` under
``segvn`` (a JSON string, as in the ONNX ``metadata_props``), so an IR stands in for its checkpoint
like an ONNX file does.

Precision is a compile-time hint (``INFERENCE_PRECISION_HINT``): ``f32`` by default (the numbers the
export is verified against), ``bf16`` with ``precision=bf16`` (used where the CPU computes bf16 natively,
AVX512-BF16/AMX; elsewhere OpenVINO keeps f32, and the effective precision is what is reported). int8 is
NNCF's post-training quantization (:func:`quantize_ir`), calibrated on the same real frames at the training
scale as the ONNX int8 export, with the segmentation head left in float like there.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from segvn.errors import ConfigError, ExportError
from segvn.inference.export import export_network
from segvn.inference.formats import META_KEY
from segvn.inference.runtimes import RuntimeModel

log = logging.getLogger(__name__)

IR_SUFFIX = ".xml"
HEAD_SCOPE = (
    ".*segmentation_head.*"  # smp's head (last convolution, logits' upsampling) in the converted graph
)
HINTS = {"fp32": "f32", "bf16": "bf16"}  # segvn precision -> INFERENCE_PRECISION_HINT

_core = None
_core_lock = threading.Lock()


def core() -> Any:
    """The process's one ``openvino.Core`` (it holds the CPU plugin and its thread pools)."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino as ov

            _core = ov.Core()
        return _core


def native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively here (otherwise a bf16 hint runs f32)."""
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def convert_network(module: nn.Module, meta: dict[str, Any]) -> Any:
    """``module``'s network as an ``openvino.Model``, converted from its ONNX export (dynamic shapes)."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_network(module, "onnx", Path(tmp) / "model.onnx", meta)
        return ov.convert_model(str(onnx_path))


def quantize_ir(
    model: Any, images: Sequence[np.ndarray], keep_head: bool = True
) -> tuple[Any, dict[str, Any]]:
    """``model`` quantized to int8 by NNCF, calibrated on ``images`` (RGB 0-255 ``(1, 3, H, W)`` float32,
    sides multiples of the output stride); ``keep_head``: the segmentation head stays in float.

    Returns the int8 model and what the metadata records about the calibration.
    """
    import nncf

    if not images:
        raise ExportError("int8 quantization needs calibration frames (calibration.frames >= 1)")
    scope = nncf.IgnoredScope(patterns=[HEAD_SCOPE], validate=False) if keep_head else None
    try:
        quantized = nncf.quantize(
            model, nncf.Dataset(list(images)), subset_size=len(images), ignored_scope=scope,
            preset=nncf.QuantizationPreset.PERFORMANCE,
        )  # fmt: skip
    except Exception as err:
        raise ExportError(f"NNCF could not quantize the network: {type(err).__name__}: {err}") from err
    ignored = [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if "segmentation_head" in op.get_friendly_name()
    ]
    info = {
        "method": "NNCF post-training quantization (OpenVINO), MinMax ranges, fast bias correction, "
        "weights int8 per channel, activations int8 (performance preset)",
        "frames": len(images),
        "sizes": [list(size) for size in sorted({tuple(image.shape[2:]) for image in images})],
        "float_nodes": ignored if keep_head else [],
    }
    return quantized, info


def check_ir_path(out: str | Path) -> Path:
    """``out`` as a Path; :class:`ConfigError` naming ``out=`` unless it ends in ``.xml``."""
    out = Path(out)
    if out.suffix != IR_SUFFIX:
        raise ConfigError(
            f"out={out}: an OpenVINO IR is a {IR_SUFFIX} file (its weights go beside it in .bin)"
        )
    return out


def write_ir(model: Any, out: Path, meta: dict[str, Any]) -> Path:
    """Save ``model`` with ``meta`` in its ``rt_info`` as ``out`` (``.xml``) and ``out``'s ``.bin``.

    Both are written in a folder beside ``out`` first and renamed into place, the ``.bin`` first, so a
    reader never finds a new ``.xml`` beside an old ``.bin``.
    """
    import openvino as ov

    out = check_ir_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.set_rt_info(json.dumps(meta), [META_KEY])
    partial = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", suffix=".partial", dir=out.parent))
    try:
        ov.save_model(model, str(partial / "model.xml"), compress_to_fp16=False)
        (partial / "model.bin").replace(out.with_suffix(".bin"))
        (partial / "model.xml").replace(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


def export_ir(
    module: nn.Module, out: Path, meta: dict[str, Any], calibration: Sequence[np.ndarray] = ()
) -> dict[str, Any]:
    """Write ``module``'s network as an IR at ``out`` (int8 when ``calibration`` images are given);
    returns the metadata written into it."""
    check_ir_path(out)  # before the conversion, not after
    model = convert_network(module, meta)
    if calibration:
        log.info(
            "quantizing to int8 with NNCF, calibrated on %d frames at the training scale", len(calibration)
        )
        model, info = quantize_ir(model, calibration)
        meta = {**meta, "precision": "int8", "calibration": info}
    write_ir(model, out, meta)
    return meta


def read_ir(path: Path) -> tuple[dict[str, Any], int | None]:
    """The segvn metadata of the IR at ``path`` and its output channels (``None`` when not fixed)."""
    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise ExportError(
            f"{path}: its weights file {weights.name} is missing beside it; keep the .xml and .bin together, "
            "or export again with python -m segvn.export format=openvino"
        )
    try:
        model = core().read_model(str(path))
    except Exception as err:  # noqa: BLE001 - anything unreadable is the same problem for the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ExportError(
            f"{path}: not a readable OpenVINO IR ({type(err).__name__}: {first}); export it again with "
            "python -m segvn.export format=openvino"
        ) from err
    if not model.has_rt_info([META_KEY]):
        raise ExportError(
            f"{path}: not a segvn export (no '{META_KEY}' rt_info); export it with python -m segvn.export "
            "format=openvino"
        )
    try:
        meta = json.loads(str(model.get_rt_info([META_KEY]).astype(str)))
    except ValueError as err:
        raise ExportError(
            f"{path}: its '{META_KEY}' rt_info is not JSON ({err}); export it again with python -m "
            "segvn.export format=openvino"
        ) from err
    shape = model.outputs[0].get_partial_shape()
    channels = shape[1].get_length() if shape.rank.is_static and shape[1].is_static else None
    return meta, channels


class OpenVINOModel(RuntimeModel):
    """An IR (or an ONNX export, read by OpenVINO) run like the PyTorch model, on OpenVINO's CPU plugin.

    Its sessions are compiled models, kept per input shape by :meth:`RuntimeModel.session
    <segvn.inference.runtimes.RuntimeModel.session>`: the first
    :data:`~segvn.inference.runtimes.STATIC_SHAPES` shapes each get the network reshaped to them (shapes
    fixed at compile time), any further shape runs on one dynamic compile.
    """

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "fp32") -> None:
        super().__init__(path, threads)
        self.format = "openvino"  # an ONNX file given here runs in OpenVINO too
        self._model = core().read_model(str(self.path))
        self._infer_lock = threading.Lock()
        self.hint = "fp32"
        self.set_precision(precision)

    def set_precision(self, precision: str) -> str:
        """Compile in ``precision`` (fp32 | bf16) from the next call on; returns the precision the CPU plugin
        actually uses (fp32 where it has no native bf16). An int8 IR keeps its int8 layers either way."""
        if precision not in HINTS:
            raise ConfigError(f"precision={precision}: OpenVINO runs fp32 or bf16")
        self._reconfigure(hint=precision)
        return self.effective_precision()

    def effective_precision(self) -> str:
        """The floating-point precision the CPU plugin computes in: bf16 only where asked and native."""
        return "bf16" if self.hint == "bf16" and native_bf16() else "fp32"

    def config(self, **extra: Any) -> dict[str, Any]:
        """The CPU plugin's compile settings: precision hint, latency (one request at a time), threads."""
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": HINTS[self.hint], "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        return config | extra

    def compile(self, shape: tuple[int, ...] | None, **extra: Any) -> Any:
        """A new compiled model for inputs of ``shape`` (``None``: dynamic), with ``extra`` properties."""
        model = self._model
        if shape is not None:
            model = model.clone()
            model.reshape({model.inputs[0]: list(shape)})
        return core().compile_model(model, "CPU", self.config(**extra))

    def _new_session(self, shape: tuple[int, ...] | None) -> Any:
        return self.compile(shape)

    def _infer(self, session: Any, image: np.ndarray) -> np.ndarray:
        with self._infer_lock:  # a compiled model's own request serves one call at a time
            return np.array(session(image)[0], copy=True)


def layer_profile(model: OpenVINOModel, image: np.ndarray, top: int = 25) -> dict[str, Any]:
    """OpenVINO's per-layer profile (``PERF_COUNT``) of one call of ``model`` on ``image`` (padded to the
    stride): time per layer type and the ``top`` slowest layers, with the kernels that ran them."""
    import torch

    from segvn.models.factory import pad_to_stride

    x, _, _ = pad_to_stride(torch.from_numpy(image), model.stride)
    x = x.numpy()
    compiled = model.compile(x.shape, PERF_COUNT=True)
    request = compiled.create_infer_request()
    request.infer({0: x})
    request.infer({0: x})  # the second call: no first-run allocations in the profile
    layers = [
        {
            "name": info.node_name,
            "type": info.node_type,
            "kernel": info.exec_type,
            "ms": round(info.real_time.total_seconds() * 1e3, 3),
        }  # fmt: skip
        for info in request.get_profiling_info()
        if info.real_time.total_seconds() > 0
    ]
    by_type: dict[str, float] = {}
    for layer in layers:
        key = f"{layer['type']} ({layer['kernel']})"
        by_type[key] = by_type.get(key, 0.0) + layer["ms"]
    total = sum(by_type.values())
    return {
        "shape": list(x.shape),
        "precision": model.hint,
        "total_ms": round(total, 2),
        "by_type": [
            {"type": k, "ms": round(v, 2), "share": round(v / total, 4)}
            for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])
        ],
        "slowest": sorted(layers, key=lambda layer: -layer["ms"])[:top],
    }


__all__ = ["IR_SUFFIX", "OpenVINOModel", "export_ir", "layer_profile", "quantize_ir", "read_ir", "write_ir"]
