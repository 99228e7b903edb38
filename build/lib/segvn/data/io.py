"""Reading frames and label maps from disk with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segvn.data.classes import PALETTE, rgb_to_index
from segvn.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(
            f"{path}: cannot read image ({err}); the file is corrupt or truncated - re-export it or "
            "remove it from the dataset"
        ) from err
    return img


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image, read from its header only."""
    try:
        with Image.open(path) as img:
            w, h = img.size
    except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: cannot read image header ({err})") from err
    return h, w


def read_image(path: Path) -> np.ndarray:
    """An RGB frame as uint8 (H, W, 3)."""
    return np.asarray(_open(path).convert("RGB"))


def read_label(path: Path, label_format: str, lut: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """A label map as uint8 class indices (255 = ignore) and the share of pixels with unknown values.

    ``label_format`` is ``"rgb"`` for colour masks in the segvn palette or ``"index"`` for
    single-channel maps translated through ``lut`` (e.g. CamVid's 11 classes onto our 8).
    """
    img = _open(path)
    if label_format == "rgb":
        if img.mode not in ("RGB", "RGBA", "P"):
            raise DataError(
                f"{path}: expected an RGB colour mask, got a {img.mode} image; set the data "
                "config's label_format to 'index' for single-channel label maps"
            )
        return rgb_to_index(np.asarray(img.convert("RGB")))
    if label_format == "index":
        arr = np.asarray(img)
        if arr.ndim == 3:
            raise DataError(
                f"{path}: expected a single-channel label map, got {arr.shape[2]} channels; set "
                "label_format to 'rgb' for colour masks"
            )
        arr = arr.astype(np.uint8, copy=False)
        if lut is None:
            return arr, 0.0
        return lut[arr], 0.0
    raise DataError(f"unknown label_format {label_format!r}; use 'rgb' or 'index'")


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def write_label_png(labels: np.ndarray, path: str | Path, palette: np.ndarray = PALETTE) -> Path:
    """A label map as a palette PNG: pixel values are class indices (255 = ignore, black), colours the palette.

    Image viewers show the class colours; ``PIL.Image.open(p)`` gives the indices back, and segvn's
    data sources read it as an RGB colour mask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="P")
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = palette
    img.putpalette(lut.flatten().tolist())
    img.save(path, compress_level=1)
    return path
