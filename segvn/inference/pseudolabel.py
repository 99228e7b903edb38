"""Pseudo-labels for unlabelled frames: a teacher checkpoint's confident predictions, class-balanced.

Offline self-training (Naive-Student, ECCV 2020; ST++, CVPR 2022) labels the frames nobody labelled with a
teacher and trains a student on them. The teacher here runs at its training scale with test-time
augmentation (a few scales around it, each with its mirror image), and averages the class probabilities
at the frame's size. A pixel keeps its pseudo-label when the teacher is confident enough *for its class*:
each class's threshold is the confidence above which the ``keep`` most confident share of that class's
pixels lie (class-balanced self-training, Zou et al., ECCV 2018), capped at ``max_threshold``, so rare
classes such as person and fence keep pseudo-labels while sure pixels of any class are always kept.
Everything else is 255 (ignored by the student's loss). With ``flow_agree`` a confident pixel also needs the
teacher's labels of its neighbouring frames (the previous and next frame of the same sequence in the pool),
warped onto it with optical flow, to agree: frames close in time see the same scene, so a label that
flips between them is more likely wrong (``sequence_neighbours`` says which frames are neighbours).

Two passes over the pool, so a killed run continues where it stopped:

1. ``raw/<name>.png`` (the teacher's class per pixel) and ``confidence/<name>.png`` (its probability,
   scaled to 0-255) per frame, each written atomically; frames with both files are not predicted again;
2. the per-class thresholds from the confidences of the whole pool, then ``pseudolabels/<name>.png``
   (index PNG, 255 = ignored) per frame, and last ``pseudolabel.json``: the teacher (path, SHA-256,
   classes), every setting, the thresholds and the share of pixels kept per class. A folder without that
   record is unfinished; a folder whose record names another teacher or other settings is refused.

Pseudo-labels are never human labels: they live in their own folder with that record, never in a street's
``labels/``, and ``segvn.labels export`` refuses a folder that holds a record.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING
from PIL import Image

from segvn.data.io import read_image
from segvn.data.pseudo import RECORD_NAME, STARTED_NAME
from segvn.data.transforms import to_tensor
from segvn.errors import ConfigError, DataError
from segvn.inference.device import pick_device
from segvn.inference.scale import ScaleRule, model_stride, resize_frame, training_size
from segvn.metrics.temporal import dis_flow, warp_labels
from segvn.models.checkpoint import Checkpoint
from segvn.models.tta import predict_logits
from segvn.utils.io import sha256_file, write_atomic, write_json
from segvn.utils.schema import bounded

log = logging.getLogger("segvn.pseudolabel")

IGNORE = 255
HIST_BINS = 256


@dataclass(frozen=True)
class PseudoLabelSettings:
    """How the teacher labels: TTA scales (relative to the training scale), mirror, per-class keep share."""

    scales: tuple[float, ...] = (0.75, 1.0, 1.25)
    flip: bool = True
    keep: float = 0.5
    """Per class, the most confident share of its pixels that keeps a pseudo-label (0 < keep <= 1)."""
    max_threshold: float = 0.9
    """A pixel at least this confident keeps its pseudo-label whatever its class's share."""
    flow_agree: bool = False
    """Also drop a pixel where a neighbouring frame's label, warped onto it with DIS optical flow, differs."""
    flow_scale: float = 0.5
    """The flow is computed on frames resized by this factor (and scaled back up to the frame): cheaper."""

    def __post_init__(self) -> None:
        if not self.scales or any(float(s) <= 0 for s in self.scales):
            raise ConfigError(
                f"scales={list(self.scales)}: give positive scale factors, e.g. [0.75,1.0,1.25]"
            )
        if not 0 < float(self.keep) <= 1:
            raise ConfigError(f"keep={self.keep}: the share of each class's pixels kept, in (0, 1]")
        if not 0 < float(self.max_threshold) <= 1:
            raise ConfigError(f"max_threshold={self.max_threshold}: a probability in (0, 1]")
        if not 0 < float(self.flow_scale) <= 1:
            raise ConfigError(f"flow_scale={self.flow_scale}: a resize factor in (0, 1]")


