"""Reading videos: a streaming frame reader (decord or PyAV backend) and frame selection.

Frames come out one at a time as :class:`Frame` ``(index, timestamp, rgb)`` so a long 1080p video never
has to fit in memory. Indices and timestamps come from the container's packet timestamps (pts), never from
``index / fps`` or the frame count in the header: variable-frame-rate files get true times, and files whose
header over-reports the frame count simply end where the data ends.

Both backends share one PyAV *probe* (a demux pass that reads packet headers only, no decoding). It
lists every frame's pts, the keyframes, and the first truncated/corrupt packet; it drives frame selection
and keyframe seeking, and guards decord, which is fast but reads ahead in a background thread, so on a
damaged file its error surfaces at a random earlier frame (and some damaged files crash or hang it).
Files the probe finds damaged are therefore decoded with PyAV, which stops exactly at the damage and
raises :class:`VideoDecodeError` after yielding every intact frame; a decord failure on a file that looked
intact falls back to PyAV for the remaining frames.

Decoding errors that FFmpeg conceals (bit errors inside a frame) are not errors here: the frame comes out
with FFmpeg's concealment, as in any player. The writer is :mod:`segvn.data.video_writer`.

At ~500 lines this module is over the project's ~400: the probe, the frame selection and both backends
share one contract (pts-based indices, where damage starts, the decord-to-PyAV fallback), and split
over files that contract would have no single place to read it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

from segvn.data.yuv import I420Frame, as_rgb, is_bt601_i420
from segvn.errors import VideoDecodeError, VideoNotFoundError

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("decord", "pyav")
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv", ".flv"}
)


class Frame(NamedTuple):
    """One decoded frame: its index in the video, its presentation time in seconds and the picture.

    ``image`` is RGB uint8 ``(H, W, 3)``, or with ``open_video(..., i420=True)`` an
    :class:`~segvn.data.yuv.I420Frame` where the decoder's frame allows it; :attr:`rgb` is RGB either way.
    """

    index: int
    timestamp: float
    image: np.ndarray | I420Frame

    @property
    def rgb(self) -> np.ndarray:
        """The picture as RGB uint8 ``(H, W, 3)`` (converted from I420 when it is one)."""
        return as_rgb(self.image)


@dataclass(frozen=True)
class VideoInfo:
    """Container metadata. ``reported_frames`` is what the header claims; trust :attr:`VideoReader.frame_count`."""

    path: Path
    width: int
    height: int
    fps: float
    rate: Fraction
    reported_frames: int
    duration: float
    codec: str


@dataclass(frozen=True)
class StreamIndex:
    """Result of the probe: per-frame timing in presentation order, keyframes, and where the data breaks."""

    pts: np.ndarray
    """Packet pts of every intact frame, sorted (presentation order); ``pts[i]`` is frame ``i``."""
    timestamps: np.ndarray
    """Seconds since the stream start, float64, aligned with :attr:`pts`."""
    keyframes: np.ndarray
    """Sorted frame indices of keyframes (where decoding can start after a seek)."""
    damaged_at: float | None
    """Time (s) of the first truncated/corrupt packet, or ``None`` when the whole stream is intact."""
    damage: str | None
    """What was wrong there, for error messages."""

    def __len__(self) -> int:
        return len(self.pts)


@dataclass(frozen=True)
class FrameSelection:
    """Which frames to take: set exactly one of ``num_frames``, ``every_n`` or ``fps``.

    * ``num_frames=N``: N frames spread evenly over the whole video, at the centres of N equal bins
      (frame ``floor((k + 0.5) * n / N)``), so the first/last frames (often fades) are not forced in.
      All frames when the video has fewer than N.
    * ``every_n=K``: frames 0, K, 2K, ...
    * ``fps=F``: for each time ``t0 + k / F`` up to the last frame, the frame with the nearest timestamp
      (ties go to the earlier frame); duplicates dropped, so F above the video's rate gives every frame.
    """

    num_frames: int | None = None
    every_n: int | None = None
    fps: float | None = None

    def __post_init__(self) -> None:
        chosen = {k: v for k, v in vars(self).items() if v is not None}
        if len(chosen) != 1:
            raise ValueError(
                f"choose exactly one frame selection of num_frames, every_n, fps (got {chosen or 'none'})"
            )
        for name in ("num_frames", "every_n"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")

    def describe(self) -> str:
        return next(f"{k}={v}" for k, v in vars(self).items() if v is not None)

    def indices(self, timestamps: Sequence[float] | np.ndarray) -> list[int]:
        """Frame indices (sorted, unique) chosen from a video whose frames have these timestamps."""
        ts = np.asarray(timestamps, dtype=np.float64)
        n = len(ts)
        if n == 0:
            return []
        if self.num_frames is not None:
            if self.num_frames >= n:
                return list(range(n))
            k = np.arange(self.num_frames)
            return np.floor((k + 0.5) * n / self.num_frames).astype(int).tolist()
        if self.every_n is not None:
            return list(range(0, n, self.every_n))
        steps = int(np.floor((ts[-1] - ts[0]) * self.fps + 1e-9))
        grid = ts[0] + np.arange(steps + 1) / self.fps
        right = np.searchsorted(ts, grid).clip(1, n - 1)
        left = right - 1
        take_left = (grid - ts[left]) <= (ts[right] - grid) + 1e-9
        nearest = np.where(take_left, left, right)
        return sorted(set(nearest.tolist()))


def _check_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise VideoNotFoundError(f"video not found: {path}")
    if not path.is_file():
        raise VideoDecodeError(f"not a video file: {path} (expected a file, found a folder)", path)
    return path


def _open_container(path: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as err:
        raise VideoDecodeError(
            f"cannot read {path}: not a video FFmpeg can open ({err}). The file is corrupt or not a video; "
            "re-download or re-export it.",
            path,
        ) from err
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{path} has no video stream", path)
    return container


def _start_pts(stream: av.video.stream.VideoStream) -> int:
    return stream.start_time if stream.start_time is not None else 0


def _seconds(pts: np.ndarray | int, start: int, time_base: Fraction) -> np.ndarray:
    """Exact pts -> seconds (integer arithmetic first, one float division)."""
    return (np.asarray(pts, dtype=np.int64) - start) * time_base.numerator / time_base.denominator


def probe_video(path: str | os.PathLike) -> tuple[VideoInfo, StreamIndex]:
    """Read the header and demux every packet (no decoding) with PyAV: metadata plus a :class:`StreamIndex`.

    Raises :class:`VideoNotFoundError` or :class:`VideoDecodeError` for files that cannot be read at all.
    Cost: one pass over the file's bytes, a few bytes of memory per frame.
    """
    path = _check_path(path)
    with _open_container(path) as container:
        stream = container.streams.video[0]
        info = _video_info(path, container, stream)
        start, time_base = _start_pts(stream), stream.time_base
        pts: list[int] = []
        key_pts: list[int] = []
        damaged_at, damage = None, None
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                stamp = packet.pts if packet.pts is not None else packet.dts
                if packet.is_corrupt:
                    damaged_at = float(_seconds(stamp if stamp is not None else start, start, time_base))
                    damage = "truncated or corrupt packet"
                    break
                if stamp is None:  # no timing at all (rare raw streams): keep the order
                    stamp = pts[-1] + 1 if pts else start
                pts.append(stamp)
                if packet.is_keyframe:
                    key_pts.append(stamp)
        except av.FFmpegError as err:
            damaged_at = float(_seconds(pts[-1] if pts else start, start, time_base))
            damage = f"demuxing failed ({err})"
    sorted_pts = np.unique(np.asarray(pts, dtype=np.int64))
    keyframes = np.searchsorted(sorted_pts, np.asarray(key_pts, dtype=np.int64))
    index = StreamIndex(
        pts=sorted_pts,
        timestamps=_seconds(sorted_pts, start, time_base).astype(np.float64),
        keyframes=np.unique(keyframes),
        damaged_at=damaged_at,
        damage=damage,
    )
    return info, index


def _video_info(path: Path, container: av.container.InputContainer, stream) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(0)
    if stream.duration is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    reported = stream.frames or round(duration * float(rate))
    ctx = stream.codec_context
    return VideoInfo(
        path, ctx.width, ctx.height, float(rate), Fraction(rate), int(reported), duration, ctx.name
    )


class VideoReader:
    """Streaming reader; use :func:`open_video`. Iterate for every frame, or call :meth:`frames`/:meth:`select`.

    Every iteration starts a fresh decoder pass, so a reader can be iterated more than once.
    """

    backend = "base"

    def __init__(self, path: str | os.PathLike, threads: int = 0, i420: bool = False):
        self.path = _check_path(path)
        self.threads = threads
        self.i420 = i420  # PyAV only: hand on BT.601 4:2:0 frames as I420Frame (segvn.data.yuv)
        with _open_container(self.path) as container:
            self.info = _video_info(self.path, container, container.streams.video[0])

    @cached_property
    def index(self) -> StreamIndex:
        """The probe's :class:`StreamIndex` (computed on first use)."""
        index = probe_video(self.path)[1]
        if index.damaged_at is None and len(index) < self.info.reported_frames:
            self._warn_short(len(index))
        return index

    def _warn_short(self, found: int) -> None:
        log.warning(
            "%s: header reports %d frames but the stream ends after %d; the file may be cut short "
            "(frames present are fine)",
            self.path,
            self.info.reported_frames,
            found,
        )

    @property
    def frame_count(self) -> int:
        """Frames actually present (demuxed), unlike the header's ``info.reported_frames``."""
        return len(self.index)

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def frames(self, indices: Iterable[int] | None = None) -> Iterator[Frame]:
        """Decode all frames, or only ``indices`` (any order/duplicates; yielded once each, ascending)."""
        if indices is None:
            return self._all_frames()
        wanted = sorted({int(i) for i in indices})
        if wanted and (wanted[0] < 0 or wanted[-1] >= self.frame_count):
            raise IndexError(
                f"frame indices must lie in [0, {self.frame_count}) for {self.path}, got {wanted}"
            )
        return self._checked(self._some_frames(wanted))

    def _checked(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        """Yield ``frames``, then fail if the probe found damage: a selection is only computed over the intact
        part, so a damaged file must not pass for a shorter, healthy one."""
        yield from frames
        if self.index.damaged_at is not None:
            raise self._error(len(self.index), self.index.damaged_at, self.index.damage or "damaged data")

    def select(self, selection: FrameSelection) -> Iterator[Frame]:
        """Decode the frames a :class:`FrameSelection` picks (by the probe's true count and timestamps)."""
        return self.frames(self.selected_indices(selection))

    def selected_indices(self, selection: FrameSelection) -> list[int]:
        return selection.indices(self.index.timestamps)

    def _all_frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def _some_frames(self, wanted: list[int]) -> Iterator[Frame]:
        raise NotImplementedError

    def _error(self, frame_index: int, timestamp: float | None, cause: str) -> VideoDecodeError:
        at = f"frame {frame_index}" + (f" (t={timestamp:.3f} s)" if timestamp is not None else "")
        return VideoDecodeError(
            f"decoding {self.path} failed at {at}: {cause}. The file is truncated or corrupt; frames before "
            f"{frame_index} are valid. Copy or export the video again (complete) and re-run; to keep "
            "working with what is there, use the frames before it.",
            self.path,
            frame_index,
            timestamp,
        )

    def close(self) -> None:
        """Release backend resources (readers open the file per pass, so this is mostly a no-op)."""

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        i = self.info
        return f"{type(self).__name__}({str(self.path)!r}, {i.width}x{i.height}, {i.fps:.3f} fps)"


class PyAVReader(VideoReader):
    """PyAV backend: frame-threaded FFmpeg decoding; seeks to keyframes to skip unwanted GOPs."""

    backend = "pyav"

    def _open(self):
        container = _open_container(self.path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = self.threads
        return container, stream

    def _decode(self, container, stream, position: int) -> Iterator[tuple[int, float, av.VideoFrame]]:
        """Decode from the container's current position; ``position`` is the index of the next frame.

        With a probe, frame indices come from the pts -> index table (so they survive seeks); without one
        (a plain full pass) frames are counted.
        """
        probed = "index" in vars(self)  # cached_property: only use the probe if it was already needed
        index_of = {p: i for i, p in enumerate(self.index.pts.tolist())} if probed else None
        start, tb = _start_pts(stream), stream.time_base
        next_index = position

        def emit(frames):
            nonlocal next_index
            for frame in frames:
                i = (
                    index_of.get(frame.pts, next_index)
                    if index_of is not None and frame.pts is not None
                    else next_index
                )
                ts = (
                    float(_seconds(frame.pts, start, tb))
                    if frame.pts is not None
                    else i / (self.info.fps or 1)
                )
                next_index = i + 1
                yield i, ts, frame

        packet = None
        try:
            for packet in container.demux(stream):
                if packet.is_corrupt:
                    cause = "truncated or corrupt packet"
                    break
                if packet.size and packet.is_discard:
                    continue
                yield from emit(packet.decode())
            else:
                return
        except av.FFmpegError as err:
            cause = f"FFmpeg error: {err}"
        yield from emit(self._drain(stream))
        stamp = None if packet is None else packet.pts if packet.pts is not None else packet.dts
        ts = float(_seconds(stamp, start, tb)) if stamp is not None else None
        raise self._error(next_index, ts, cause)

    def _image(self, frame: av.VideoFrame) -> np.ndarray | I420Frame:
        """The decoded frame as RGB, or as it is (I420, no conversion) where ``i420`` and it is BT.601 4:2:0."""
        if self.i420 and is_bt601_i420(
            frame.format.name, frame.colorspace, frame.color_range, frame.width, frame.height
        ):
            return I420Frame(frame.to_ndarray(format="yuv420p"))
        return frame.to_ndarray(format="rgb24")

    @staticmethod
    def _drain(stream) -> list[av.VideoFrame]:
        """Flush frames still inside the (frame-threaded) decoder; they are intact."""
        try:
            return list(stream.codec_context.decode(None))
        except av.FFmpegError:
            return []

    def _all_frames(self) -> Iterator[Frame]:
        container, stream = self._open()
        with container:
            count = 0
            for i, ts, frame in self._decode(container, stream, 0):
                count += 1
                yield Frame(i, ts, self._image(frame))
        if count < self.info.reported_frames and "index" not in vars(self):
            self._warn_short(count)

    def _some_frames(self, wanted: list[int]) -> Iterator[Frame]:
        keyframes, pts = self.index.keyframes, self.index.pts
        container, stream = self._open()
        with container:
            frames, position = None, -1  # position: index of the last decoded frame
            for target in wanted:
                k = np.searchsorted(keyframes, target, side="right") - 1
                keyframe = int(keyframes[k]) if k >= 0 else 0
                if frames is None or keyframe > position + 1 or target <= position:
                    container.seek(int(pts[keyframe]), stream=stream, backward=True)
                    frames = self._decode(container, stream, keyframe)
                for i, ts, frame in frames:
                    position = i
                    if i == target:
                        yield Frame(i, ts, self._image(frame))
                        break
                    if i > target:
                        break
                if position != target:  # the decoder skipped or never reached it (inconsistent stream)
                    raise self._error(
                        target, float(self.index.timestamps[target]), "frame could not be decoded"
                    )


class DecordReader(VideoReader):
    """decord backend: fast decoding, guarded by the PyAV probe and backed by PyAV.

    decord decodes in a background thread that reads ahead, so on a damaged file its error surfaces at an
    arbitrary earlier frame (valid frames would be lost, differently on each run). Hence: a file the probe
    finds damaged is decoded with PyAV, which stops exactly at the damage; and if decord fails on a file the
    probe found intact, the remaining frames are decoded with PyAV (logged).
    """

    backend = "decord"

    def frames(self, indices: Iterable[int] | None = None) -> Iterator[Frame]:
        if self.index.damaged_at is not None:
            log.warning(
                "%s is damaged (%s); decoding it with PyAV instead of decord", self.path, self.index.damage
            )
            return self._pyav().frames(range(len(self.index)) if indices is None else indices)
        return super().frames(indices)

    def _pyav(self) -> PyAVReader:
        reader = PyAVReader(self.path, self.threads, self.i420)
        reader.__dict__["index"] = self.index  # share the probe (cached_property storage)
        return reader

    def _open(self):
        import decord

        try:
            return decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=self.threads)
        except Exception as err:  # DECORDError/RuntimeError, C++ log lines in the message
            raise VideoDecodeError(
                f"decord cannot open {self.path}: {str(err).splitlines()[0]}. Try video.backend=pyav.",
                self.path,
            ) from err

    def _all_frames(self) -> Iterator[Frame]:
        return self._decode_with(lambda reader, i: reader.next().asnumpy(), None)

    def _some_frames(self, wanted: list[int]) -> Iterator[Frame]:
        return self._decode_with(lambda reader, i: reader[i].asnumpy(), wanted)

    def _decode_with(self, grab, wanted: list[int] | None) -> Iterator[Frame]:
        reader = self._open()
        targets = list(range(len(self.index))) if wanted is None else wanted
        usable = min(len(reader), len(self.index))
        for pos, i in enumerate(targets):
            try:
                if i >= usable:
                    raise IndexError(f"decord sees only {usable} frames")
                rgb = grab(reader, i)
            except Exception as err:
                log.warning(
                    "decord failed at frame %d of %s (%s); continuing with PyAV",
                    i,
                    self.path,
                    str(err).splitlines()[0],
                )
                del reader
                yield from self._pyav()._some_frames(targets[pos:])
                return
            yield Frame(i, float(self.index.timestamps[i]), rgb)


def open_video(
    path: str | os.PathLike, backend: str = "decord", threads: int = 0, i420: bool = False
) -> VideoReader:
    """Open a video for streaming. ``backend`` is ``"decord"`` or ``"pyav"``; ``threads=0`` lets FFmpeg choose.

    ``i420=True``: frames keep the decoder's I420 where it is BT.601 4:2:0 (:mod:`segvn.data.yuv`; PyAV
    only, decord always gives RGB), for consumers that take :class:`~segvn.data.yuv.I420Frame`.

    Raises :class:`VideoNotFoundError`, or :class:`VideoDecodeError` when the file is not a readable video.
    """
    readers = {"decord": DecordReader, "pyav": PyAVReader}
    if backend not in readers:
        raise ValueError(f"unknown video backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return readers[backend](path, threads=threads, i420=i420)
