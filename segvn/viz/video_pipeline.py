"""Streaming prediction on videos and images: decode, infer in batches, draw and encode, all overlapped.

Three kinds of thread share the work, linked by bounded queues (``queue_size`` batches each), so memory
stays constant however long the video is::

    decode thread --batches of frames--> main thread: Predictor (batched model) --+--> writer thread
                                                                                  |    overlay + legend,
                                                                                  |    H.264 / PNGs, CSV
                                                                                  +--> TC thread (DIS flow)

Decoding (PyAV/decord), the network (torch), OpenCV, PNG and H.264 encoding all release the GIL, so
these stages run in parallel and the end-to-end speed approaches the model-only speed (see
``benchmarks/bench_predict.py``). Frames keep their order through every stage. Videos are decoded with
PyAV by default here: the decode thread already overlaps decoding with the model, and decord's own
read-ahead thread would only compete with the model for the CPU cores.

Outputs per input (all in one run directory):

* a video: ``<stem>_overlay.mp4`` (H.264/yuv420p, same size, frame count and frame rate as the input,
  class colours blended at ``alpha``, optional legend), optionally ``labels/<stem>/<stem>_<index>.png``
  (palette PNGs: pixel value = class index, colours = the class palette, readable as segvn RGB masks);
* images: ``overlays/<name>.png`` and optionally ``labels/<name>.png``;
* for all: one row per frame in ``class_shares.csv`` (``source, frame, timestamp, <share per class>``)
  and an entry in ``summary.json``.

A video that is truncated or corrupt part-way is not lost: every intact frame is predicted, the overlay
video is finalised (playable, with the frames before the damage) and the CSV rows kept, and the input's
result carries the decoder's error (file and frame) and ``partial: true``.

Temporal consistency (TC, :class:`segvn.metrics.TemporalConsistency`, Liu et al. 2020) is measured on
every pair of consecutive video frames with OpenCV's DIS optical flow. Flow on full-size frames with the
``medium`` preset costs more than drawing and encoding together (~40 ms per 960x540 pair), so frames
and labels are first scaled by ``tc_scale`` (default 0.5) and the flow uses the ``fast`` preset
(``tc_flow``): ~5 ms per pair, 8x cheaper, and on the dash-cam video TC within 0.002 of full-size
``medium`` flow (0.6899 vs 0.6887; ``tc_scale=0.25`` drifts by 0.02-0.03, so it is not the default).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch
from PIL import Image

from segvn.data.classes import IGNORE_INDEX, PALETTE
from segvn.data.io import IMAGE_SUFFIXES, read_image
from segvn.data.video import VIDEO_EXTENSIONS, VideoError, VideoWriter, open_video
from segvn.errors import DataError
from segvn.metrics.temporal import TemporalConsistency, dis_flow
from segvn.models.inference import BatchPrediction, Predictor
from segvn.viz.overlay import DEFAULT_ALPHA, draw_legend, overlay

log = logging.getLogger(__name__)

INPUT_ERRORS: tuple[type[BaseException], ...] = (VideoError, DataError)
"""Errors of an input file (truncated video, unreadable image): the input ends there, outputs are kept."""

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
"""OpenCV DIS optical-flow presets for TC (``temporal.tc_flow``)."""

ProgressFactory = Callable[[str, int | None], Callable[[int], None]]
"""``progress(label, total)`` returns ``advance(n)``, called after each batch (main thread)."""


@dataclass
class PredictOptions:
    """How :func:`predict_video`/:func:`predict_images` work and what they write (see ``conf/predict.yaml``)."""

    batch_size: int = 4
    alpha: float = DEFAULT_ALPHA
    legend: bool = True
    legend_corner: str = "top-right"
    save_labels: bool = False
    max_frames: int | None = None
    tc: bool = True
    tc_scale: float = 0.5
    tc_flow: str = "fast"
    crf: int = 20
    preset: str = "superfast"
    backend: str = "pyav"
    threads: int = 0
    queue_size: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_frames is not None and int(self.max_frames) < 1:
            raise ValueError(f"max_frames must be >= 1 or null, got {self.max_frames}")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not 0.0 < float(self.tc_scale) <= 1.0:
            raise ValueError(f"temporal.tc_scale must be in (0, 1], got {self.tc_scale}")
        if self.tc_flow not in DIS_PRESETS:
            raise ValueError(
                f"temporal.tc_flow must be one of {', '.join(DIS_PRESETS)}, got {self.tc_flow!r}"
            )
        if int(self.queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")


class Item(NamedTuple):
    """One frame to predict: index in its input, timestamp (s; ``None`` for images), RGB, output name, source."""

    index: int
    timestamp: float | None
    rgb: np.ndarray
    name: str
    source: str


@dataclass
class InputResult:
    """What happened to one input (a video, or a group of images); one entry of ``summary.json``."""

    input: str
    kind: str
    output: str | None = None
    labels: str | None = None
    frames: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    width: int | None = None
    height: int | None = None
    video_fps: float | None = None
    tc: float | None = None
    tc_pairs: int = 0
    error: str | None = None
    share_sums: np.ndarray | None = field(default=None, repr=False)
    tc_state: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def partial(self) -> bool:
        return self.error is not None

    @property
    def fps(self) -> float | None:
        return self.frames / self.seconds if self.seconds > 0 and self.frames else None

    @property
    def model_fps(self) -> float | None:
        return self.frames / self.model_seconds if self.model_seconds > 0 and self.frames else None

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("share_sums", "tc_state")}
        out.update(partial=self.partial, fps=self.fps, model_fps=self.model_fps)
        return _clean(out)


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python, floats rounded to 6 digits."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return round(obj, 6) if math.isfinite(obj) else None
    return obj


# --------------------------------------------------------------------------------------------- outputs
def palette_for(num_classes: int) -> np.ndarray:
    """The class palette (extended with fixed pseudo-random colours past the 8 segvn classes)."""
    if num_classes <= len(PALETTE):
        return PALETTE[:num_classes]
    extra = np.random.default_rng(0).integers(0, 256, size=(num_classes - len(PALETTE), 3), dtype=np.uint8)
    return np.concatenate([PALETTE, extra])


def save_label_png(labels: np.ndarray, path: str | Path, palette: np.ndarray = PALETTE) -> Path:
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


def save_rgb_png(rgb: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"cannot write {path}")
    return path


class SharesCSV:
    """``class_shares.csv``: one row per predicted frame, flushed after every batch (kept on errors)."""

    def __init__(self, path: str | Path, class_names: Sequence[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.class_names = list(class_names)
        self._fh = open(self.path, "w", newline="")  # noqa: SIM115 - closed in close()
        self._writer = csv.writer(self._fh)
        self._writer.writerow(["source", "frame", "timestamp", *self.class_names])
        self.rows = 0

    def write(self, source: str, index: int, timestamp: float | None, shares: np.ndarray) -> None:
        ts = "" if timestamp is None else f"{timestamp:.6f}"
        self._writer.writerow([source, index, ts, *(f"{s:.6f}" for s in shares)])
        self.rows += 1

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> SharesCSV:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Drawer:
    """Overlay (alpha blend of the class colours) plus optional legend, as written to videos and PNGs."""

    def __init__(self, class_names: Sequence[str], options: PredictOptions) -> None:
        self.class_names = list(class_names)
        self.palette = palette_for(len(self.class_names))
        self.alpha = float(options.alpha)
        self.legend = bool(options.legend)
        self.corner = options.legend_corner

    def __call__(self, rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
        out = overlay(rgb, labels, self.alpha, self.palette)
        if self.legend:
            out = draw_legend(out, self.class_names, self.palette, corner=self.corner)
        return out


class TemporalTracker:
    """TC over consecutive frames of one video, at ``scale`` of the frame size (see the module docstring)."""

    def __init__(self, num_classes: int, scale: float = 0.5, flow: str = "fast") -> None:
        self.metric = TemporalConsistency(num_classes, IGNORE_INDEX)
        self.scale = float(scale)
        self.preset = DIS_PRESETS[flow]
        self.pairs = 0
        self._prev: tuple[np.ndarray, torch.Tensor] | None = None

    def _small(self, rgb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if self.scale != 1.0:
            h, w = labels.shape
            size = (max(8, round(w * self.scale)), max(8, round(h * self.scale)))
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
            labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
        return grey, torch.from_numpy(np.ascontiguousarray(labels))

    def add(self, rgb: np.ndarray, labels: np.ndarray) -> None:
        """The next frame of the video and its label map; compared with the previous one."""
        grey, lab = self._small(rgb, labels)
        if self._prev is not None:
            prev_grey, prev_lab = self._prev
            self.metric.update(prev_lab, lab, dis_flow(prev_grey, grey, self.preset))
            self.pairs += 1
        self._prev = (grey, lab)

    @property
    def value(self) -> float | None:
        tc = float(self.metric.compute()) if self.pairs else float("nan")
        return tc if math.isfinite(tc) else None

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        return self.metric.intersection.numpy().copy(), self.metric.union.numpy().copy()


# ----------------------------------------------------------------------------------------- threading
_END = object()


class _Failure(NamedTuple):
    error: BaseException


class _Stage(threading.Thread):
    """A consumer thread: ``handle(msg)`` for every message in order, then ``close()``; keeps the first error.

    After an error it keeps draining its queue (so the main thread never blocks on it) until :meth:`finish`.
    """

    def __init__(self, name: str, handle: Callable[[Any], None], close: Callable[[], None], size: int):
        super().__init__(name=name, daemon=True)
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self._handle, self._close = handle, close
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while (msg := self.queue.get()) is not _END:
                if self.error is None:
                    try:
                        self._handle(msg)
                    except BaseException as err:  # reported to the main thread
                        self.error = err
        finally:
            try:
                self._close()
            except BaseException as err:
                self.error = self.error or err

    def put(self, msg: Any) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(msg)

    def finish(self) -> BaseException | None:
        self.queue.put(_END)
        self.join()
        return self.error


class _Producer(threading.Thread):
    """Decode thread: groups items into batches of one frame size; ends with ``_END`` or a ``_Failure``."""

    def __init__(self, items: Iterator[Item], batch_size: int, size: int) -> None:
        super().__init__(name="segvn-decode", daemon=True)
        self.items, self.batch_size = items, batch_size
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self.stop = threading.Event()

    def _put(self, msg: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(msg, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        batch: list[Item] = []
        try:
            for item in self.items:
                if batch and item.rgb.shape != batch[0].rgb.shape:
                    if not self._put(batch):
                        return
                    batch = []
                batch.append(item)
                if len(batch) >= self.batch_size:
                    if not self._put(batch):
                        return
                    batch = []
            if not batch or self._put(batch):
                self._put(_END)
        except BaseException as err:
            if not batch or self._put(batch):
                self._put(_Failure(err))
        finally:
            close = getattr(self.items, "close", None)
            if close is not None:
                close()


def run_stream(
    items: Iterator[Item],
    predictor: Predictor,
    consumers: Sequence[tuple[str, Callable[[list[Item], BatchPrediction], None], Callable[[], None]]],
    batch_size: int,
    queue_size: int = 2,
    advance: Callable[[int], None] | None = None,
) -> BaseException | None:
    """Push ``items`` through decode thread -> ``predictor`` (this thread) -> one thread per consumer.

    ``consumers`` are ``(name, handle(batch, prediction), close())``; every consumer's ``close`` runs
    whatever happens (so a video file is always finalised). Returns the input's error (the exception
    the item iterator raised, after every item before it went through), or ``None``; errors of the
    predictor or of a consumer are raised.
    """
    producer = _Producer(items, batch_size, queue_size)
    stages = [
        _Stage(f"segvn-{name}", lambda m, h=handle: h(*m), close, queue_size)
        for name, handle, close in consumers
    ]
    for stage in stages:
        stage.start()
    producer.start()
    input_error: BaseException | None = None
    try:
        while True:
            msg = producer.queue.get()
            if msg is _END:
                break
            if isinstance(msg, _Failure):
                input_error = msg.error
                break
            prediction = predictor([item.rgb for item in msg])
            for stage in stages:
                stage.put((msg, prediction))
            if advance is not None:
                advance(len(msg))
    finally:
        producer.stop.set()
        errors = [stage.finish() for stage in stages]
        producer.join()
    for err in errors:
        if err is not None:
            raise err
    return input_error


# -------------------------------------------------------------------------------------------- inputs
def output_names(paths: Sequence[Path]) -> list[str]:
    """Output names (file stems; the suffix is kept where two files share a stem)."""
    stems = [p.stem for p in paths]
    dup = {s for s in stems if stems.count(s) > 1}
    return [f"{p.stem}_{p.suffix.lstrip('.')}" if p.stem in dup else p.stem for p in paths]


def collect_inputs(path: str | Path) -> tuple[list[Path], list[Path]]:
    """``(videos, images)`` of a video file, an image file, or a folder (its files, sorted, not recursive)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path} (give a video, an image or a folder of them)")
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    videos = [p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not videos and not images:
        kinds = ", ".join(sorted(VIDEO_EXTENSIONS | set(IMAGE_SUFFIXES)))
        what = "has no videos or images" if path.is_dir() else "is neither a video nor an image"
        raise DataError(f"input {path} {what} (known suffixes: {kinds})")
    return videos, images


def _video_items(reader, path: Path, limit: int | None) -> Iterator[Item]:
    """The frames of a video as items, at most ``limit``; closing this closes the decoder."""
    frames = iter(reader)
    try:
        for count, frame in enumerate(frames, 1):
            yield Item(frame.index, frame.timestamp, frame.rgb, path.stem, str(path))
            if limit is not None and count >= limit:
                return  # before decoding another frame (a damaged one after the limit is no error)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()


def _image_items(images: Sequence[tuple[Path, str]]) -> Iterator[Item]:
    for i, (path, name) in enumerate(images):
        yield Item(i, None, read_image(path), name, str(path))


def _elapsed(start: float) -> float:
    return time.perf_counter() - start


class _Sink:
    """The writer stage: draws, writes the outputs of one input and its CSV rows (writer thread)."""

    def __init__(self, result: InputResult, drawer: Drawer, shares: SharesCSV, write_frame) -> None:
        self.result, self.drawer, self.shares = result, drawer, shares
        self.write_frame = write_frame  # (item, overlay, labels) -> None
        self.share_sums = np.zeros(len(drawer.class_names))

    def __call__(self, batch: list[Item], prediction: BatchPrediction) -> None:
        for item, labels, shares in zip(batch, prediction.labels, prediction.shares, strict=True):
            self.write_frame(item, self.drawer(item.rgb, labels), labels)
            self.shares.write(item.source, item.index, item.timestamp, shares)
            self.share_sums += shares
            self.result.frames += 1
        self.shares.flush()


def predict_video(
    path: str | Path,
    predictor: Predictor,
    out_dir: str | Path,
    class_names: Sequence[str],
    shares: SharesCSV,
    options: PredictOptions,
    progress: ProgressFactory | None = None,
) -> InputResult:
    """Predict every frame of one video (up to ``options.max_frames``); see the module docstring.

    Raises :class:`VideoError` when the file cannot be opened at all; damage part-way ends the
    input with ``result.error`` set and the outputs finalised.
    """
    path, out_dir = Path(path), Path(out_dir)
    start = time.perf_counter()
    reader = open_video(path, options.backend, threads=options.threads)
    info = reader.info
    out_video = out_dir / f"{path.stem}_overlay.mp4"
    labels_dir = out_dir / "labels" / path.stem
    result = InputResult(
        str(path), "video", str(out_video), str(labels_dir) if options.save_labels else None,
        width=info.width, height=info.height, video_fps=info.fps,
    )  # fmt: skip
    total = reader.frame_count if options.max_frames is None else min(reader.frame_count, options.max_frames)
    writer = VideoWriter(
        out_video, info.rate, info.width, info.height, crf=options.crf, preset=options.preset
    )

    def write_frame(item: Item, picture: np.ndarray, labels: np.ndarray) -> None:
        writer.write(picture)
        if options.save_labels:
            save_label_png(
                labels, labels_dir / f"{path.stem}_{item.index:06d}.png", palette_for(len(class_names))
            )

    drawer = Drawer(class_names, options)
    sink = _Sink(result, drawer, shares, write_frame)
    consumers = [("write", sink, writer.close)]
    tracker = TemporalTracker(len(class_names), options.tc_scale, options.tc_flow) if options.tc else None
    if tracker is not None:

        def track(batch: list[Item], prediction: BatchPrediction) -> None:
            for item, labels in zip(batch, prediction.labels, strict=True):
                tracker.add(item.rgb, labels)

        consumers.append(("tc", track, lambda: None))
    frames = _video_items(reader, path, options.max_frames)
    predictor.reset()
    model_before = predictor.seconds
    advance = progress(path.name, total) if progress is not None else None
    error = run_stream(frames, predictor, consumers, options.batch_size, options.queue_size, advance)
    result.seconds = _elapsed(start)
    result.model_seconds = predictor.seconds - model_before
    result.share_sums = sink.share_sums
    if tracker is not None:
        result.tc, result.tc_pairs, result.tc_state = tracker.value, tracker.pairs, tracker.state()
    if error is not None:
        if not isinstance(error, INPUT_ERRORS):
            raise error
        result.error = str(error)
    return result


def predict_images(
    images: Sequence[tuple[Path, str]],
    predictor: Predictor,
    out_dir: str | Path,
    class_names: Sequence[str],
    shares: SharesCSV,
    options: PredictOptions,
    progress: ProgressFactory | None = None,
    label: str = "images",
) -> InputResult:
    """Predict still images ``(path, output name)``: ``overlays/<name>.png`` (+ ``labels/<name>.png``).

    Images are independent: no smoothing and no TC. Consecutive images of one size share a batch.
    An unreadable image ends the group (``result.error``) with everything before it written.
    """
    out_dir = Path(out_dir)
    start = time.perf_counter()
    result = InputResult(
        label, "images", str(out_dir / "overlays"), str(out_dir / "labels") if options.save_labels else None
    )
    palette = palette_for(len(class_names))

    def write_frame(item: Item, picture: np.ndarray, labels: np.ndarray) -> None:
        save_rgb_png(picture, out_dir / "overlays" / f"{item.name}.png")
        if options.save_labels:
            save_label_png(labels, out_dir / "labels" / f"{item.name}.png", palette)

    sink = _Sink(result, Drawer(class_names, options), shares, write_frame)
    items = list(images)[: options.max_frames]
    smoother, predictor.smoother = predictor.smoother, None  # stills: never smoothed
    model_before = predictor.seconds
    advance = progress(label, len(items)) if progress is not None else None
    try:
        error = run_stream(
            _image_items(items), predictor, [("write", sink, lambda: None)], options.batch_size,
            options.queue_size, advance,
        )  # fmt: skip
    finally:
        predictor.smoother = smoother
    result.seconds = _elapsed(start)
    result.model_seconds = predictor.seconds - model_before
    result.share_sums = sink.share_sums
    if error is not None:
        if not isinstance(error, INPUT_ERRORS):
            raise error
        result.error = str(error)
    return result


# --------------------------------------------------------------------------------------------- a run
def run_prediction(
    predictor: Predictor,
    out_dir: str | Path,
    class_names: Sequence[str],
    options: PredictOptions,
    videos: Iterable[Path] = (),
    image_groups: Iterable[tuple[str, Sequence[tuple[Path, str]]]] = (),
    progress: ProgressFactory | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Predict every video, then every image group; write ``class_shares.csv`` and ``summary.json``.

    ``image_groups`` are ``(label, [(path, output name), ...])``. Returns the summary; ``summary["errors"]``
    lists inputs that ended early (their partial outputs are kept), ``status`` is then ``partial``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[InputResult] = []
    start = time.perf_counter()
    model_before, frames_before = predictor.seconds, predictor.frames
    with SharesCSV(out_dir / "class_shares.csv", class_names) as shares:
        for video in videos:
            res = predict_video(video, predictor, out_dir, class_names, shares, options, progress)
            results.append(res)
            if res.error:
                log.error("%s", res.error)
        for label, images in image_groups:
            res = predict_images(images, predictor, out_dir, class_names, shares, options, progress, label)
            results.append(res)
            if res.error:
                log.error("%s", res.error)
    seconds = _elapsed(start)
    summary = build_summary(
        results, seconds, predictor.seconds - model_before, predictor.frames - frames_before,
        class_names, out_dir, meta or {},
    )  # fmt: skip
    write_json(out_dir / "summary.json", summary)
    return summary


def build_summary(
    results: Sequence[InputResult],
    seconds: float,
    model_seconds: float,
    model_frames: int,
    class_names: Sequence[str],
    out_dir: Path,
    meta: dict[str, Any],
) -> dict[str, Any]:
    frames = sum(r.frames for r in results)
    sums = sum((r.share_sums for r in results if r.share_sums is not None), np.zeros(len(class_names)))
    states = [r.tc_state for r in results if r.tc_state is not None and r.tc_pairs]
    tc = None
    if states:
        inter = sum(s[0] for s in states).astype(np.float64)
        union = sum(s[1] for s in states).astype(np.float64)
        tc = float(np.mean(inter[union > 0] / union[union > 0])) if (union > 0).any() else None
    errors = [r.error for r in results if r.error]
    summary = {
        "status": "partial" if errors else "complete",
        **meta,
        "output_dir": str(out_dir),
        "frames": frames,
        "seconds": seconds,
        "fps": frames / seconds if seconds > 0 and frames else None,
        "model_seconds": model_seconds,
        "model_fps": model_frames / model_seconds if model_seconds > 0 and model_frames else None,
        "tc": tc,
        "tc_pairs": sum(r.tc_pairs for r in results),
        "mean_class_shares": dict(
            zip(class_names, (sums / frames if frames else sums).tolist(), strict=True)
        ),
        "class_shares_csv": str(out_dir / "class_shares.csv"),
        "inputs": [r.to_dict() for r in results],
        "errors": errors,
    }
    return _clean(summary)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON through a temporary file, so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def summary_line(summary: dict[str, Any]) -> str:
    """The one-line report ``segvn.predict`` logs."""

    def num(v: float | None, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    return (
        f"{summary['status']}: {summary['frames']} frames in {num(summary['seconds'], '.1f')} s, "
        f"{num(summary['fps'], '.2f')} fps end-to-end, {num(summary['model_fps'], '.2f')} fps model-only, "
        f"TC {num(summary['tc'], '.4f')} -> {summary['output_dir']}"
    )