@dataclass
class PoolOptions:
    """Shorthands for ``data.unlabelled`` (the pool is the data layer's unlabelled set): ``folders`` are
    added to its folders, ``pattern`` and ``max_frames`` replace its own when set."""

    folders: list[str] = field(default_factory=list)
    pattern: str = "*"  # e.g. "0016E5_*" for one CamVid street
    max_frames: Any = None  # null: all; N: N frames spread evenly over the sorted names


@dataclass
class PseudoLabelConfig:
    """``conf/pseudolabel.yaml``: a teacher checkpoint's pseudo-labels for a pool of unlabelled frames."""

    ckpt_path: str = MISSING
    out: Any = None  # null: <run dir>/pseudo
    pool: PoolOptions = field(default_factory=PoolOptions)
    scales: list[float] = field(default_factory=lambda: [0.75, 1.0, 1.25])  # TTA, x the training scale
    flip: bool = True  # also each mirrored frame
    keep: float = bounded(0.5, gt=0.0, le=1.0)  # per class, the most confident share of its pixels kept
    max_threshold: float = bounded(0.9, gt=0.0, le=1.0)  # a pixel this confident is always kept
    flow_agree: bool = False  # also drop pixels whose label the neighbouring frames (optical flow) contradict
    flow_scale: float = bounded(0.5, gt=0.0, le=1.0)  # the flow's frame size, x the frame's
    device: str = "auto"
    task_name: str = "pseudolabel"
    tags: list[str] = field(default_factory=lambda: ["pseudolabel"])
    data: Any = None
    model: Any = None
    paths: Any = None


ConfigStore.instance().store(name="pseudolabel_schema", node=PseudoLabelConfig)


class Teacher:
    """A checkpoint's class probabilities for one RGB frame at its size, averaged over scales and mirror."""

    def __init__(self, ckpt: Checkpoint, settings: PseudoLabelSettings, device: str = "auto") -> None:
        self.device = pick_device(device)
        self.module = ckpt.model().to(self.device).eval()
        self.class_names = list(ckpt.class_names)
        trained = training_size(ckpt.config)
        self.rule = ScaleRule(min(trained), model_stride(self.module)) if trained else None
        self.settings = settings

    def sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """The model input sizes for a frame: the training scale times each TTA scale."""
        base = self.rule(height, width) if self.rule is not None else (height, width)
        stride = self.rule.stride if self.rule is not None else model_stride(self.module)
        out = []
        for s in self.settings.scales:
            h, w = (max(stride, int(round(side * float(s) / stride)) * stride) for side in base)
            if (h, w) not in out:
                out.append((h, w))
        return out

    @torch.no_grad()
    def probabilities(self, image: np.ndarray) -> torch.Tensor:
        """``(C, H, W)`` float32 class probabilities at the frame's size."""
        height, width = image.shape[:2]
        total = None
        sizes = self.sizes(height, width)
        for h, w in sizes:
            x = to_tensor(resize_frame(image, (h, w))).unsqueeze(0).to(self.device)
            probs = predict_logits(self.module, x, flip=self.settings.flip).float().softmax(1)
            if (h, w) != (height, width):
                probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
            total = probs if total is None else total + probs
        return (total / len(sizes))[0].cpu()


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def class_thresholds(hist: np.ndarray, keep: float, max_threshold: float) -> np.ndarray:
    """Per class, the confidence above which its ``keep`` most confident pixels lie, capped at ``max_threshold``.

    ``hist[c, b]`` counts the pixels predicted as class c with confidence in bin b (of ``HIST_BINS`` over
    [0, 1]). A class the teacher never predicts gets the cap.

    >>> hist = np.zeros((2, 256)); hist[0, [100, 200]] = [50, 50]; hist[1, 250] = 10
    >>> class_thresholds(hist, keep=0.5, max_threshold=0.9).round(3).tolist()
    [0.784, 0.9]
    """
    thresholds = np.full(hist.shape[0], float(max_threshold))
    for c, counts in enumerate(hist):
        total = counts.sum()
        if total == 0:
            continue
        above = np.cumsum(counts[::-1])[::-1]  # pixels in bin b or higher
        bins = np.nonzero(above >= keep * total)[0]
        thresholds[c] = min(float(max_threshold), bins[-1] / (HIST_BINS - 1))
    return thresholds


