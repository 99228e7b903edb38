"""Look inside a trained model: ``python -m segvn.visualize ckpt_path=PATH image=FRAME [layer=NAME]``.

Writes into the run directory ``filters.png``, ``activations_<layer>.png``, ``strongest_<layer>.png``,
``class_visualizations.png``, ``prediction.png`` and ``visualize.json``
(see :mod:`segvn.inference.network_views`). Layer names are those of the smp model's
``named_modules()`` (``encoder.layer3``, ``decoder.aspp``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from segvn.cli import Checkpoint, command
from segvn.data.io import read_image
from segvn.errors import InputNotFoundError
from segvn.inference.network_views import network_views
from segvn.inference.scale import model_stride, resolve_image_size, training_size
from segvn.utils import save_resolved_config

log = logging.getLogger("segvn.visualize")


def visualize(cfg: DictConfig, ckpt: Checkpoint) -> dict:
    """Write the figures of ``ckpt`` on ``cfg.image``; returns the summary (visualize.json)."""
    if OmegaConf.is_missing(cfg, "image"):
        raise InputNotFoundError("no image given: python -m segvn.visualize ckpt_path=PATH image=FRAME")
    image_path = Path(str(cfg.image)).expanduser()
    if not image_path.is_file():
        raise InputNotFoundError(f"image {image_path} not found; pass image=PATH of a frame (PNG/JPEG)")
    out = Path(cfg.paths.output_dir)
    save_resolved_config(cfg, out / "config.yaml")
    module = ckpt.model(cfg.model)
    frame = read_image(image_path)
    choice = resolve_image_size(cfg.image_size, training_size(ckpt.config), model_stride(module))
    size = choice.for_frame(*frame.shape[:2])
    log.info(
        "model input %s (image_size rule %s: %s)", "x".join(map(str, size)), choice.rule, choice.describe()
    )
    meta = {
        "checkpoint": str(ckpt.path.resolve()),
        "image": str(image_path.resolve()),
        "image_size": list(size),
        "image_size_rule": choice.rule,
    }
    summary = network_views(cfg, module, frame, out, meta, model_size=size)
    log.info("network pictures of %s on %s -> %s", ckpt.path.name, image_path.name, out)
    return summary


main = command("visualize", from_checkpoint=True)(visualize)

if __name__ == "__main__":
    main()
