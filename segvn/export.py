"""Export a checkpoint: ``python -m segvn.export ckpt_path=PATH format=onnx|torchscript|openvino [out=FILE] [quantize=int8]``.

Writes the network with a dynamic batch, height and width (sides multiples of the output stride; the
runtimes pad and crop around it, see :mod:`segvn.inference.runtimes`), its metadata (class names, training
image size, output stride) inside the file, and ``FILE.verify.json`` with the agreement with PyTorch on
real frames. ``predict`` and ``evaluate`` run it with ``runtime=onnx|torchscript model_file=FILE``.
``quantize=int8`` writes the ONNX network in int8, calibrated on ``calibration.images``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from segvn.cli import Checkpoint, command
from segvn.data.io import read_image
from segvn.errors import InputNotFoundError
from segvn.inference.export import export_checkpoint
from segvn.inference.options import check_export

log = logging.getLogger("segvn.export")


def _frame_paths(setting: str, where: str, purpose: str) -> list[Path]:
    """The sorted PNG frames of folder ``where`` (or the files of a glob); an error naming ``setting``."""
    where = Path(str(where)).expanduser()
    paths = sorted(where.glob("*.png")) if where.is_dir() else sorted(where.parent.glob(where.name))
    if not paths:
        raise InputNotFoundError(f"{setting}={where}: no frames found {purpose}")
    return paths


def verification_frames(cfg: DictConfig) -> list:
    """The first ``verify.frames`` images (sorted) of ``verify.images`` (a folder or a glob), all of one size."""
    if not cfg.verify.frames:
        return []
    paths = _frame_paths(
        "verify.images", cfg.verify.images,
        "to check the export on; point it at a folder of PNG frames, or set verify.frames=0 to skip the check",
    )  # fmt: skip
    frames = [read_image(p) for p in paths[: int(cfg.verify.frames)]]
    return [f for f in frames if f.shape == frames[0].shape]


def calibration_frames(cfg: DictConfig) -> list:
    """``calibration.frames`` images spread evenly over the sorted ``calibration.images`` (``quantize`` only)."""
    if not cfg.quantize:
        return []
    paths = _frame_paths(
        "calibration.images", cfg.calibration.images,
        f"to calibrate quantize={cfg.quantize} on; point it at a folder of PNG frames like those the model "
        "will see (its training frames)",
    )  # fmt: skip
    count = int(cfg.calibration.frames)
    return [read_image(p) for p in paths[:: max(1, len(paths) // count)][:count]]


def export(cfg: DictConfig, ckpt: Checkpoint) -> dict:
    """Export and verify; returns the content of ``FILE.verify.json``."""
    check_export(cfg)
    report = export_checkpoint(
        ckpt, cfg.format, cfg.out, verification_frames(cfg), model_cfg=cfg.model,
        quantize=cfg.quantize, calibration=calibration_frames(cfg), min_agreement=cfg.verify.min_agreement,
    )  # fmt: skip
    check = report.get("verification")
    log.info(
        "%s -> %s (%s %s)%s", ckpt.path.name, report["file"], cfg.format, report["precision"],
        f": argmax agreement {check['argmax_agreement']:.5f}, max |d logits| {check['max_abs_logit_diff']:.2e}"
        if check else ", not verified (verify.frames=0)",
    )  # fmt: skip
    return report


main = command("export", from_checkpoint=True)(export)

if __name__ == "__main__":
    main()
