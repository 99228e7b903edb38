"""What a segvn export is: its formats and the metadata that travel inside the file.

Metadata are a JSON object under :data:`META_KEY` (ONNX ``metadata_props``; TorchScript
``_extra_files["segvn.json"]``; an OpenVINO IR's ``rt_info``): ``format``, ``class_names``,
``training_image_size``, ``output_stride``, ``checkpoint``, ``input`` (:data:`INPUT_RGB255`: the graph
normalises) and the stored ``data``/``model`` ``config``. Writing them is :mod:`segvn.inference.export`;
reading them is here, for every module that opens an export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from segvn.errors import CheckpointError, ConfigError, ExportError

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "openvino": ".xml"}  # openvino: IR, weights in .bin
META_KEY = "segvn"  # ONNX metadata_props key / TorchScript extra file "segvn.json", a JSON object
INPUT_RGB255 = "rgb255"
"""Metadata ``input`` of an export whose graph normalises: it takes RGB 0-255 like the PyTorch network."""


def check_format(fmt: str, name: str = "format") -> str:
    """``fmt`` when it is one of :data:`FORMATS`, else a :class:`ConfigError` naming ``name``."""
    if fmt not in FORMATS:
        raise ConfigError(f"{name} must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The segvn metadata of an exported file (``format`` tells which runtime runs it)."""
    return read_export(path)[0]


def _onnx_channels(model: Any) -> int | None:
    """The class dimension of an ONNX graph's first output (``logits`` (B, C, H, W)); ``None`` if not fixed."""
    outputs = model.graph.output
    dims = outputs[0].type.tensor_type.shape.dim if outputs else []
    return int(dims[1].dim_value) if len(dims) == 4 and dims[1].HasField("dim_value") else None


def read_export(path: str | Path) -> tuple[dict[str, Any], int | None]:
    """The metadata of an exported file and, for ONNX and OpenVINO, its output channels (from the one
    load; ``None`` when the file does not fix them, TorchScript's come from its loaded weights)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: exported model not found; make one with python -m segvn.export")
    if path.suffix == FORMATS["openvino"]:
        from segvn.inference.openvino import read_ir

        return read_ir(path)
    try:
        if path.suffix == ".onnx":
            import onnx

            model = onnx.load(str(path), load_external_data=False)
            props = {p.key: p.value for p in model.metadata_props}
            return json.loads(props[META_KEY]), _onnx_channels(model)
        extra = {f"{META_KEY}.json": ""}
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        return json.loads(extra[f"{META_KEY}.json"]), None
    except Exception as err:  # noqa: BLE001 - anything unreadable is the same problem for the user
        raise ExportError(
            f"{path}: not a segvn export (no readable '{META_KEY}' metadata: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); export it with python -m segvn.export"
        ) from err


__all__ = ["FORMATS", "INPUT_RGB255", "META_KEY", "check_format", "read_export", "read_metadata"]
