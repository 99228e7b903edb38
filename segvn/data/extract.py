"""Extract frames from street videos into the folder layout that ``data=vietnam`` reads.

Layout under ``OUT_ROOT/<street>/``::

    frames/<video-stem>_<frame index:06d>.png   # index of the frame in the original video
    labels/<video-stem>_<frame index:06d>.png   # written later by the labelling tool, not here
    manifest.csv                                # one row per extracted frame
    manifest.status.json                        # how far each video's extraction got

``manifest.csv`` columns: ``video, street, frame_index, timestamp, file, status``. ``file`` is relative to
the street folder, ``timestamp`` is the frame's presentation time in seconds (from the container's pts),
``status`` is the outcome of that video's latest extraction: ``complete`` or ``partial`` (it stopped on a
truncated/corrupt file; its rows are the frames written before the failure). ``manifest.status.json`` has
one entry per video (status ``complete``/``partial``/``failed``/``pending``, frames written, the last frame
written, the error) so a failure is recorded even when no frame was written.

Re-running is safe: rows are keyed by ``(video, frame_index)``, so the same run twice gives the same
manifest, and a run with another selection adds its frames to those already on disk (frames are never
deleted: labels may already refer to them). Output is deterministic (same input -> same files).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from segvn.data.video import VIDEO_EXTENSIONS, FrameSelection, open_video
from segvn.errors import ExtractError, VideoDecodeError, VideoError, VideoNotFoundError
from segvn.utils.io import write_atomic, write_json

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
STATUS_NAME = "manifest.status.json"
MANIFEST_COLUMNS: tuple[str, ...] = ("video", "street", "frame_index", "timestamp", "file", "status")
IMAGE_FORMATS = {"png": [cv2.IMWRITE_PNG_COMPRESSION, 3], "jpg": [cv2.IMWRITE_JPEG_QUALITY, 95]}

ProgressFn = Callable[[str, int, int], None]
"""``progress(video_name, frames_done, frames_total)``: called with 0 when a video starts, then after each frame."""


@dataclass
class VideoResult:
    """How one video's extraction went (an entry of ``manifest.status.json``)."""

    video: str
    status: str = "pending"
    frames_written: int = 0
    frames_selected: int = 0
    frames_present: int = 0
    frames_reported: int = 0
    last_frame_index: int | None = None
    last_timestamp: float | None = None
    error: str | None = None


@dataclass
class ExtractSummary:
    """What :func:`extract_frames` did."""

    street: str
    street_dir: Path
    manifest: Path
    selection: str
    backend: str
    videos: list[VideoResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def frames_written(self) -> int:
        return sum(v.frames_written for v in self.videos)

    @property
    def status(self) -> str:
        return "complete" if all(v.status == "complete" for v in self.videos) else "partial"

    def line(self) -> str:
        """One-line human summary."""
        return (
            f"street {self.street!r}: {self.frames_written} frames from {len(self.videos)} video(s) "
            f"({self.selection}, {self.backend}, {self.seconds:.1f} s) -> {self.street_dir / 'frames'}; "
            f"manifest {self.manifest} [{self.status}]"
        )


def find_videos(input_path: str | os.PathLike) -> list[Path]:
    """The video itself, or the videos (by extension, sorted by name, not recursive) of a folder."""
    path = Path(input_path)
    if not path.exists():
        raise VideoNotFoundError(f"input not found: {path}")
    if path.is_file():
        return [path]
    videos = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_EXTENSIONS
    )
    if not videos:
        raise ExtractError(f"no videos in {path} (looked for {', '.join(sorted(VIDEO_EXTENSIONS))})")
    stems = [p.stem for p in videos]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise ExtractError(
            f"videos in {path} share a name stem ({', '.join(clashes)}); frame files would clash"
        )
    return videos


def _check_street(street: str) -> str:
    street = str(street).strip()
    if not street or street in {".", ".."} or any(c in street for c in "/\\"):
        raise ExtractError(f"street must be a plain folder name, got {street!r}")
    return street


def _write_image(path: Path, rgb: np.ndarray, image_format: str) -> None:
    ok, buf = cv2.imencode(
        f".{image_format}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), IMAGE_FORMATS[image_format]
    )
    if not ok:
        raise OSError(f"could not encode {path}")
    write_atomic(path, buf.tobytes())


def read_manifest(path: Path) -> dict[tuple[str, int], dict[str, str]]:
    """Manifest rows keyed by ``(video, frame_index)`` (empty when the file does not exist)."""
    if not path.exists():
        return {}
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
                raise ExtractError(
                    f"{path} is not a segvn manifest (columns {reader.fieldnames}); move it away"
                )
            rows = {}
            for row in reader:
                if None in row or None in row.values() or not str(row["frame_index"]).strip().isdecimal():
                    raise ExtractError(
                        f"{path}, line {reader.line_num}: a damaged manifest row ({row}); fix the line or "
                        "move the manifest away and extract again"
                    )
                rows[(row["video"], int(row["frame_index"]))] = row
            return rows
    except (UnicodeDecodeError, csv.Error) as err:
        raise ExtractError(
            f"{path} is not a readable manifest ({err}); move it away and extract again"
        ) from err


def _write_manifest(street_dir: Path, rows: dict, results: dict[str, VideoResult]) -> Path:
    for (video, _), row in rows.items():
        if video in results:
            row["status"] = "complete" if results[video].status == "complete" else "partial"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[key] for key in sorted(rows))
    path = street_dir / MANIFEST_NAME
    write_atomic(path, buffer.getvalue().encode())
    return path


