"""A torch Dataset over :class:`~segvn.data.sources.Sample` lists."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from segvn.data.classes import IGNORE_INDEX
from segvn.data.io import read_image, read_label
from segvn.data.sources import Sample
from segvn.errors import DataError


class SegmentationDataset(Dataset):
    """Frames with their label maps (or without, for prediction), as dicts of tensors.

    Items: ``image`` (3, H, W) float normalised, ``mask`` (H, W) int64 with 255 = ignore
    (all 255 when the frame is unlabelled), ``path`` and ``street``.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: A.Compose,
        label_format: str = "rgb",
        lut: np.ndarray | None = None,
        known: np.ndarray | None = None,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.label_format = label_format
        self.lut = lut
        self.known = known

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw frame (H, W, 3) uint8 and label (H, W) uint8, before any transform."""
        sample = self.samples[index]
        image = read_image(sample.image)
        if sample.label is None:
            return image, np.full(image.shape[:2], IGNORE_INDEX, np.uint8)
        label = read_label(sample.label, self.label_format, self.lut, self.known).labels
        if label.shape != image.shape[:2]:
            raise DataError(
                f"{sample.label}: label is {label.shape[1]}x{label.shape[0]} but its image "
                f"{sample.image} is {image.shape[1]}x{image.shape[0]}; labels must match their frames"
            )
        return image, label

    def __getitem__(self, index: int) -> dict:
        image, label = self.load(index)
        out = self.transform(image=image, mask=label)
        sample = self.samples[index]
        return {
            "image": out["image"],
            "mask": torch.as_tensor(out["mask"], dtype=torch.long),
            "path": str(sample.image),
            "street": sample.street,
        }
