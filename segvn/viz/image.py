"""Writing pictures and laying them out: one image writer for every PNG segvn draws, and montages."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from segvn.utils.io import write_atomic


def save_image(image: np.ndarray, path: str | Path, compression: int = 3) -> Path:
    """Write a uint8 greyscale (H, W) or RGB (H, W, 3) image as PNG/JPEG (by suffix); returns the path.

    ``compression`` is the PNG level (0-9): 1 for per-frame outputs where speed matters. Written
    atomically (:func:`segvn.utils.io.write_atomic`): a killed run leaves the whole image or none, and a
    symbolic link at ``path`` is replaced by the image, not followed.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 (H, W) or (H, W, 3) image, got {image.dtype} {image.shape}")
    path = Path(path)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    params = [cv2.IMWRITE_PNG_COMPRESSION, compression] if path.suffix.lower() == ".png" else []
    ok, encoded = cv2.imencode(path.suffix or ".png", bgr, params)
    if not ok:
        raise OSError(f"cannot write {path}")
    return write_atomic(path, encoded.tobytes())


def tile(images: Sequence[np.ndarray], ncols: int | None = None, pad: int = 1, fill: int = 255) -> np.ndarray:
    """Montage of equally sized images (grey or RGB) on a ``fill`` background, ``pad`` pixels apart.

    The grid is ``ncols`` wide (default ceil(sqrt(n)), square-ish like MATLAB's ``imtile``); its size
    is ``rows * (h + pad) + pad`` by ``ncols * (w + pad) + pad``.
    """
    if len(images) == 0:
        raise ValueError("nothing to tile")
    first = np.asarray(images[0])
    h, w = first.shape[:2]
    ncols = ncols or math.ceil(math.sqrt(len(images)))
    nrows = math.ceil(len(images) / ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, *first.shape[2:]), fill, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = img
    return grid
