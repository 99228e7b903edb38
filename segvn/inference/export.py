"""Exporting a checkpoint's network to ONNX, TorchScript or OpenVINO: what ``segvn.export`` writes.

The exported graph is the network's normalisation and its smp network (``SegmentationNetwork.normalize``
and ``.model``) with a dynamic batch, height and width: input ``images``, RGB 0-255 float32 ``(B, 3, H, W)``
as the PyTorch network takes it, sides divisible by the output stride. Padding to the stride and cropping
back are done outside the graph, by :class:`~segvn.inference.runtimes.RuntimeModel` (the runtimes'
common wrapper). This exports cleanly with the TorchScript-based ONNX exporter (``dynamo=False``) and
``torch.jit.trace``: DeepLabV3+'s ASPP global pooling upsamples to the traced feature-map shape, which
both record as a shape computation, so one file runs at any stride-multiple size.

Metadata travel with the file (:mod:`segvn.inference.formats`), the stored ``data``/``model`` config
included. At export the file is checked on real frames against PyTorch
(:func:`~segvn.inference.verify.verify_export`), and the numbers are written to ``<file>.verify.json``.
Because the config travels too, an exported file can stand in for its checkpoint: ``ckpt_path=model.onnx``
in ``evaluate`` and ``predict`` (:mod:`segvn.inference.exported`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segvn.errors import ConfigError, ExportError
from segvn.inference.formats import FORMATS, INPUT_RGB255, META_KEY, check_format
from segvn.inference.scale import model_stride, resize_frame, training_size
from segvn.inference.verify import MIN_AGREEMENT, MIN_AGREEMENT_INT8, as_batch, verify_export
from segvn.models.checkpoint import Checkpoint
from segvn.models.factory import network_of
from segvn.utils.io import replace_link

log = logging.getLogger(__name__)

QUANTIZE = ("int8",)
OPSET = 17


def check_quantize(quantize: str | None, fmt: str) -> None:
    """:class:`ConfigError` unless ``quantize`` is null, or int8 with ``format=onnx``."""
    if quantize is None:
        return
    if quantize not in QUANTIZE:
        raise ConfigError(f"quantize must be null or {' | '.join(QUANTIZE)}, got {quantize!r}")
    if fmt not in ("onnx", "openvino"):
        raise ConfigError(
            f"quantize={quantize} needs format=onnx or format=openvino (their runtimes run the int8 network), "
            f"got {fmt}"
        )


def export_metadata(ckpt: Checkpoint, module: nn.Module, fmt: str) -> dict[str, Any]:
    """What an export of ``ckpt``'s ``module`` as ``fmt`` carries (:mod:`segvn.inference.formats`)."""
    trained = training_size(ckpt.config)
    return {
        "format": fmt,
        "class_names": list(module.class_names),
        "training_image_size": list(trained) if trained else None,
        "output_stride": model_stride(module),
        "checkpoint": str(ckpt.path.resolve()),
        "input": INPUT_RGB255,  # RGB 0-255 float (B, 3, H, W), H and W multiples of output_stride
        "output": "logits (B, C, H, W)",
        # what evaluate/predict rebuild from a checkpoint, so the file can replace it (ckpt_path=FILE)
        "config": {key: _plain(ckpt.config.get(key)) for key in ("data", "model")},
    }


def _plain(node: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def export_network(module: nn.Module, fmt: str, out: Path, meta: dict[str, Any]) -> Path:
    """Write the network of ``module`` (a SegModule) as ``fmt`` to ``out``, metadata included: its
    normalisation and smp network (not the padding, done around the runtime), input ``images`` 0-255."""
    if fmt == "openvino":  # converted from this function's ONNX graph (segvn.inference.openvino)
        from segvn.inference.openvino import export_ir

        export_ir(module, out, meta)
        return out
    net = network_of(module)
    inner = nn.Sequential(OrderedDict(normalize=net.normalize, model=net.model)).eval()
    stride = model_stride(module)
    sample = torch.zeros(1, 3, 4 * stride, 6 * stride)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = replace_link(out.with_name(out.name + ".partial"))  # a link there would send the write out
    with warnings.catch_warnings(), torch.no_grad():
        # torch deprecates the TorchScript-based exporters used here on purpose (ONNX with dynamo=False,
        # torch.jit.trace/save); they still export these networks exactly, and export verifies the file
        warnings.filterwarnings(
            "ignore", r"You are using the legacy TorchScript-based ONNX", DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore", r"The feature will be removed", DeprecationWarning, r"torch\.onnx\."
        )
        warnings.filterwarnings(
            "ignore", r"`torch\.jit\.(trace|trace_method|save)` is deprecated", FutureWarning
        )
        if fmt == "onnx":
            torch.onnx.export(
                inner, (sample,), str(partial), dynamo=False, opset_version=OPSET,
                input_names=["images"], output_names=["logits"],
                dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                              "logits": {0: "batch", 2: "height", 3: "width"}},
            )  # fmt: skip
            write_onnx_metadata(partial, meta)
        else:
            traced = torch.jit.trace(inner, sample)
            torch.jit.save(traced, str(partial), _extra_files={f"{META_KEY}.json": json.dumps(meta)})
    partial.replace(out)  # a rename: a link at ``out`` is replaced, not written through
    return out


