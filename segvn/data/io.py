"""Reading frames and label maps from disk with errors that name the file.

Nothing is corrupted silently: 16-bit frames are scaled to 8 bit (not clipped to white), and
label values outside the known table are counted apart from deliberately unlabelled pixels
(:class:`LabelRead`), so a 16-bit label value 259 never wraps round to class 3.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from segvn.data.classes import IGNORE_INDEX, PALETTE, _rgb_key, rgb_to_index
from segvn.errors import DataError
from segvn.utils.io import write_atomic

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
"""PIL modes of greyscale images with more than 8 bits per pixel (16-bit PNG/TIFF, float TIFF)."""
IGNORE_COLOR = (0, 0, 0)
"""Colour of deliberately unlabelled pixels in RGB masks (what :func:`index_to_rgb` paints)."""
TOP_COLOURS = 5


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as err:  # PIL raises many types on damaged data (OSError, SyntaxError, EOFError, ...)
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
    except Exception as err:  # a missing or damaged file: PIL raises many types
        raise DataError(f"{path}: cannot read image header ({err})") from err
    return h, w


def image_mode(path: Path) -> str:
    """PIL mode of an image (``RGB``, ``L``, ``I;16``, ...), read from its header only."""
    try:
        with Image.open(path) as img:
            return img.mode
    except Exception as err:  # a missing or damaged file: PIL raises many types
        raise DataError(f"{path}: cannot read image header ({err})") from err


def _wide_to_uint8(img: Image.Image) -> np.ndarray:
    """A >8-bit greyscale image scaled to uint8: 16-bit by /257, float by its 0..1 (or 0..max) range."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64))
        top = 1.0 if arr.max(initial=0.0) <= 1.0 else 65535.0 if arr.max() > 255 else 255.0
        return np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    arr = arr.astype(np.int64)
    top = 65535 if img.mode != "I" or arr.max(initial=0) > 255 else 255
    return np.clip((arr * 255 + top // 2) // top, 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> np.ndarray:
    """An opened image as RGB uint8 (H, W, 3), scaling 16-bit and float greyscale to 8 bit."""
    if img.mode in WIDE_MODES:
        grey = _wide_to_uint8(img)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.array(img.convert("RGB"))  # writable: a tensor made from it (ToTensorV2) owns safe memory


def read_image(path: Path) -> np.ndarray:
    """An RGB frame as uint8 (H, W, 3); 16-bit and float frames are scaled, not clipped."""
    return to_rgb(_open(path))


class LabelRead(tuple):
    """What :func:`read_label` found; unpacks as ``(labels, bad_share)`` like the old 2-tuple.

    - ``labels``: uint8 class indices, 255 = ignore;
    - ``unknown_share``: share of pixels of an RGB mask whose colour is neither a class colour nor
      the ignore colour (black) - a stray or anti-aliased colour, ignored;
    - ``out_of_range_share``: share of pixels of an index map whose value is outside the known
      table (e.g. 200 in CamVid, or anything above 255 in a 16-bit map), ignored;
    - ``ignored_share``: share of pixels deliberately unlabelled (CamVid Unlabelled/Pole/...,
      black in RGB masks, 255 in segvn index maps);
    - ``unknown_values``: the most frequent unknown colours / out-of-range values with their
      pixel counts (top few);
    - ``mode``: the file's PIL mode.
    ``bad_share`` (the second item) is ``unknown_share + out_of_range_share``.
    """

    def __new__(
        cls,
        index: np.ndarray,
        unknown_share: float = 0.0,
        out_of_range_share: float = 0.0,
        ignored_share: float = 0.0,
        unknown_values: list | None = None,
        mode: str = "",
    ) -> LabelRead:
        obj = super().__new__(cls, (index, float(unknown_share) + float(out_of_range_share)))
        obj.unknown_share = float(unknown_share)
        obj.out_of_range_share = float(out_of_range_share)
        obj.ignored_share = float(ignored_share)
        obj.unknown_values = list(unknown_values or [])
        obj.mode = mode
        return obj

    @property
    def labels(self) -> np.ndarray:
        """The class-index map (the first item)."""
        return self[0]

    @property
    def bad_share(self) -> float:
        """``unknown_share + out_of_range_share`` (the second item)."""
        return self[1]


def _top(values: np.ndarray, counts: np.ndarray, n: int = TOP_COLOURS) -> list:
    order = np.argsort(-counts, kind="stable")[:n]
    return [(values[i], int(counts[i])) for i in order]


def _read_rgb_label(path: Path, img: Image.Image, palette: np.ndarray) -> LabelRead:
    if img.mode not in ("RGB", "RGBA", "P", "RGBX"):
        raise DataError(
            f"{path}: expected an RGB colour mask (this data config's labels are colour masks in the "
            f"segvn palette), got a {img.mode} image. Save the labels as RGB masks with the class "
            "colours listed in the README (data=vietnam), or, for single-channel CamVid-style index "
            "maps, use data=camvid (or data=camvid_streets) with data.root=DIR"
        )
    rgb = np.asarray(img.convert("RGB"))
    index, _ = rgb_to_index(rgb, palette)
    miss = index == IGNORE_INDEX
    ignore = miss & (_rgb_key(rgb) == _rgb_key(np.array(IGNORE_COLOR)))
    stray = miss & ~ignore
    total = max(index.size, 1)
    top: list = []
    if stray.any():
        keys, counts = np.unique(_rgb_key(rgb[stray]), return_counts=True)
        top = [((int(k) >> 16 & 255, int(k) >> 8 & 255, int(k) & 255), c) for k, c in _top(keys, counts)]
    return LabelRead(index, stray.sum() / total, 0.0, ignore.sum() / total, top, img.mode)


def _read_index_label(
    path: Path, img: Image.Image, lut: np.ndarray | None, known: np.ndarray | None
) -> LabelRead:
    arr = np.asarray(img)
    if arr.ndim == 3:
        raise DataError(
            f"{path}: expected a single-channel label map (this data config's labels are index maps, "
            f"e.g. CamVid), got {arr.shape[2]} channels. Save the labels as 8-bit greyscale PNGs of "
            "class values, or, for RGB colour masks, use the street layout: data=vietnam with data.root=DIR"
        )
    if arr.dtype.kind == "f" and not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        raise DataError(
            f"{path}: a floating-point label map with non-integer values; save labels as 8-bit PNGs"
        )
    values = arr.astype(np.int64)
    if known is None:  # segvn index maps: classes 0..C-1 and 255 = ignore
        known = np.zeros(256, bool)
        known[: len(PALETTE)] = True
        known[IGNORE_INDEX] = True
    in_table = (values >= 0) & (values < len(known))
    in_table[in_table] = known[values[in_table]]
    bad = ~in_table
    total = max(values.size, 1)
    top: list = []
    if bad.any():
        vals, counts = np.unique(values[bad], return_counts=True)
        top = [(int(v), c) for v, c in _top(vals, counts)]
    safe = np.where(bad, IGNORE_INDEX, values).astype(np.uint8)
    index = lut[safe] if lut is not None else safe
    index = np.where(bad, IGNORE_INDEX, index).astype(np.uint8)
    ignored = float(((index == IGNORE_INDEX) & ~bad).sum()) / total
    return LabelRead(index, 0.0, bad.sum() / total, ignored, top, img.mode)


def read_label(
    path: Path,
    label_format: str,
    lut: np.ndarray | None = None,
    known: np.ndarray | None = None,
    palette: np.ndarray = PALETTE,
) -> LabelRead:
    """A label map as uint8 class indices (255 = ignore), with the shares of bad pixels.

    ``label_format`` is ``"rgb"`` for colour masks in the segvn palette or ``"index"`` for
    single-channel maps translated through ``lut`` (e.g. CamVid's 11 classes onto our 8).
    ``known`` (bool per raw value) says which index values exist in the dataset's table
    (CamVid: 0..11); others are *out of range* and ignored. Without it, index maps are read as
    segvn indices (0..7 and 255 known). The result unpacks as ``(index, bad_share)``; see
    :class:`LabelRead` for the separate shares.
    """
    if label_format not in ("rgb", "index"):
        raise DataError(f"unknown label_format {label_format!r}; use 'rgb' or 'index'")
    img = _open(path)
    if label_format == "rgb":
        return _read_rgb_label(path, img, palette)
    return _read_index_label(path, img, lut, known)


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def write_label_png(labels: np.ndarray, path: str | Path, palette: np.ndarray = PALETTE) -> Path:
    """A label map as a palette PNG: pixel values are class indices (255 = ignore, black), colours the palette.

    Image viewers show the class colours; ``PIL.Image.open(p)`` gives the indices back, and segvn's
    data sources read it as an RGB colour mask. Written atomically: a killed run leaves the whole file or
    none, and a symbolic link at ``path`` is replaced, not followed.
    """
    path = Path(path)
    img = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="P")
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = palette
    img.putpalette(lut.flatten().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return write_atomic(path, buf.getvalue())
