"""CVAT "Segmentation mask 1.1" (Pascal VOC style): ``labelmap.txt`` + ``SegmentationClass/<frame>.png``.

``labelmap.txt`` names each label's RGB colour (``# label:color_rgb:parts:actions`` header, then
``name:r,g,b::`` lines); the class masks paint each pixel with its label's colour. Colours are matched to
our classes through the label names, so a project may use any colours and CamVid-style names.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np

from segvn.data.classes import CLASS_NAMES, IGNORE_INDEX, PALETTE, index_to_rgb
from segvn.data.labelformats.common import (
    IGNORE_COLOR,
    ClassMatcher,
    ImportReport,
    LabelItem,
    in_export,
    open_mask,
    save_png,
)
from segvn.errors import DataError
from segvn.utils.io import replace_link, write_atomic

LABELMAP = "labelmap.txt"
MASK_DIR = "SegmentationClass"


def parse_labelmap(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """``(name, (r, g, b))`` per label line of a CVAT/VOC ``labelmap.txt``."""
    labels = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.rsplit(":", 3)
        try:
            name, color = fields[0], fields[1]
            r, g, b = (int(c) for c in color.split(","))
            if not all(0 <= c <= 255 for c in (r, g, b)):
                raise ValueError("colour component outside 0..255")
        except (IndexError, ValueError) as err:
            raise DataError(
                f"{path}:{n}: cannot read {raw!r} ({err}); expected 'name:r,g,b::' lines"
            ) from None
        labels.append((name, (r, g, b)))
    if not labels:
        raise DataError(f"{path}: no labels; expected 'name:r,g,b::' lines under the header")
    return labels


def colour_lut(
    labels: list[tuple[str, tuple[int, int, int]]], matcher: ClassMatcher, report: ImportReport
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Palette of the export's colours, our index for each, and the names of unknown ones (by position)."""
    colours = np.array([c for _, c in labels], dtype=np.uint8)
    targets = np.full(len(labels), IGNORE_INDEX, dtype=np.uint8)
    unknown: dict[int, str] = {}
    for i, (name, _) in enumerate(labels):
        index = matcher.index(name)
        if index is None:
            unknown[i] = name
            report.unknown(name)
        else:
            targets[i] = index
    return colours, targets, unknown


def read_cvat(root: Path, matcher: ClassMatcher, report: ImportReport) -> list[LabelItem]:
    """The class masks of an unpacked CVAT export, decoded lazily to our class indices."""
    labelmaps = sorted(root.rglob(LABELMAP))
    if not labelmaps:
        raise DataError(f"{report.src}: no {LABELMAP}; export from CVAT as 'Segmentation mask 1.1'")
    labelmaps = in_export(labelmaps, root, report)
    if not labelmaps:
        raise DataError(
            f"{report.src}: its {LABELMAP} is a link to a file outside the export; give the export itself"
        )
    base = labelmaps[0].parent
    mask_dir = base / MASK_DIR
    if not mask_dir.is_dir():
        raise DataError(f"{report.src}: no {MASK_DIR}/ beside {LABELMAP}; export as 'Segmentation mask 1.1'")
    colours, targets, unknown = colour_lut(parse_labelmap(labelmaps[0]), matcher, report)
    keys = (colours[:, 0].astype(np.uint32) << 16) | (colours[:, 1].astype(np.uint32) << 8) | colours[:, 2]

    def loader(path: Path):
        def load() -> np.ndarray:
            img = open_mask(path)
            if img.mode not in ("RGB", "RGBA", "RGBX", "P", "L", "1"):
                # a 16-bit or float mask would be clipped to 8 bits by the conversion, not decoded
                raise DataError(f"{path.name}: expected an 8-bit RGB colour mask, got mode {img.mode}")
            rgb = np.asarray(img.convert("RGB")).astype(np.uint32)
            pix = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
            out = np.full(pix.shape, IGNORE_INDEX, dtype=np.uint8)
            for i, key in enumerate(keys):
                hit = pix == key
                if i in unknown:
                    report.unknown(unknown[i], int(hit.sum()))
                else:
                    out[hit] = targets[i]
            return out

        return load

    return [
        LabelItem(stem=p.stem, source=str(p.relative_to(root)), load=loader(p))
        for p in in_export(sorted(mask_dir.rglob("*.png")), root, report)
    ]


def write_cvat(masks: dict[str, np.ndarray], out: Path) -> Path:
    """Write class-index masks as a CVAT 'Segmentation mask 1.1' export: a folder, or a zip if ``out`` ends in .zip.

    The label map lists ``background`` (black, unlabelled) and our eight classes in our palette, so
    CVAT shows the same colours as segvn.
    """
    if out.suffix.lower() != ".zip":
        _write_tree(masks, out)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="segvn_cvat_") as tmp:
        _write_tree(masks, Path(tmp))
        with zipfile.ZipFile(replace_link(out), "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(tmp).as_posix())
    return out


def _write_tree(masks: dict[str, np.ndarray], folder: Path) -> None:
    lines = ["# label:color_rgb:parts:actions", f"background:{','.join(map(str, IGNORE_COLOR))}::"]
    lines += [f"{name}:{','.join(str(int(c)) for c in PALETTE[i])}::" for i, name in enumerate(CLASS_NAMES)]
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / LABELMAP, "\n".join(lines) + "\n")
    sets = folder / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    write_atomic(sets / "default.txt", "".join(f"{s}\n" for s in sorted(masks)))
    for stem, index in sorted(masks.items()):
        save_png(folder / MASK_DIR / f"{stem}.png", index_to_rgb(index, ignore_color=IGNORE_COLOR))