def write_onnx_metadata(path: Path, meta: dict[str, Any]) -> None:
    """Store ``meta`` in the ONNX file at ``path`` (``metadata_props``, replacing an earlier entry)."""
    import onnx

    model = onnx.load(str(path))
    for entry in [e for e in model.metadata_props if e.key == META_KEY]:
        model.metadata_props.remove(entry)
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.save(model, str(path))


def export_checkpoint(
    ckpt: Checkpoint,
    fmt: str,
    out: str | Path | None = None,
    frames: Sequence[np.ndarray] = (),
    sizes: Sequence[tuple[int, int]] | None = None,
    model_cfg: Any = None,
    quantize: str | None = None,
    calibration: Sequence[np.ndarray] = (),
    min_agreement: float | None = None,
) -> dict[str, Any]:
    """Export ``ckpt`` as ``fmt`` (default file: beside the checkpoint), verify it on ``frames``.

    ``sizes`` default: the frames' own size and the training scale of it (one of them usually not a
    multiple of the stride, so the padding is checked too). ``quantize="int8"`` (ONNX only) writes the
    int8 network calibrated on the RGB ``calibration`` frames at the training scale
    (:mod:`segvn.inference.quantize`). The argmax must agree on ``min_agreement`` of the pixels
    (default :data:`MIN_AGREEMENT`, :data:`MIN_AGREEMENT_INT8` for int8). Writes ``<file>.verify.json``;
    returns it.
    """
    from segvn.inference.scale import ScaleRule
    from segvn.utils.io import write_json

    check_format(fmt)
    check_quantize(quantize, fmt)
    module = ckpt.model(model_cfg)
    suffix = f".{quantize}{FORMATS[fmt]}" if quantize else FORMATS[fmt]
    path = Path(out).expanduser() if out else ckpt.path.with_suffix(suffix)
    meta = export_metadata(ckpt, module, fmt)
    trained = training_size(ckpt.config)

    def at_scale(h: int, w: int) -> tuple[int, int]:
        """The training scale of an ``h`` x ``w`` frame (its own without one), sides stride multiples."""
        return ScaleRule(min(trained or (h, w)), model_stride(module))(h, w)

    start = time.perf_counter()
    if quantize:
        from segvn.inference.quantize import quantize_onnx

        images = [as_batch([resize_frame(f, at_scale(*f.shape[:2]))]).numpy() for f in calibration]
    if quantize and fmt == "openvino":  # NNCF on the same frames (segvn.inference.openvino)
        from segvn.inference.openvino import export_ir

        if not images:
            raise ExportError(f"{path}: int8 quantization needs calibration frames (calibration.frames >= 1)")
        meta = export_ir(module, path, meta, calibration=images)
    elif quantize:
        partial = replace_link(path.with_name(path.name + ".partial"))
        log.info("quantizing to %s, calibrated on %d frames at the training scale", quantize, len(images))
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export_network(module, fmt, Path(tmp) / "fp32.onnx", meta)
            meta |= {"precision": quantize, "calibration": quantize_onnx(fp32, partial, images)}
        write_onnx_metadata(partial, meta)
        partial.replace(path)
    else:
        export_network(module, fmt, path, meta)
    seconds = time.perf_counter() - start
    report: dict[str, Any] = {
        "file": str(path.resolve()),
        "format": fmt,
        "precision": quantize or "fp32",
        "export_seconds": round(seconds, 3),
        "metadata": meta,
        "versions": _versions(fmt),
    }
    if frames:
        if sizes is None:
            h, w = frames[0].shape[:2]
            sizes = [(h, w)]
            if trained:
                sizes.append(at_scale(h, w))
        minimum = (
            min_agreement if min_agreement is not None else MIN_AGREEMENT_INT8 if quantize else MIN_AGREEMENT
        )
        report["verification"] = verify_export(module, path, frames, sizes, minimum)
    write_json(path.with_name(path.name + ".verify.json"), report)
    return report


def _versions(fmt: str) -> dict[str, str]:
    versions = {"torch": torch.__version__}
    if fmt == "onnx":
        import onnx
        import onnxruntime

        versions |= {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "opset": str(OPSET)}
    if fmt == "openvino":
        import nncf
        import openvino

        versions |= {"openvino": openvino.__version__, "nncf": nncf.__version__, "opset": str(OPSET)}
    return versions


__all__ = [
    "OPSET",
    "QUANTIZE",
    "check_quantize",
    "export_checkpoint",
    "export_metadata",
    "export_network",
    "write_onnx_metadata",
]
