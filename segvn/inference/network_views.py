"""The pictures of ``segvn.visualize``: what a trained model computes on one frame.

Writes into a folder ``filters.png`` (the first convolution's filters), ``activations_<layer>.png`` (the
channels of each chosen layer on the frame), ``strongest_<layer>.png`` (the strongest channel as a heat
map over the frame), ``class_visualizations.png`` (for each class, a picture the model finds most like
it), ``prediction.png`` and ``visualize.json``. The model runs through :mod:`segvn.models.introspect`;
the pictures come from :mod:`segvn.viz.features`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from omegaconf import ListConfig

from segvn.errors import ConfigError
from segvn.inference.device import pick_device
from segvn.inference.scale import resize_frame
from segvn.metrics import class_indices
from segvn.models.factory import network_of
from segvn.models.introspect import (
    check_layers,
    class_visualizations,
    default_layers,
    first_conv,
    first_conv_weights,
    inner_model,
    layer_activations,
    to_tensor,
)
from segvn.utils.io import write_json
from segvn.viz.features import (
    activation_grid,
    class_grid,
    filter_montage,
    strongest_channel,
    strongest_channel_overlay,
)
from segvn.viz.image import save_image
from segvn.viz.overlay import add_title, prediction_picture

log = logging.getLogger(__name__)


def pick_layers(setting: Any, model: torch.nn.Module) -> list[str]:
    """The ``layer`` setting (a name, a comma-separated list, a list, or null for the defaults) checked."""
    if setting is None or setting == "":
        return default_layers(model)
    if isinstance(setting, list | tuple | ListConfig):
        return check_layers(model, [str(n) for n in setting])
    return check_layers(model, [n.strip() for n in str(setting).split(",") if n.strip()])


def _file_name(layer: str) -> str:
    return layer.replace(".", "_").replace("/", "_")


def network_views(
    cfg: Any,
    module: torch.nn.Module,
    frame: np.ndarray,
    out: Path,
    meta: dict[str, Any] | None = None,
    model_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Write every picture of ``conf/visualize.yaml``'s settings for ``frame``; returns ``visualize.json``.

    ``model_size`` is the ``(h, w)`` the frame is resized to before the model (the caller resolves the
    ``image_size`` setting, :mod:`segvn.inference.scale`); ``None`` reads ``cfg.image_size`` as ``[h, w]``.
    """
    device = pick_device(cfg.device)
    module.to(device)
    names = list(module.class_names)
    net = network_of(module)  # takes RGB 0-255; layer names are those of its smp model
    model, multiple = inner_model(module)
    layers = pick_layers(cfg.layer, model)
    image = frame  # shown at its own size; the model sees it at image_size
    if model_size is None and cfg.image_size:
        model_size = tuple(int(v) for v in cfg.image_size)
    if model_size is not None and tuple(model_size) != frame.shape[:2]:
        h, w = model_size
        image = resize_frame(frame, (h, w))
    x = to_tensor(image, device)
    summary: dict[str, Any] = {
        **(meta or {}),
        "input_size": list(image.shape[:2]),
        "frame_size": list(frame.shape[:2]),
    }
    summary["class_names"] = names
    summary["files"] = {"filters": "filters.png"}

    conv_name, conv = first_conv(model)
    save_image(filter_montage(first_conv_weights(model), scale=cfg.filters.scale), out / "filters.png")
    summary["first_conv"] = {"layer": conv_name, "shape": list(conv.weight.shape)}

    summary["layers"] = {}
    acts = cfg.activations
    for layer, act in layer_activations(net, x, layers, pad_to=multiple).items():
        stem, shape = _file_name(layer), list(act.shape[1:])
        grid = activation_grid(act, max_channels=acts.max_channels, normalize=acts.normalize)
        if grid.ndim == 2:
            grid = np.repeat(grid[..., None], 3, axis=2)
        shown = min(shape[0], acts.max_channels)
        which = f"{shown} strongest of {shape[0]}" if shown < shape[0] else f"{shape[0]}"
        save_image(
            add_title(grid, f"{layer}: {which} channels, {shape[1]}x{shape[2]}", 0.4),
            out / f"activations_{stem}.png",
        )
        strongest = strongest_channel(act)
        heat = strongest_channel_overlay(frame, act, alpha=acts.alpha)
        save_image(add_title(heat, f"{layer}: channel {strongest}", 0.4), out / f"strongest_{stem}.png")
        summary["layers"][layer] = {
            "shape": shape,
            "strongest_channel": strongest,
            "files": [f"activations_{stem}.png", f"strongest_{stem}.png"],
        }
        log.info("%s: %s, strongest channel %d", layer, "x".join(map(str, shape)), strongest)

    with torch.no_grad():
        pred = class_indices(module(x))[0].cpu().numpy().astype(np.uint8)
    shown_pred = cv2.resize(pred, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)
    save_image(prediction_picture(frame, shown_pred, names, cfg.prediction_alpha), out / "prediction.png")
    counts = np.bincount(pred.ravel(), minlength=len(names))[: len(names)]
    summary["prediction_share"] = {n: float(c / pred.size) for n, c in zip(names, counts, strict=True)}
    summary["files"]["prediction"] = "prediction.png"

    if cfg.class_vis.enabled:
        cv = cfg.class_vis
        classes = [int(c) for c in cv.classes] if cv.classes is not None else list(range(len(names)))
        if any(not 0 <= c < len(names) for c in classes):
            raise ConfigError(
                f"class_vis.classes={classes}: class indices go from 0 to {len(names) - 1} ({', '.join(names)})"
            )
        pictures = class_visualizations(
            net, classes, size=tuple(int(v) for v in cv.size), steps=cv.steps, octaves=cv.octaves,
            lr=cv.lr, jitter=cv.jitter, blur_every=cv.blur_every, seed=cv.seed,
        )  # fmt: skip
        save_image(class_grid(pictures, [names[c] for c in classes]), out / "class_visualizations.png")
        summary["files"]["class_visualizations"] = "class_visualizations.png"
        summary["class_visualizations"] = [names[c] for c in classes]
    write_json(out / "visualize.json", summary)
    return summary
