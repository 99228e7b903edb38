"""Prediction over whole videos and folders of images: the drivers behind ``segvn.predict``.

Each input streams through :func:`segvn.inference.streaming.run_stream`: decode thread -> batched
:class:`~segvn.inference.predictor.Predictor` -> a writer thread (overlay + legend, H.264 or PNGs,
``class_shares.csv`` rows) and, for videos, a TC thread. Video frames stay in the decoder's I420 where
the video is BT.601 4:2:0 (:mod:`segvn.data.yuv`): no stage needs them in RGB at the full size.
Outputs per input (one run directory):

* a video: ``<stem>_overlay.mp4`` (H.264/yuv420p, same size, frame count and frame rate as the input),
  optionally ``labels/<stem>/<stem>_<index>.png`` (palette PNGs: pixel value = class index);
* images: ``overlays/<name>.png`` and optionally ``labels/<name>.png``;
* for all: rows in ``class_shares.csv`` and an entry in ``summary.json``.

A video truncated or corrupt part-way is not lost: every intact frame is predicted, the overlay video
is finalised (playable up to the damage) and the CSV rows kept; the input's result carries the
decoder's error (file and frame) and ``partial: true``. Videos are decoded with PyAV by default here:
the decode thread already overlaps decoding with the model, and decord's own read-ahead thread would
only compete with the model for the CPU cores.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segvn.data.classes import palette_for
from segvn.data.io import IMAGE_SUFFIXES, read_image, write_label_png
from segvn.data.video import VIDEO_EXTENSIONS, open_video
from segvn.data.video_writer import VideoWriter
from segvn.errors import DataError, InputNotFoundError, SegvnError
from segvn.inference.consistency import TemporalTracker
from segvn.inference.options import PredictConfig, batch_size_for, preset_for
from segvn.inference.outputs import InputResult, SharesCSV, build_summary
from segvn.inference.predictor import BatchPrediction, Predictor
from segvn.inference.streaming import Consumer, Item, run_stream
from segvn.utils.io import json_safe, write_json
from segvn.viz.image import save_image
from segvn.viz.overlay import OverlayDrawer

log = logging.getLogger(__name__)

LIST_SUFFIX = ".txt"
"""``input=FILE.txt``: a list of videos/images, one path a line."""

ProgressFactory = Callable[[str, int | None], Callable[[int], None]]
"""``progress(label, total)`` returns ``advance(n)``, called after each batch (main thread)."""


def output_names(paths: Sequence[Path]) -> list[str]:
    """Output names (file stems; the suffix is kept where two files share a stem)."""
    stems = [p.stem for p in paths]
    dup = {s for s in stems if stems.count(s) > 1}
    return [f"{p.stem}_{p.suffix.lstrip('.')}" if p.stem in dup else p.stem for p in paths]


def _listed(path: Path) -> list[Path]:
    """The files named in a list file, one a line (``#`` comments and blank lines skipped), relative to it."""
    files = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        file = (path.parent / line).expanduser()
        if not file.is_file():
            raise InputNotFoundError(f"input={path}:{n}: {line} is not a file")
        files.append(file)
    return files


def collect_inputs(path: str | Path) -> tuple[list[Path], list[Path]]:
    """``(videos, images)`` of a video file, an image file, a folder (its files, sorted, not recursive) or a
    ``.txt`` list of files (one a line)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputNotFoundError(f"input not found: {path} (give a video, an image or a folder of them)")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
    elif path.suffix.lower() == LIST_SUFFIX:
        files = _listed(path)
    else:
        files = [path]
    videos = [p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not videos and not images:
        kinds = ", ".join(sorted(VIDEO_EXTENSIONS | set(IMAGE_SUFFIXES)))
        what = (
            "has no videos or images"
            if path.is_dir() or path.suffix.lower() == LIST_SUFFIX
            else "is neither a video nor an image"
        )
        raise DataError(f"input {path} {what} (known suffixes: {kinds})")
    return videos, images


def _video_items(reader, path: Path, limit: int | None) -> Iterator[Item]:
    """The frames of a video as items, at most ``limit``; closing this closes the decoder."""
    frames = iter(reader)
    try:
        for count, frame in enumerate(frames, 1):
            yield Item(frame.index, frame.timestamp, frame.image, path.stem, str(path))
            if limit is not None and count >= limit:
                return  # before decoding another frame (a damaged one after the limit is no error)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()


def _image_items(images: Sequence[tuple[Path, str]], skipped: list[str] | None = None) -> Iterator[Item]:
    """The images as items; with ``skipped``, an unreadable one is recorded there and left out."""
    for i, (path, name) in enumerate(images):
        try:
            rgb = read_image(path)
        except SegvnError as err:
            if skipped is None:
                raise
            log.error("%s", err)
            skipped.append(str(err))
            continue
        yield Item(i, None, rgb, name, str(path))


def _drawer(class_names: Sequence[str], options: PredictConfig) -> OverlayDrawer:
    return OverlayDrawer(class_names, options.alpha, options.legend, options.legend_corner)


class _Sink:
    """The writer stage: draws, writes the outputs of one input and its CSV rows (writer thread)."""

    def __init__(
        self, result: InputResult, drawer: OverlayDrawer, shares: SharesCSV, write_frame, draw=None
    ) -> None:
        self.result, self.shares = result, shares
        self.draw = draw or drawer  # (rgb, labels) -> the picture write_frame takes
        self.write_frame = write_frame  # (item, picture, labels) -> None
        self.share_sums = np.zeros(len(drawer.class_names))

    def __call__(self, batch: list[Item], prediction: BatchPrediction) -> None:
        for item, labels, shares in zip(batch, prediction.labels, prediction.shares, strict=True):
            self.write_frame(item, self.draw(item.image, labels), labels)
            self.shares.write(item.source, item.index, item.timestamp, shares)
            self.share_sums += shares
            self.result.frames += 1
        self.shares.flush()


def _stream(
    result: InputResult,
    items: Iterator[Item],
    predictor: Predictor,
    sink: _Sink,
    consumers: list[Consumer],
    options: PredictConfig,
    advance: Callable[[int], None] | None,
) -> InputResult:
    """The tail both drivers share: stream, then fill in times and shares; an input error ends the input."""
    start, model_before = time.perf_counter(), predictor.seconds
    batch = batch_size_for(options.batch_size, predictor.device)
    error = run_stream(
        items, predictor, consumers, batch, options.queue_size, advance, getattr(predictor, "workers", 1)
    )
    result.seconds += time.perf_counter() - start
    result.model_seconds = predictor.seconds - model_before
    result.share_sums = sink.share_sums
    if error is not None:
        if not isinstance(error, SegvnError):
            raise error
        result.error = str(error)
    return result


def predict_video(
    path: str | Path,
    predictor: Predictor,
    out_dir: str | Path,
    class_names: Sequence[str],
    shares: SharesCSV,
    options: PredictConfig,
    progress: ProgressFactory | None = None,
) -> InputResult:
    """Predict every frame of one video (up to ``options.max_frames``); see the module docstring.

    Raises a :class:`~segvn.errors.VideoError` when the file cannot be opened at all; damage part-way
    ends the input with ``result.error`` set and the outputs finalised.
    """
    path, out_dir = Path(path), Path(out_dir)
    start = time.perf_counter()
    # I420 frames where the video allows (segvn.data.yuv): the model, TC and the overlay take them as they are
    reader = open_video(path, str(options.video.backend), threads=options.video.threads, i420=True)
    info = reader.info
    out_video = out_dir / f"{path.stem}_overlay.mp4"
    labels_dir = out_dir / "labels" / path.stem
    result = InputResult(
        str(path), "video", str(out_video), str(labels_dir) if options.save_labels else None,
        width=info.width, height=info.height, video_fps=info.fps,
    )  # fmt: skip
    total = reader.frame_count if options.max_frames is None else min(reader.frame_count, options.max_frames)
    writer = VideoWriter(
        out_video,
        info.rate,
        info.width,
        info.height,
        crf=options.output.crf,
        preset=preset_for(options.output.preset),
        threads=options.output.encoder_threads,
    )
    palette = palette_for(len(class_names))

    # Even-sized frames are drawn straight into I420, the encoder's format (a fifth of the CPU time of
    # drawing in RGB and converting; segvn.viz.overlay.overlay_i420).
    i420 = info.width % 2 == 0 and info.height % 2 == 0
    drawer = _drawer(class_names, options)

    def write_frame(item: Item, picture: np.ndarray, labels: np.ndarray) -> None:
        if i420:
            writer.write_i420(picture)
        else:
            writer.write(picture)
        if options.save_labels:
            write_label_png(labels, labels_dir / f"{path.stem}_{item.index:06d}.png", palette)

    sink = _Sink(result, drawer, shares, write_frame, drawer.i420 if i420 else drawer)
    consumers: list[Consumer] = [("write", sink, writer.close)]
    temporal = options.temporal
    tracker = (
        TemporalTracker(len(class_names), temporal.tc_scale, str(temporal.tc_flow)) if temporal.tc else None
    )
    if tracker is not None:

        def track(batch: list[Item], prediction: BatchPrediction) -> None:
            for item, labels in zip(batch, prediction.labels, strict=True):
                tracker.add(item.image, labels)

        consumers.append(("tc", track, lambda: None))
    predictor.reset()
    advance = progress(path.name, total) if progress is not None else None
    result.seconds = time.perf_counter() - start
    _stream(
        result, _video_items(reader, path, options.max_frames), predictor, sink, consumers, options, advance
    )
    if tracker is not None:
        result.tc, result.tc_pairs, result.tc_state = tracker.value, tracker.pairs, tracker.state()
    return result


def predict_images(
    images: Sequence[tuple[Path, str]],
    predictor: Predictor,
    out_dir: str | Path,
    class_names: Sequence[str],
    shares: SharesCSV,
    options: PredictConfig,
    progress: ProgressFactory | None = None,
    label: str = "images",
) -> InputResult:
    """Predict still images ``(path, output name)``: ``overlays/<name>.png`` (+ ``labels/<name>.png``).

    Images are independent: no smoothing and no TC. Consecutive images of one size share a batch.
    An unreadable image is skipped and named in ``result.error`` (``on_error=stop``: it ends the group).
    """
    out_dir = Path(out_dir)
    result = InputResult(
        label, "images", str(out_dir / "overlays"), str(out_dir / "labels") if options.save_labels else None
    )
    palette = palette_for(len(class_names))

    def write_frame(item: Item, picture: np.ndarray, labels: np.ndarray) -> None:
        save_image(picture, out_dir / "overlays" / f"{item.name}.png", compression=1)
        if options.save_labels:
            write_label_png(labels, out_dir / "labels" / f"{item.name}.png", palette)

    sink = _Sink(result, _drawer(class_names, options), shares, write_frame)
    items = list(images)[: options.max_frames]
    smoother, predictor.smoother = predictor.smoother, None  # stills: never smoothed
    advance = progress(label, len(items)) if progress is not None else None
    try:
        _stream(
            result, _image_items(items), predictor, sink, [("write", sink, lambda: None)], options, advance
        )
    finally:
        predictor.smoother = smoother
    return result


CARRY_KEYS = ("checkpoint", "image_size_rule", "temporal", "class_names", "tta_flip")
"""Settings that must match for a re-run into the same folder to carry an earlier input over."""


def _done_inputs(out_dir: Path, meta: dict[str, Any]) -> dict[str, InputResult]:
    """Inputs an earlier run into ``out_dir`` finished (same settings, outputs present): a re-run skips them."""
    try:
        previous = json.loads((out_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    explicit = meta.get("image_size") is not None and previous.get("image_size") != json_safe(
        meta["image_size"]
    )
    if explicit or any(previous.get(k) != json_safe(meta.get(k)) for k in CARRY_KEYS if k in meta):
        log.info("%s holds a run with other settings: predicting every input again", out_dir)
        return {}
    done = {}
    for entry in previous.get("inputs", []):
        if not entry.get("partial") and entry.get("output") and Path(entry["output"]).exists():
            done[entry["input"]] = InputResult.from_dict(entry)
    if done:
        log.info("continuing in %s: %d input(s) done by an earlier run are kept", out_dir, len(done))
    return done


class _Stop(Exception):
    """``on_error=stop``: end the run after the first input that failed."""


def run_prediction(
    predictor: Predictor,
    out_dir: str | Path,
    class_names: Sequence[str],
    options: PredictConfig,
    videos: Iterable[Path] = (),
    image_groups: Iterable[tuple[str, Sequence[tuple[Path, str]]]] = (),
    progress: ProgressFactory | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Predict every video, then every image group; write ``class_shares.csv`` and ``summary.json``.

    ``image_groups`` are ``(label, [(path, output name), ...])``. Returns the summary; ``summary["errors"]``
    lists inputs that failed or ended early (their partial outputs are kept), ``status`` is then
    ``partial``. With ``on_error=skip`` (the default) a video that cannot be opened, or an unreadable
    image, is recorded and the next input follows; ``on_error=stop`` ends the run there.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[InputResult] = []
    start = time.perf_counter()
    model_before, frames_before = predictor.seconds, predictor.frames
    stop = str(options.on_error) == "stop"
    videos, image_groups = list(videos), list(image_groups)
    done = _done_inputs(out_dir, meta or {})
    keep = {str(v) for v in videos if str(v) in done}
    keep |= {str(p) for label, images in image_groups if label in done for p, _ in images}

    def summarise(running: bool = False) -> dict[str, Any]:
        """Write ``summary.json`` (``status: running`` until the end: a killed run keeps its finished inputs)."""
        info = dict(meta or {})
        if predictor.sizes_used:  # the model input size actually used, per frame size
            sizes = {f"{h}x{w}": list(hw) for (h, w), hw in predictor.sizes_used.items()}
            info["image_size"] = next(iter(sizes.values()))
            info["image_sizes"] = sizes
        summary = build_summary(
            results, time.perf_counter() - start, predictor.seconds - model_before,
            predictor.frames - frames_before, class_names, out_dir, info,
        )  # fmt: skip
        if running:
            summary["status"] = "running"
        write_json(out_dir / "summary.json", summary)
        return summary

    def finish(res: InputResult) -> None:
        results.append(res)
        shares.flush()
        summarise(running=True)
        if res.error:
            log.error("%s", res.error)
            if stop:
                raise _Stop

    shares = SharesCSV(out_dir / "class_shares.csv", class_names, keep)
    try:
        with shares:
            for video in videos:
                if str(video) in done:
                    results.append(done[str(video)])
                    continue
                try:
                    res = predict_video(video, predictor, out_dir, class_names, shares, options, progress)
                except SegvnError as err:  # not even opened: record it, go on with the next input
                    res = InputResult(str(video), "video", error=str(err))
                finish(res)
            for label, images in image_groups:
                finish(
                    predict_images(images, predictor, out_dir, class_names, shares, options, progress, label)
                )
    except _Stop:
        log.error("on_error=stop: the remaining inputs were not predicted")
    finally:  # summary.json is written whatever happens, so finished inputs keep their figures
        summary = summarise()
    return summary
