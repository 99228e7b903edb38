"""Post-training int8 quantization of an exported ONNX network, calibrated on real frames.

On the CPU an int8 network runs on the integer matrix units (VNNI, AMX), faster than ONNX Runtime
fp32 (measured: docs/notes/runtimes.md). ONNX Runtime's static quantization does the work:
weights int8 per output channel, activations uint8 with ranges observed on calibration frames (QDQ
format, so any execution provider can run it). The segmentation head (the last convolution and the
upsampling of the logits) stays fp32: quantizing the logits themselves flips the argmax of the
pixels where two classes are close, for about the same speed (measured: docs/notes/code_defaults.md).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segvn.errors import ExportError

KEEP_FP32 = "/segmentation_head/"  # node-name part of smp's head in the export (under "/model/")


def fp32_nodes(path: Path) -> list[str]:
    """The nodes left in fp32: the segmentation head's."""
    import onnx

    return [node.name for node in onnx.load(str(path)).graph.node if KEEP_FP32 in node.name]


def _input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name


def quantize_onnx(src: Path, out: Path, images: Sequence[np.ndarray]) -> dict[str, Any]:
    """Write ``src`` (an fp32 segvn ONNX export) as int8 to ``out``, calibrated on ``images``.

    ``images``: ``(1, 3, H, W)`` float32 RGB 0-255 inputs (the graph normalises), sides multiples of the
    output stride.
    Returns what the file's metadata records about the calibration.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not images:
        raise ExportError(f"{out}: int8 quantization needs calibration frames (calibration.frames >= 1)")

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds: Iterator[dict[str, np.ndarray]] = ({name: image} for image in images)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    excluded = fp32_nodes(src)
    name = _input_name(src)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"  # BN folded, shapes inferred: what quantization expects
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        try:
            quantize_static(
                str(prepared), str(out), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
            )  # fmt: skip
        except Exception as err:
            out.unlink(missing_ok=True)
            raise ExportError(f"{out}: ONNX Runtime could not quantize {src.name}: {err}") from err
    return {
        "method": "onnxruntime static, QDQ, MinMax ranges, weights int8 per channel, activations uint8",
        "frames": len(images),
        "sizes": [list(size) for size in sorted({tuple(image.shape[2:]) for image in images})],
        "fp32_nodes": excluded,
    }
