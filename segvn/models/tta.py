"""Test-time augmentation: the prediction averaged with the prediction of the mirrored frame.

Street scenes are left-right symmetric in distribution (training flips them), so the logits of the
horizontally flipped frame, flipped back, are a second opinion at the cost of one more forward pass.
Averaged logits (as mmsegmentation does) keep the output a drop-in replacement for the plain one.
"""

from __future__ import annotations

import torch
from torch import nn


def flip_tta(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``(model(x) + flip(model(flip(x)))) / 2`` with ``flip`` mirroring the width axis; logits (B, C, H, W)."""
    logits = model(images)
    mirrored = model(images.flip(-1)).flip(-1)
    return (logits + mirrored) / 2


def predict_logits(model: nn.Module, images: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """The model's logits, with :func:`flip_tta` when ``flip``."""
    return flip_tta(model, images) if flip else model(images)
