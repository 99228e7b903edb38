"""An exported file given as ``ckpt_path``: it stands in for its checkpoint in ``evaluate`` and ``predict``.

An export carries the stored ``data``/``model`` config in its metadata (:mod:`segvn.inference.formats`),
so the commands rebuild what they need from it, and the file itself is the model
(:class:`~segvn.inference.runtimes.RuntimeModel`). :func:`read_model_source` is how a ``ckpt_path`` is
read once, a checkpoint or an export.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segvn.errors import CheckpointError
from segvn.inference.formats import FORMATS, META_KEY, read_export
from segvn.inference.runtimes import RuntimeModel, open_export
from segvn.models.checkpoint import CONFIG_KEY, Checkpoint


def is_exported_file(path: str | Path) -> bool:
    """Whether ``path`` is a segvn export (ONNX and OpenVINO by suffix; TorchScript: a zip with our
    metadata file) rather than a Lightning checkpoint."""
    path = Path(path).expanduser()
    if path.suffix in (".onnx", FORMATS["openvino"]):
        return True
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith(f"extra/{META_KEY}.json") for name in zf.namelist())


@dataclass
class ExportedCheckpoint(Checkpoint):
    """An exported file given as ``ckpt_path``: config and classes from its metadata, and it is the model.

    ``model()`` returns the :class:`RuntimeModel` that runs the file, so evaluate and predict work the
    same as from the ``.ckpt`` (runtime: the file's format). Commands that need the PyTorch network
    (``visualize``, ``export``) refuse it.
    """

    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def read(cls, path: str | Path) -> ExportedCheckpoint:
        path = Path(path).expanduser()
        meta, channels = read_export(path)
        config = meta.get("config")
        if not config or not config.get("model"):
            raise CheckpointError(
                f"{path}: this export carries no training config (it predates ckpt_path=FILE); export the "
                f"checkpoint again with python -m segvn.export, or give ckpt_path=<the .ckpt> model_file={path}"
            )
        ckpt = cls(path, {CONFIG_KEY: config, "state_dict": {}}, meta)
        ckpt.require_outputs(channels, "exported network")  # ONNX; TorchScript when its model loads
        return ckpt

    def model(self, model_cfg: Any = None) -> RuntimeModel:
        model = open_export(self.path)
        if model.class_names != self.class_names:
            raise CheckpointError(
                f"{self.path}: its metadata names {len(model.class_names)} classes "
                f"({', '.join(model.class_names)}) but its stored config {len(self.class_names)} "
                f"({', '.join(self.class_names)}); export the checkpoint again with python -m segvn.export"
            )
        return model


def read_model_source(path: str | Path) -> Checkpoint:
    """``ckpt_path`` read once: a :class:`Checkpoint`, or an :class:`ExportedCheckpoint` for an export."""
    return ExportedCheckpoint.read(path) if is_exported_file(path) else Checkpoint.read(path)


__all__ = ["ExportedCheckpoint", "is_exported_file", "read_model_source"]