def _write_status(
    street_dir: Path, street: str, results: dict[str, VideoResult], selection: str, backend: str
) -> None:
    path = street_dir / STATUS_NAME
    videos = {}
    if path.exists():
        try:
            videos = {v["video"]: v for v in json.loads(path.read_text()).get("videos", [])}
        except (ValueError, KeyError, TypeError):
            log.warning("%s is unreadable; rewriting it", path)
    videos.update({name: asdict(r) for name, r in results.items()})
    overall = "complete" if all(v["status"] == "complete" for v in videos.values()) else "partial"
    doc = {"street": street, "status": overall, "last_run": {"selection": selection, "backend": backend}}
    doc["videos"] = [videos[k] for k in sorted(videos)]
    write_json(path, doc)


def _completed(street_dir: Path, selection: str) -> dict[str, dict]:
    """Videos that ``manifest.status.json`` says were extracted completely with ``selection``."""
    path = street_dir / STATUS_NAME
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if (doc.get("last_run") or {}).get("selection") != selection:
        return {}
    fields = set(VideoResult.__dataclass_fields__)
    return {
        v["video"]: {k: val for k, val in v.items() if k in fields}
        for v in doc.get("videos", [])
        if v.get("status") == "complete"
    }


def extract_frames(
    input: str | os.PathLike,
    street: str,
    out_root: str | os.PathLike,
    selection: FrameSelection,
    backend: str = "decord",
    image_format: str = "png",
    *,
    threads: int = 0,
    progress: ProgressFn | None = None,
    on_error: str = "skip",
) -> ExtractSummary:
    """Write the selected frames of ``input`` (a video or a folder of videos) to ``out_root/street/frames``.

    ``selection`` applies to each video on its own (``num_frames=400`` on a folder of 3 videos gives up to
    1200 frames). Raises :class:`VideoNotFoundError`/:class:`ExtractError` before writing anything for bad
    input. A video that cannot be read, or turns out truncated or corrupt, is recorded (the frames written
    so far stay, the manifest lists them, the status file says how far it got) and, with
    ``on_error="skip"`` (the default), the next video follows; at the end :class:`ExtractError` names
    every video that failed. ``on_error="stop"`` raises :class:`VideoDecodeError` at the first one.
    """
    if image_format not in IMAGE_FORMATS:
        raise ExtractError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    started = time.perf_counter()
    videos = find_videos(input)
    street = _check_street(street)
    street_dir = Path(out_root) / street
    frames_dir = street_dir / "frames"
    rows = read_manifest(street_dir / MANIFEST_NAME)
    frames_dir.mkdir(parents=True, exist_ok=True)
    results = {p.name: VideoResult(p.name) for p in videos}
    summary = ExtractSummary(street, street_dir, street_dir / MANIFEST_NAME, selection.describe(), backend)
    summary.videos = list(results.values())

    def finish() -> None:
        _write_manifest(street_dir, rows, results)
        _write_status(street_dir, street, results, summary.selection, backend)
        summary.seconds = time.perf_counter() - started

    done = _completed(street_dir, summary.selection)
    for path in videos:
        result = results[path.name]
        if path.name in done:  # a re-run after an interruption continues with the videos not yet done
            for key, value in done[path.name].items():
                setattr(result, key, value)
            log.info(
                "%s: already extracted with %s (manifest.status.json); skipped", path.name, summary.selection
            )
            continue
        try:
            reader = open_video(path, backend=backend, threads=threads)
            result.frames_reported = reader.info.reported_frames
            wanted = reader.selected_indices(selection)
            result.frames_present, result.frames_selected = reader.frame_count, len(wanted)
            if progress:
                progress(path.name, 0, len(wanted))
            for frame in reader.frames(wanted):
                name = f"{path.stem}_{frame.index:06d}.{image_format}"
                _write_image(frames_dir / name, frame.rgb, image_format)
                rows[(path.name, frame.index)] = {
                    "video": path.name,
                    "street": street,
                    "frame_index": frame.index,
                    "timestamp": f"{frame.timestamp:.6f}",
                    "file": f"frames/{name}",
                    "status": "",
                }
                result.frames_written += 1
                result.last_frame_index, result.last_timestamp = frame.index, round(frame.timestamp, 6)
                if progress:
                    progress(path.name, result.frames_written, len(wanted))
        except BaseException as err:  # also Ctrl-C, disk full: record what is on disk, then go on or re-raise
            result.status = "partial" if result.frames_written else "failed"
            result.error = str(err) or type(err).__name__
            finish()
            if not isinstance(err, VideoError):
                raise
            if result.frames_written:
                note = (
                    f"{result.frames_written} frame(s) of {path.name} up to frame {result.last_frame_index} "
                    f"were written to {frames_dir}; {summary.manifest.name} marks them 'partial'"
                )
            else:
                note = f"no frames of {path.name} were written"
            log.error("%s [%s]", err, note)
            if on_error == "stop":
                raise VideoDecodeError(
                    f"{err} [{note}; details in {street_dir / STATUS_NAME}]",
                    getattr(err, "path", path),
                    getattr(err, "frame_index", None),
                    getattr(err, "timestamp", None),
                ) from err
            continue
        result.status = "complete"
        log.info("%s: %d frames written", path.name, result.frames_written)
    finish()
    failed = [r for r in results.values() if r.status != "complete"]
    if failed:
        raise ExtractError(
            f"{len(failed)} of {len(results)} video(s) not extracted completely: "
            + "; ".join(f"{r.video} ({r.status}: {r.error})" for r in failed)
            + f" -- the other videos are done; details in {street_dir / STATUS_NAME}"
        )
    return summary
