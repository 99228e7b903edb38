"""Per-class pixel statistics of labelled frames and the class weights training derives from them.

One scan reads every label once, checks it against its frame's size, counts each class's pixels,
the share of pixels with unknown colours (RGB masks) and, apart from it, the share of index
values outside the dataset's table (e.g. 200 in CamVid): deliberately unlabelled pixels (CamVid
Unlabelled, black in masks) are neither. Results are cached per file (keyed by path, size
and modification time), so later runs and ``segvn.analyze`` reuse them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segvn.data.classes import CLASS_NAMES
from segvn.data.io import image_size, read_label
from segvn.data.sources import Sample
from segvn.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class LabelStats:
    """Pixel counts per labelled frame: ``counts[i, c]`` pixels of class c in frame i."""

    files: list[str]
    streets: list[str]
    counts: np.ndarray  # (N, C) int64
    pixels: np.ndarray  # (N,) int64, all pixels of each frame
    unknown: np.ndarray  # (N,) float, share of pixels with a colour outside the palette
    class_names: Sequence[str] = field(default=CLASS_NAMES)
    out_of_range: np.ndarray | None = None  # (N,) float, share of index values outside the table

    def __post_init__(self) -> None:
        if self.out_of_range is None:
            self.out_of_range = np.zeros(len(self.files), np.float64)

    @property
    def pixel_count(self) -> np.ndarray:
        """Pixels of each class over all frames (MATLAB countEachLabel's PixelCount)."""
        return self.counts.sum(0)

    @property
    def image_count(self) -> np.ndarray:
        """Frames in which each class appears."""
        return (self.counts > 0).sum(0)

    @property
    def image_pixel_count(self) -> np.ndarray:
        """All pixels of the frames in which each class appears (MATLAB's ImagePixelCount)."""
        return ((self.counts > 0) * self.pixels[:, None]).sum(0)

    def by_street(self) -> dict[str, LabelStats]:
        out = {}
        for street in dict.fromkeys(self.streets):
            idx = [i for i, s in enumerate(self.streets) if s == street]
            out[street] = LabelStats(
                [self.files[i] for i in idx],
                [street] * len(idx),
                self.counts[idx],
                self.pixels[idx],
                self.unknown[idx],
                self.class_names,
                self.out_of_range[idx],
            )
        return out


def class_weights(stats: LabelStats, method: str = "median_frequency") -> np.ndarray:
    """Loss weights per class.

    - ``median_frequency``: w_c = median(f) / f_c with f_c = pixels of class c / pixels of the
      frames in which c appears (Eigen & Fergus 2015; MATLAB's median-frequency balancing);
    - ``inverse_frequency``: w_c = 1 / f_c normalised to mean 1 over present classes;
    - ``none``: all ones.

    Classes absent from every frame get weight 0 (they have no pixels to weigh) and are left out
    of the median.
    """
    n = stats.counts.shape[1]
    if method == "none":
        return np.ones(n, np.float32)
    present = stats.image_pixel_count > 0
    if not present.any():
        raise DataError("cannot compute class weights: the training labels hold no labelled pixel")
    freq = np.zeros(n, np.float64)
    freq[present] = stats.pixel_count[present] / stats.image_pixel_count[present]
    weights = np.zeros(n, np.float64)
    if method == "median_frequency":
        weights[present] = np.median(freq[present]) / freq[present]
    elif method == "inverse_frequency":
        weights[present] = 1.0 / freq[present]
        weights[present] /= weights[present].mean()
    else:
        raise DataError(
            f"unknown class weighting {method!r}; use median_frequency, inverse_frequency or none"
        )
    return weights.astype(np.float32)


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def scan_labels(
    samples: Sequence[Sample],
    label_format: str,
    lut: np.ndarray | None = None,
    num_classes: int = len(CLASS_NAMES),
    cache_dir: str | Path | None = None,
    warn_unknown: bool = True,
    known: np.ndarray | None = None,
) -> LabelStats:
    """Count class pixels of every labelled sample, checking sizes; cached in ``cache_dir``.

    Emits one warning naming the worst files: the share of pixels whose colour is not in the
    palette and, counted apart, of index values outside the table ``known`` (see
    :func:`~segvn.data.io.read_label`); those pixels are ignored in training and metrics.
    """
    labelled = [s for s in samples if s.label is not None]
    cache: dict[str, list] = {}
    cache_file = None
    if cache_dir is not None:
        tag = hashlib.sha1(
            f"v2|{label_format}|{None if lut is None else lut.tobytes().hex()}|"
            f"{None if known is None else np.asarray(known).tobytes().hex()}".encode()
        ).hexdigest()[:10]
        cache_file = Path(cache_dir) / f"label_stats_{tag}.json"
        if cache_file.exists():
            try:
                cache = json.loads(cache_file.read_text())
            except (OSError, json.JSONDecodeError):
                cache = {}
    counts = np.zeros((len(labelled), num_classes), np.int64)
    pixels = np.zeros(len(labelled), np.int64)
    unknown = np.zeros(len(labelled), np.float64)
    out_of_range = np.zeros(len(labelled), np.float64)
    changed = False
    for i, s in enumerate(labelled):
        key = _file_key(s.label)
        if key in cache and len(cache[key]) == 4:
            row = cache[key]
        else:
            read = read_label(s.label, label_format, lut, known)
            label = read.labels
            frame_hw = image_size(s.image)
            if label.shape != frame_hw:
                raise DataError(
                    f"{s.label}: label is {label.shape[1]}x{label.shape[0]} but its image {s.image} is "
                    f"{frame_hw[1]}x{frame_hw[0]}; labels must match their frames"
                )
            hist = np.bincount(label.ravel(), minlength=256)
            row = [hist[:num_classes].tolist(), int(label.size), read.unknown_share, read.out_of_range_share]
            cache[key] = row
            changed = True
        counts[i], pixels[i], unknown[i], out_of_range[i] = row
    if cache_file is not None and changed:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache))
    if warn_unknown:
        warn_bad_labels([s.label for s in labelled], unknown, out_of_range)
    files = [str(s.label) for s in labelled]
    return LabelStats(files, [s.street for s in labelled], counts, pixels, unknown, out_of_range=out_of_range)


def warn_bad_labels(
    paths: Sequence[Path], unknown: np.ndarray, out_of_range: np.ndarray, worst: int = 20
) -> None:
    """One warning for all files: colours outside the palette and index values out of range, worst first."""
    parts = []
    for shares, what in (
        (unknown, "colours outside the class palette"),
        (
            out_of_range,
            "label values outside the dataset's class table (out of range: corrupt or foreign labels)",
        ),
    ):
        bad = [i for i in np.argsort(-shares, kind="stable") if shares[i] > 0]
        if not bad:
            continue
        lines = "\n".join(f"  {paths[i]}: {shares[i]:.2%}" for i in bad[:worst])
        more = f"\n  ... and {len(bad) - worst} more files" if len(bad) > worst else ""
        parts.append(f"{len(bad)} label file(s) contain {what} (share per file, worst first):\n{lines}{more}")
    if parts:
        warnings.warn(
            "\n".join(parts) + "\nthose pixels are treated as unlabelled and ignored; run "
            "python -m segvn.check for a full report",
            stacklevel=3,
        )