def sequence_neighbours(names: Sequence[str]) -> dict[str, list[str]]:
    """Per frame name, its neighbours in time: the previous and next name of the same sequence.

    A sequence is the part of the name before its last ``_`` when a frame number follows it (CamVid's
    ``0016E5_00390``, ``segvn.extract``'s ``<video>_000120``); frames are ordered by that number.

    >>> sequence_neighbours(["a_002", "a_001", "b_001", "c"])
    {'a_001': ['a_002'], 'a_002': ['a_001'], 'b_001': [], 'c': []}
    """
    runs: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        head, _, number = name.rpartition("_")
        if head and number.isdigit():
            runs.setdefault(head, []).append((int(number), name))
    out: dict[str, list[str]] = {name: [] for name in sorted(names)}
    for frames in runs.values():
        ordered = [n for _, n in sorted(frames)]
        for i, name in enumerate(ordered):
            out[name] = [
                n
                for n in (ordered[i - 1] if i else None, ordered[i + 1] if i + 1 < len(ordered) else None)
                if n
            ]
    return out


def _grey_small(image: np.ndarray, scale: float) -> np.ndarray:
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)


def flow_disagreement(
    label: np.ndarray, grey: np.ndarray, neighbours: Sequence[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Where a neighbour's label, warped onto this frame with DIS optical flow, names another class.

    ``label`` is this frame's ``(H, W)`` class map, ``grey`` the frame itself, smaller (the flow's size);
    each neighbour is its ``(label, grey)`` pair. Pixels the flow carries out of a neighbour are not
    counted against. Returns an ``(H, W)`` bool mask.
    """
    height, width = label.shape
    out = np.zeros((height, width), dtype=bool)
    for other_label, other_grey in neighbours:
        if other_label.shape != label.shape or other_grey.shape != grey.shape:
            continue  # another size: not the same camera
        flow = dis_flow(grey, other_grey, cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
        flow[..., 0] *= width / grey.shape[1]
        flow[..., 1] *= height / grey.shape[0]
        warped = warp_labels(torch.from_numpy(np.array(other_label, dtype=np.uint8)), flow, IGNORE).numpy()
        out |= (warped != IGNORE) & (warped != label)
    return out


def _record_matches(record: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """The keys in which a folder's record differs from this run's; settings added since the folder was
    written count at their defaults (they did not exist, so the folder was made without them)."""
    defaults = json.loads(json.dumps(asdict(PseudoLabelSettings())))
    record = {**record, "settings": {**defaults, **(record.get("settings") or {})}}
    return [
        k for k in ("teacher_sha256", "settings", "class_names", "frames") if record.get(k) != expected[k]
    ]


def pseudolabel(
    ckpt: Checkpoint,
    frames: Sequence[Path],
    out_dir: str | Path,
    settings: PseudoLabelSettings,
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write pseudo-labels for ``frames`` into ``out_dir`` (see the module docstring); returns the record."""
    out = Path(out_dir).expanduser()
    names = [p.stem for p in frames]
    expected = {
        "teacher": str(ckpt.path),
        "teacher_sha256": sha256_file(ckpt.path),
        "class_names": list(ckpt.class_names),
        "settings": json.loads(json.dumps(asdict(settings))),
        "frames": {p.stem: str(p) for p in frames},
    }
    record_path = out / RECORD_NAME
    if record_path.is_file():
        previous = json.loads(record_path.read_text())
        differs = _record_matches(previous, expected)
        if differs:
            raise DataError(
                f"{out}: holds pseudo-labels of another teacher or settings ({', '.join(differs)} differ); "
                "give a new out= folder"
            )
        log.info("%s: pseudo-labels already complete for this teacher and settings", out)
        return previous
    started = out / STARTED_NAME
    if started.is_file():
        differs = _record_matches(json.loads(started.read_text()), expected)
        if differs:
            raise DataError(
                f"{out}: a half-written pseudo-label run of another teacher or settings ({', '.join(differs)} "
                "differ); give a new out= folder or delete it"
            )
    elif out.exists() and any(out.iterdir()):
        raise DataError(f"out={out}: not empty and not a pseudo-label folder; give a new or empty folder")
    write_json(started, expected)

    teacher = Teacher(ckpt, settings, device)
    num_classes = len(teacher.class_names)
    todo = [
        p
        for p in frames
        if not (
            (out / "raw" / f"{p.stem}.png").is_file() and (out / "confidence" / f"{p.stem}.png").is_file()
        )
    ]
    if len(todo) < len(frames):
        log.info(
            "continuing in %s: %d of %d frame(s) were done by an earlier run",
            out,
            len(frames) - len(todo),
            len(frames),
        )
    for i, path in enumerate(todo):
        probs = teacher.probabilities(read_image(path))
        conf, label = probs.max(0)
        write_atomic(out / "confidence" / f"{path.stem}.png", _png_bytes((conf * 255).round().byte().numpy()))
        write_atomic(out / "raw" / f"{path.stem}.png", _png_bytes(label.byte().numpy()))
        if progress is not None:
            progress(i + 1, len(todo))

    hist = np.zeros((num_classes, HIST_BINS), dtype=np.int64)
    for name in names:
        label = _read_png(out / "raw" / f"{name}.png")
        conf = _read_png(out / "confidence" / f"{name}.png")
        hist += np.bincount(
            label.ravel().astype(np.int64) * HIST_BINS + conf.ravel(), minlength=num_classes * HIST_BINS
        ).reshape(num_classes, HIST_BINS)
    thresholds = class_thresholds(hist, settings.keep, settings.max_threshold)
    # a pixel is kept when its confidence bin reaches its class's threshold bin
    threshold_bins = np.ceil(thresholds * (HIST_BINS - 1) - 1e-9).astype(np.int64)
    kept = np.zeros(num_classes, dtype=np.int64)
    confident = 0
    paths = {p.stem: p for p in frames}
    neighbours = sequence_neighbours(names) if settings.flow_agree else {}
    seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def raw_and_grey(name: str) -> tuple[np.ndarray, np.ndarray]:  # read once while its neighbours need it
        if name not in seen:
            grey = _grey_small(read_image(paths[name]), settings.flow_scale)
            seen[name] = (_read_png(out / "raw" / f"{name}.png"), grey)
        return seen[name]

    for name in sorted(names) if settings.flow_agree else names:
        label = _read_png(out / "raw" / f"{name}.png")
        conf = _read_png(out / "confidence" / f"{name}.png")
        keep = conf.astype(np.int64) >= threshold_bins[label]
        confident += int(keep.sum())
        if neighbours.get(name):
            others = [raw_and_grey(n) for n in neighbours[name]]
            keep &= ~flow_disagreement(label, raw_and_grey(name)[1], others)
            for n in [n for n in seen if n != name and n not in neighbours[name]]:
                del seen[n]
        pseudo = np.where(keep, label, IGNORE).astype(np.uint8)
        kept += np.bincount(label[keep].ravel(), minlength=num_classes)[:num_classes]
        write_atomic(out / "pseudolabels" / f"{name}.png", _png_bytes(pseudo))
    predicted = hist.sum(1)
    record = {
        **expected,
        "thresholds": {n: round(float(t), 4) for n, t in zip(teacher.class_names, thresholds, strict=True)},
        "predicted_share": {
            n: float(p / max(predicted.sum(), 1)) for n, p in zip(teacher.class_names, predicted, strict=True)
        },
        "kept_share": {
            n: float(k / p) if p else None
            for n, k, p in zip(teacher.class_names, kept, predicted, strict=True)
        },
        "kept_pixels": float(kept.sum() / max(predicted.sum(), 1)),
    }
    if settings.flow_agree:
        record["flow_dropped"] = float(
            1 - kept.sum() / max(confident, 1)
        )  # confident pixels the flow removed
    write_json(record_path, record)
    started.unlink(missing_ok=True)
    return record


__all__ = [
    "RECORD_NAME",
    "PseudoLabelSettings",
    "Teacher",
    "class_thresholds",
    "flow_disagreement",
    "pseudolabel",
    "sequence_neighbours",
]
