"""Look inside a trained model: ``python -m segvn.visualize ckpt_path=PATH image=FRAME [layer=NAME]``.

Writes into the run directory ``filters.png`` (the first convolution's filters),
``activations_<layer>.png`` (the channels of each chosen layer on the frame) and
``strongest_<layer>.png`` (the strongest channel as a heat map over the frame),
``class_visualizations.png`` (for each class, a picture the model finds most like it: gradient
ascent with jitter, blur and octaves), ``prediction.png`` (the frame and the model's prediction
with a colour legend) and ``visualize.json`` (layers, shapes, strongest channels, class shares).
Layer names are those of the smp model's ``named_modules()`` (``encoder.layer3``, ``decoder.aspp``).
"""

from __future__ import annotations

import difflib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import hydra
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from segvn.data.classes import PALETTE
from segvn.data.io import read_image
from segvn.models.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from segvn.utils import CONF_DIR, run_task, save_resolved_config
from segvn.utils.from_checkpoint import add_checkpoint_configs
from segvn.viz.network import (
    activation_grid,
    class_visualizations,
    default_layers,
    first_conv,
    first_conv_filters,
    layer_activations,
    save_image,
    strongest_channel,
    strongest_channel_overlay,
    to_tensor,
)
from segvn.viz.overlay import add_title, draw_legend, overlay

log = logging.getLogger("segvn.visualize")


