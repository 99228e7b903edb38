"""Unlabelled frames as weak/strong view pairs, for online self-training (``data.online``).

FixMatch (NeurIPS 2020) and UniMatch (CVPR 2023) learn from unlabelled images inside the training run:
the model labels a weakly augmented view of a frame, and is trained to give the same labels to a
strongly augmented view of it, where it was confident. :class:`UnlabelledViews` serves those pairs from
the frames of ``data.unlabelled`` (so its leak guard applies): ``weak`` has the training geometry (flip,
scale, crop) and ``strong`` is the same pixels with heavy photometric changes, so a prediction on one
fits the other. The loss is :meth:`segvn.models.module.SegModule.consistency_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from segvn.data.io import read_image
from segvn.data.transforms import build_views, to_tensor
from segvn.errors import ConfigError

ONLINE_DEFAULTS: dict[str, Any] = {"batch_size": None}


def online_settings(settings: dict | None) -> dict[str, Any]:
    """``data.online`` with defaults; ``batch_size``: unlabelled frames per training step (null: off)."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(ONLINE_DEFAULTS))
    if unknown:
        raise ConfigError(f"data.online: unknown setting(s) {unknown}; use batch_size")
    out = {**ONLINE_DEFAULTS, **settings}
    size = out["batch_size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 2):
        raise ConfigError(f"data.online.batch_size={size}: give a whole number of frames >= 2, or null (off)")
    return out


class UnlabelledViews(Dataset):
    """Frames without labels as ``{"weak", "strong", "path"}`` items (uint8 ``(3, H, W)`` tensors)."""

    def __init__(self, frames: Sequence[Path], image_size: Sequence[int] | None = None, **augment) -> None:
        self.frames = [Path(f) for f in frames]
        self.weak, self.strong = build_views(image_size, **augment)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict:
        weak = self.weak(image=read_image(self.frames[index]))["image"]
        strong = self.strong(image=weak)["image"]
        return {"weak": to_tensor(weak), "strong": strong, "path": str(self.frames[index])}


def cutmix(
    images: torch.Tensor, targets: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix of a batch with itself rolled by one (UniMatch's strong-view mixing): with probability ``p``
    a random box (0.02-0.4 of the frame's area, aspect 0.3-3.3) of image ``i - 1`` and its targets is pasted
    into image ``i``. The same box for the whole batch; images and targets move together."""
    if images.shape[0] < 2 or torch.rand((), generator=generator).item() >= p:
        return images, targets
    h, w = images.shape[-2:]
    share = torch.empty(()).uniform_(0.02, 0.4, generator=generator).item()
    ratio = torch.empty(()).uniform_(0.3, 1 / 0.3, generator=generator).item()
    bh = min(h, max(1, round((share * h * w * ratio) ** 0.5)))
    bw = min(w, max(1, round((share * h * w / ratio) ** 0.5)))
    top = int(torch.randint(0, h - bh + 1, (), generator=generator))
    left = int(torch.randint(0, w - bw + 1, (), generator=generator))
    images, targets = images.clone(), targets.clone()
    images[..., top : top + bh, left : left + bw] = images.roll(1, 0)[..., top : top + bh, left : left + bw]
    targets[..., top : top + bh, left : left + bw] = targets.roll(1, 0)[..., top : top + bh, left : left + bw]
    return images, targets


__all__ = ["ONLINE_DEFAULTS", "UnlabelledViews", "cutmix", "online_settings"]
