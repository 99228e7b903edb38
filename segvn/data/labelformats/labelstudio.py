"""Label Studio brush labels exported as PNG: one binary mask per label (layer) per annotation.

File names are ``task-<task id>-annotation-<annotation id>-by-<user>-tag-<Label>-<n>.png``. The layers of a
task are merged in order of annotation id, then ``n``, then file name: a later layer paints over an earlier
one, and pixels claimed by two different classes are counted as overlaps in the report.

The PNG export does not say which image a task showed, so the frame is found one of two ways:

- a task list: Label Studio's own JSON / JSON-MIN export of the same project, a JSON object
  ``{"<task id>": "<image file>"}``, or a CSV with columns ``id,image`` -- given as ``tasks=PATH`` or
  found as the only ``.json``/``.csv`` file in the export. Only the image's file name counts (Label
  Studio's upload prefix ``1a2b3c4d-`` is dropped when the frame is known without it);
- a folder per frame: ``EXPORT/<frame stem>/task-...png`` (when there is no task list).
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from segvn.data.classes import CLASS_NAMES, IGNORE_INDEX
from segvn.data.labelformats.common import (
    ClassMatcher,
    ImportReport,
    LabelItem,
    in_export,
    open_mask,
    save_png,
)
from segvn.errors import DataError, InputNotFoundError
from segvn.utils.io import write_atomic

NAME_RE = re.compile(r"^task-(\d+)-annotation-(\d+)-by-(.+?)-tag-(.+?)(?:-(\d+))?$")
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


def parse_name(path: Path) -> tuple[int, int, str, int] | None:
    """(task id, annotation id, label, layer n) from an exported file name; ``None`` if it is not one."""
    m = NAME_RE.match(path.stem)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), m.group(4), int(m.group(5) or 0)


def _image_name(ref: str) -> str:
    """The file name in an image reference: a path, an URL, or ``/data/local-files/?d=dir/x.png``."""
    parsed = urlparse(ref)
    query = dict(part.split("=", 1) for part in parsed.query.split("&") if "=" in part)
    path = unquote(query.get("d", parsed.path or ref))
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _task_image(task: dict[str, Any]) -> str | None:
    data = task.get("data", task)
    if isinstance(data, dict):
        if isinstance(data.get("image"), str):
            return data["image"]
        for value in data.values():
            if isinstance(value, str) and Path(_image_name(value)).suffix:
                return value
    return None


def load_task_list(path: Path) -> dict[int, str]:
    """Task id -> image file name, from a JSON or CSV task list."""
    if not path.is_file():
        raise InputNotFoundError(
            f"tasks={path}: no such file; give Label Studio's JSON export or an id,image CSV"
        )
    tasks: dict[int, str] = {}
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            if not rows:
                raise ValueError("no rows")
            cols = list(rows[0])
            id_col = next((c for c in ("id", "task_id", "task") if c in cols), None)
            img_col = "image" if "image" in cols else next((c for c in cols if c != id_col), None)
            if id_col is None or img_col is None:
                raise ValueError(f"columns {cols}; expected 'id' and 'image'")
            for row in rows:
                tasks[int(row[id_col])] = _image_name(row[img_col])
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                tasks = {int(k): _image_name(str(v)) for k, v in data.items()}
            else:
                for task in data:
                    ref = _task_image(task)
                    if ref is not None and "id" in task:
                        tasks[int(task["id"])] = _image_name(ref)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(
            f"tasks={path}: cannot read the task list ({err}); give Label Studio's JSON export of the project, "
            '{"<task id>": "<image>"} or a CSV with columns id,image'
        ) from None
    if not tasks:
        raise DataError(f"tasks={path}: no task with an image; export the project as JSON from Label Studio")
    return tasks


def _frame_stem(image: str, known: set[str]) -> str:
    stem = Path(image).stem
    if stem not in known and UPLOAD_PREFIX.match(stem) and UPLOAD_PREFIX.sub("", stem) in known:
        return UPLOAD_PREFIX.sub("", stem)
    return stem


def read_layer(path: Path) -> np.ndarray:
    """One exported brush mask as a boolean array (alpha for RGBA, else any channel above half)."""
    img = open_mask(path)
    if img.mode in ("RGBA", "LA"):
        return np.asarray(img.getchannel("A")) > 127
    if img.mode.startswith("I;16"):  # half of the file's own range, not a clip to 8 bits
        return np.asarray(img).astype(np.int64) > 32767
    if img.mode in ("I", "F"):
        raise DataError(f"{path.name}: expected an 8- or 16-bit brush mask, got mode {img.mode}")
    return np.asarray(img.convert("L")) > 127


def merge_layers(
    layers: Iterable[tuple[str, Path]], matcher: ClassMatcher, report: ImportReport, stem: str
) -> np.ndarray:
    """Paint the layers in order (later over earlier); report overlaps between different classes."""
    out: np.ndarray | None = None
    for label, path in layers:
        mask = read_layer(path)
        if out is None:
            out = np.full(mask.shape, IGNORE_INDEX, dtype=np.uint8)
            painted = np.zeros(mask.shape, dtype=bool)
        elif mask.shape != out.shape:
            raise DataError(
                f"{path.name}: layer is {mask.shape[1]}x{mask.shape[0]}, other layers {out.shape[1]}x{out.shape[0]}"
            )
        index = matcher.index(label)
        if index is None:
            report.unknown(label, int(mask.sum()))
            index = IGNORE_INDEX
        report.overlap(stem, int((mask & painted & (out != index)).sum()))
        out[mask] = index
        painted |= mask
    assert out is not None
    return out


def read_labelstudio(
    root: Path,
    matcher: ClassMatcher,
    report: ImportReport,
    known_stems: set[str],
    tasks: str | Path | None = None,
) -> list[LabelItem]:
    """Group the exported layers by frame (task list or folder per frame) into one item per frame."""
    files = sorted(p for p in root.rglob("*.png") if p.is_file())
    if not files:
        raise DataError(
            f"{report.src}: no .png files; export the Label Studio project as 'Brush labels to PNG'"
        )
    files = in_export(files, root, report)
    task_file = Path(tasks).expanduser() if tasks else None
    if task_file is None:
        found = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".json", ".csv") and p.is_file())
        found = in_export(found, root, report)
        if len(found) > 1:
            raise DataError(
                f"{report.src}: several task lists ({', '.join(p.name for p in found)}); choose one with tasks=PATH"
            )
        task_file = found[0] if found else None
    task_images = load_task_list(task_file) if task_file else None

    groups: dict[str, list[tuple[tuple[int, int, str], str, Path]]] = defaultdict(list)
    sources: dict[str, str] = {}
    for path in files:
        parsed = parse_name(path)
        rel = str(path.relative_to(root))
        if parsed is None:
            report.skip(
                rel, "not a Label Studio brush PNG (task-<id>-annotation-<id>-by-<n>-tag-<Label>-<n>.png)"
            )
            continue
        task_id, annotation_id, label, n = parsed
        if task_images is not None:
            if task_id not in task_images:
                report.skip(rel, f"task {task_id} is not in the task list {task_file}")
                continue
            stem = _frame_stem(task_images[task_id], known_stems)
        elif path.parent != root:
            stem = path.parent.name
        else:
            report.skip(rel, "no task list and not in a folder named after its frame; give tasks=PATH")
            continue
        groups[stem].append(((annotation_id, n, path.name), label, path))
        sources.setdefault(stem, f"task {task_id} ({rel})")

    def loader(stem: str, layers: list[tuple[str, Path]]):
        return lambda: merge_layers(layers, matcher, report, stem)

    return [
        LabelItem(
            stem=stem,
            source=sources[stem],
            load=loader(stem, [(label, path) for _, label, path in sorted(groups[stem])]),
        )
        for stem in sorted(groups)
    ]


def write_labelstudio(masks: dict[str, np.ndarray], out: Path) -> Path:
    """Write class-index masks as Label Studio brush PNGs with a ``tasks.json`` (task ids 1..N by stem)."""
    tasks = {}
    for task_id, (stem, index) in enumerate(sorted(masks.items()), start=1):
        tasks[str(task_id)] = f"{stem}.png"
        for k, name in enumerate(CLASS_NAMES):
            layer = index == k
            if layer.any():
                save_png(
                    out / f"task-{task_id}-annotation-{task_id}-by-1-tag-{name}-0.png",
                    layer.astype(np.uint8) * 255,
                )
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "tasks.json", json.dumps(tasks, indent=1))
    return out