class LayerError(ValueError):
    """A layer name the model does not have."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def inner_model(module: nn.Module) -> tuple[nn.Module, int]:
    """The smp model inside a SegModule (layer names are relative to it) and the input multiple it needs."""
    net = getattr(module, "net", module)
    return getattr(net, "model", net), int(getattr(net, "stride", 32))


def check_layers(model: nn.Module, names: Sequence[str]) -> list[str]:
    """``names`` if the model has them all, else :class:`LayerError` listing the valid names."""
    modules = [n for n, _ in model.named_modules() if n]
    unknown = [n for n in names if n not in modules]
    if not unknown:
        return list(names)
    close = {n: difflib.get_close_matches(n, modules, n=3, cutoff=0.5) for n in unknown}
    hints = "; ".join(f"{n!r}: did you mean {', '.join(c)}?" for n, c in close.items() if c)
    shallow = [n for n in modules if n.count(".") <= 1]
    raise LayerError(
        f"unknown layer {', '.join(map(repr, unknown))}. {hints + ' ' if hints else ''}"
        f"Valid layers include: {', '.join(shallow)} (and every deeper name of model.named_modules(), "
        f"e.g. {next((n for n in modules if n.count('.') >= 2), modules[-1])}); the default is "
        f"{', '.join(default_layers(model))}"
    )


def _layers(cfg_layer, model: nn.Module) -> list[str]:
    if cfg_layer is None or cfg_layer == "":
        return default_layers(model)
    if isinstance(cfg_layer, (list, tuple, ListConfig)):
        return check_layers(model, [str(n) for n in cfg_layer])
    return check_layers(model, [n.strip() for n in str(cfg_layer).split(",") if n.strip()])


def _file_name(layer: str) -> str:
    return layer.replace(".", "_").replace("/", "_")


def prediction_picture(
    image: np.ndarray, pred: np.ndarray, class_names: Sequence[str], alpha: float
) -> np.ndarray:
    """The frame beside the prediction overlaid on it, with a colour legend of the classes."""
    shown = overlay(image, pred, alpha, PALETTE)
    scale = float(np.clip(image.shape[0] / 800.0, 0.35, 1.2))
    shown = draw_legend(shown, class_names, PALETTE, corner="top-right", scale=scale)
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    panels = np.concatenate([image, gap, shown], axis=1)
    return add_title(panels, "frame | prediction", scale)


def visualize(cfg: DictConfig) -> dict:
    """Write the figures of ``cfg.ckpt_path`` on ``cfg.image``; returns the summary (visualize.json)."""
    out = Path(cfg.paths.output_dir)
    if OmegaConf.is_missing(cfg, "image"):
        raise FileNotFoundError("no image given: python -m segvn.visualize ckpt_path=PATH image=FRAME")
    image_path = Path(str(cfg.image)).expanduser()
    if not image_path.is_file():
        raise FileNotFoundError(f"image {image_path} not found; pass image=PATH of a frame (PNG/JPEG)")
    save_resolved_config(cfg, out / "config.yaml")
    ckpt = load_checkpoint(cfg.ckpt_path)
    module = model_from_checkpoint(ckpt, cfg.model, cfg.ckpt_path)
    device = pick_device(cfg.device)
    module.to(device)
    names = list(module.class_names)
    model, multiple = inner_model(module)
    layers = _layers(cfg.layer, model)

    frame = read_image(image_path)  # shown at its own size; the model sees it at image_size
    image = frame
    if cfg.image_size:
        h, w = (int(v) for v in cfg.image_size)
        image = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    x = to_tensor(image, device)
    summary: dict = {
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "image": str(image_path.resolve()),
        "input_size": list(image.shape[:2]),
        "frame_size": list(frame.shape[:2]),
        "class_names": names,
        "files": {},
    }

    conv_name, conv = first_conv(model)
    save_image(first_conv_filters(model, scale=cfg.filters.scale), out / "filters.png")
    summary["first_conv"] = {"layer": conv_name, "shape": list(conv.weight.shape)}
    summary["files"]["filters"] = "filters.png"

    acts = layer_activations(model, x, layers, pad_to=multiple)
    summary["layers"] = {}
    for layer, act in acts.items():
        stem = _file_name(layer)
        shape = list(act.shape[1:])
        grid = activation_grid(
            act, max_channels=cfg.activations.max_channels, normalize=cfg.activations.normalize
        )
        if grid.ndim == 2:
            grid = np.repeat(grid[..., None], 3, axis=2)
        shown = min(shape[0], cfg.activations.max_channels)
        which = f"{shown} strongest of {shape[0]}" if shown < shape[0] else f"{shape[0]}"
        title = f"{layer}: {which} channels, {shape[1]}x{shape[2]}"
        save_image(add_title(grid, title, 0.4), out / f"activations_{stem}.png")
        strongest = strongest_channel(act)
        heat = strongest_channel_overlay(frame, act, alpha=cfg.activations.alpha)
        save_image(add_title(heat, f"{layer}: channel {strongest}", 0.4), out / f"strongest_{stem}.png")
        summary["layers"][layer] = {
            "shape": shape,
            "strongest_channel": strongest,
            "files": [f"activations_{stem}.png", f"strongest_{stem}.png"],
        }
        log.info("%s: %s, strongest channel %d", layer, "x".join(map(str, shape)), strongest)

    with torch.no_grad():
        pred = module(x).argmax(1)[0].cpu().numpy().astype(np.uint8)
    shown = cv2.resize(pred, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)
    save_image(prediction_picture(frame, shown, names, cfg.prediction_alpha), out / "prediction.png")
    counts = np.bincount(pred.ravel(), minlength=len(names))[: len(names)]
    summary["prediction_share"] = {n: float(c / pred.size) for n, c in zip(names, counts, strict=True)}
    summary["files"]["prediction"] = "prediction.png"

    if cfg.class_vis.enabled:
        cv = cfg.class_vis
        classes = list(cv.classes) if cv.classes is not None else None
        if classes is not None and any(not 0 <= int(c) < len(names) for c in classes):
            raise LayerError(
                f"class_vis.classes={classes}: class indices go from 0 to {len(names) - 1} ({', '.join(names)})"
            )
        grid = class_visualizations(
            module.net,
            names,
            classes=classes,
            size=tuple(int(v) for v in cv.size),
            steps=cv.steps,
            octaves=cv.octaves,
            lr=cv.lr,
            jitter=cv.jitter,
            blur_every=cv.blur_every,
            seed=cv.seed,
        )
        save_image(grid, out / "class_visualizations.png")
        summary["files"]["class_visualizations"] = "class_visualizations.png"
        summary["class_visualizations"] = [names[int(c)] for c in (classes or range(len(names)))]

    (out / "visualize.json").write_text(json.dumps(summary, indent=2))
    log.info("network pictures of %s on %s -> %s", Path(cfg.ckpt_path).name, image_path.name, out)
    return summary


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="visualize")
def main(cfg: DictConfig) -> None:
    try:
        run_task(visualize, cfg)
    except (CheckpointError, LayerError) as err:
        log.error("%s", err)
        sys.exit(1)


if __name__ == "__main__":
    add_checkpoint_configs()
    main()
