"""The eight street-scene classes, their Cityscapes colours, and label-format conversions.

One table serves every part of segvn: datasets decode colour masks with it, predictions are
painted with it, and reports name classes in this order.
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255
"""Label value for pixels that belong to no class (MATLAB's ``<undefined>``); left out of loss and metrics."""

CLASS_NAMES: tuple[str, ...] = (
    "building",
    "car",
    "fence",
    "person",
    "road",
    "sidewalk",
    "sky",
    "vegetation",
)

PALETTE: np.ndarray = np.array(
    [
        (70, 70, 70),  # building
        (0, 0, 142),  # car
        (190, 153, 153),  # fence
        (220, 20, 60),  # person
        (128, 64, 128),  # road
        (244, 35, 232),  # sidewalk
        (70, 130, 180),  # sky
        (107, 142, 35),  # vegetation
    ],
    dtype=np.uint8,
)
"""RGB colour of each class, in :data:`CLASS_NAMES` order (Cityscapes palette)."""

CAMVID_TO_SEGVN: dict[int, int] = {1: 0, 8: 1, 7: 2, 9: 3, 3: 4, 4: 5, 0: 6, 5: 7}
"""CamVid 11-class index -> segvn class index. Pole, SignSymbol, Bicyclist, Unlabelled are ignored."""


def camvid_lut() -> np.ndarray:
    """A 256-entry lookup table mapping CamVid label values to segvn indices (255 = ignore)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for src, dst in CAMVID_TO_SEGVN.items():
        lut[src] = dst
    return lut


CAMVID_VALUES = 12
"""CamVid label values 0..11 (11 = Unlabelled); any other value in a CamVid label is out of range."""


def camvid_known() -> np.ndarray:
    """Which raw CamVid label values exist (bool per value 0..255): 0..11."""
    known = np.zeros(256, dtype=bool)
    known[:CAMVID_VALUES] = True
    return known


def _rgb_key(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def rgb_to_index(mask: np.ndarray, palette: np.ndarray = PALETTE) -> tuple[np.ndarray, float]:
    """Decode an RGB colour mask (H, W, 3) into class indices.

    Returns the index map (uint8, 255 where the colour is not in the palette) and the share of
    pixels whose colour was unknown, so callers can warn about it.
    """
    if mask.ndim != 3 or mask.shape[2] < 3:
        raise ValueError(f"expected an RGB mask of shape (H, W, 3), got {mask.shape}")
    keys = _rgb_key(mask[..., :3])
    pal_keys = _rgb_key(palette)
    order = np.argsort(pal_keys)
    sorted_keys = pal_keys[order]
    pos = np.searchsorted(sorted_keys, keys).clip(0, len(sorted_keys) - 1)
    hit = sorted_keys[pos] == keys
    index = np.where(hit, order[pos], IGNORE_INDEX).astype(np.uint8)
    unknown = 1.0 - float(hit.mean()) if hit.size else 0.0
    return index, unknown


def index_to_rgb(index: np.ndarray, palette: np.ndarray = PALETTE, ignore_color=(0, 0, 0)) -> np.ndarray:
    """Paint an index map (H, W) with the palette; ignored pixels get ``ignore_color``."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:] = ignore_color
    lut[: len(palette)] = palette
    return lut[np.asarray(index, dtype=np.uint8)]


def palette_for(num_classes: int) -> np.ndarray:
    """The class palette of ``num_classes`` classes (extended with fixed pseudo-random colours past the 8 segvn classes)."""
    if num_classes <= len(PALETTE):
        return PALETTE[:num_classes]
    extra = np.random.default_rng(0).integers(0, 256, size=(num_classes - len(PALETTE), 3), dtype=np.uint8)
    return np.concatenate([PALETTE, extra])
