"""Pictures of what a network computes, from arrays: filter montages, activation grids, heat maps.

These reproduce the thesis' MATLAB figures (filter montage, ``activations`` montages, the strongest
channel over the frame, a grid of ``deepDreamImage`` class pictures). The arrays come from
:mod:`segvn.models.introspect`, which runs the model; nothing here touches a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from segvn.viz.image import tile
from segvn.viz.overlay import add_title


def _rescale(x: np.ndarray) -> np.ndarray:
    """Min-max to uint8 (MATLAB ``mat2gray``); a constant array maps to 0."""
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < 1e-12:
        return np.zeros(x.shape, np.uint8)
    return np.round((x - lo) / (hi - lo) * 255.0).astype(np.uint8)


def filter_montage(weights: np.ndarray, scale: int = 4, pad: int = 2, ncols: int | None = None) -> np.ndarray:
    """RGB montage of first-layer filters ``(out, 3, k, k)``, each min-max normalised on its own.

    Every filter becomes a k x k colour tile (input channels read as R, G, B), enlarged ``scale``
    times with nearest-neighbour so the pixels stay crisp, laid out by :func:`tile` on a white
    background. For ResNet-18's conv1 (64 filters, 7x7) that is an 8 x 8 grid of 28 px tiles.
    """
    tiles = []
    for w in np.asarray(weights, dtype=np.float32):
        img = _rescale(w.transpose(1, 2, 0))
        tiles.append(np.repeat(np.repeat(img, scale, axis=0), scale, axis=1))
    return tile(tiles, ncols=ncols, pad=pad)


def _as_chw(act: torch.Tensor | np.ndarray) -> np.ndarray:
    act = act.detach().float().cpu().numpy() if isinstance(act, torch.Tensor) else np.asarray(act, np.float32)
    if act.ndim == 4:
        if act.shape[0] != 1:
            raise ValueError(f"expected one image's activations, got batch of {act.shape[0]}")
        act = act[0]
    if act.ndim != 3:
        raise ValueError(f"expected activations of shape (C, h, w), got {act.shape}")
    return act


def activation_grid(
    act: torch.Tensor | np.ndarray,
    max_channels: int = 64,
    normalize: str = "global",
    pad: int = 1,
    min_tile: int = 32,
) -> np.ndarray:
    """Greyscale montage (uint8, H x W) of a layer's channels, like MATLAB's activation montage.

    Takes (C, h, w) or (1, C, h, w). When there are more than ``max_channels`` channels, the ones with
    the highest mean activation are shown, strongest first. ``normalize="global"`` scales all tiles
    together (MATLAB ``mat2gray`` on the whole tensor: strong and weak channels stay comparable);
    ``"channel"`` stretches each tile on its own (shows the pattern of weak channels too). Tiles
    smaller than ``min_tile`` px are enlarged by an integer factor with nearest-neighbour.
    """
    chw = _as_chw(act)
    if normalize not in ("global", "channel"):
        raise ValueError(f"normalize must be 'global' or 'channel', got {normalize!r}")
    order = np.arange(len(chw))
    if len(chw) > max_channels:
        order = np.argsort(-chw.mean(axis=(1, 2)), kind="stable")[:max_channels]
    chosen = chw[order]
    tiles = list(_rescale(chosen)) if normalize == "global" else [_rescale(c) for c in chosen]
    factor = max(1, math.ceil(min_tile / max(1, min(chw.shape[1:]))))
    if factor > 1:
        tiles = [np.repeat(np.repeat(t, factor, axis=0), factor, axis=1) for t in tiles]
    return tile(tiles, pad=pad)


def strongest_channel(act: torch.Tensor | np.ndarray) -> int:
    """Index of the channel with the highest mean activation."""
    return int(np.argmax(_as_chw(act).mean(axis=(1, 2))))


def strongest_channel_overlay(
    image_rgb: np.ndarray,
    act: torch.Tensor | np.ndarray,
    alpha: float = 0.5,
    colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
    """The strongest channel (highest mean activation), upsampled to the frame, as a heat map on it.

    Shows where in the picture that layer responds most; ``alpha`` is the heat map's weight.
    """
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    chw = _as_chw(act)
    channel = chw[strongest_channel(chw)]
    up = cv2.resize(channel, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = cv2.cvtColor(cv2.applyColorMap(_rescale(up), colormap), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)


def class_grid(pictures: Sequence[np.ndarray], titles: Sequence[str], ncols: int = 4) -> np.ndarray:
    """Class pictures (RGB uint8, one size) with their class names as titles, in one grid."""
    panels = [add_title(p, t, scale=0.5) for p, t in zip(pictures, titles, strict=True)]
    return tile(panels, ncols=min(ncols, len(panels)), pad=4)
