"""Albumentations pipelines: the thesis augmentation for training, a plain conversion otherwise.

They yield what the network takes: RGB ``uint8`` tensors ``(3, H, W)`` with values 0-255. The network
normalises them itself (:class:`segvn.models.factory.Normalize`), so batches stay ``uint8`` (a quarter
of the bytes of float32) until they reach it, on the GPU too.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from segvn.data.classes import IGNORE_INDEX


def build_transforms(
    train: bool,
    image_size: Sequence[int] | None = None,
    hflip: float = 0.5,
    translate_px: int = 10,
    scale: Sequence[float] | None = None,
    color_jitter: float = 0.0,
    crop: Sequence[int] | None = None,
    strong: bool = False,
) -> A.Compose:
    """Resize (optional), then for training random flip/translation/scale/crop/colour, then a uint8 tensor.

    Translation pads the frame with black and the label with the ignore value, like MATLAB's
    ``imtranslate`` with ``OutputView='same'`` leaving undefined pixels. ``crop`` ([h, w]) trains on
    random windows of the (scaled) frame, as mmsegmentation and torchvision's references do: more
    steps per minute and more varied framing, while validation and prediction see whole frames.
    ``strong`` adds the photometric "strong" augmentation of FixMatch/UniMatch (heavy colour jitter,
    greyscale, blur) for pseudo-labelled frames, whose labels a change of colour cannot invalidate.
    """
    steps: list[A.BasicTransform] = []
    if image_size is not None:
        h, w = image_size
        steps.append(A.Resize(h, w, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST))
    if train:
        if hflip > 0:
            steps.append(A.HorizontalFlip(p=hflip))
        if translate_px > 0 or scale is not None:
            steps.append(
                A.Affine(
                    translate_px={"x": (-translate_px, translate_px), "y": (-translate_px, translate_px)},
                    scale=tuple(scale) if scale is not None else (1.0, 1.0),
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    fill_mask=IGNORE_INDEX,
                    p=1.0,
                )
            )
        if crop is not None:
            ch, cw = (int(v) for v in crop)
            steps.append(
                A.RandomCrop(
                    ch,
                    cw,
                    pad_if_needed=True,
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    fill_mask=IGNORE_INDEX,
                )
            )
        if color_jitter > 0:
            steps.append(
                A.ColorJitter(
                    brightness=color_jitter, contrast=color_jitter, saturation=color_jitter, hue=0, p=0.8
                )
            )
    if train and strong:
        steps += strong_photometric()
    steps.append(ToTensorV2())  # uint8 (3, H, W): the network normalises
    return A.Compose(steps)


def strong_photometric() -> list[A.BasicTransform]:
    """The photometric "strong" augmentation of FixMatch/UniMatch: heavy colour jitter, greyscale, blur.

    No geometry: a strong view keeps the pixel positions of the frame it came from, so a label (or a
    teacher's prediction on the weak view) still fits it."""
    return [
        A.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.25, p=0.8),
        A.ToGray(p=0.2),
        A.GaussianBlur(sigma_limit=(0.1, 2.0), p=0.5),
    ]


def build_views(image_size: Sequence[int] | None = None, **augment) -> tuple[A.Compose, A.Compose]:
    """The two views of an unlabelled frame for weak-to-strong consistency: ``weak`` is the training
    augmentation without its colour jitter (resize, flip, translation, scale, crop: an RGB uint8 array), and
    ``strong`` turns a weak view into the network's input with :func:`strong_photometric` on top."""
    geometric = {k: v for k, v in augment.items() if k != "color_jitter"}
    weak = build_transforms(True, image_size, **geometric)
    weak = A.Compose([t for t in weak.transforms if not isinstance(t, ToTensorV2)])
    return weak, A.Compose([*strong_photometric(), ToTensorV2()])


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """An RGB uint8 frame (H, W, 3) as the network's input tensor: uint8 (3, H, W), 0-255."""
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """A network input (3, H, W) back to an RGB uint8 frame (H, W, 3) for display (values clamped to 0-255)."""
    img = tensor.detach()
    if img.is_floating_point():
        img = img.clamp(0, 255).round()
    return img.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
