"""Writing H.264 videos with PyAV: the overlay videos of ``segvn.predict``.

Constant frame rate (the input's), yuv420p so every player opens it, libx264 where the FFmpeg build
has it. Use :class:`VideoWriter` as a context manager so the encoder is flushed and the file
finalised even on errors.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from segvn.errors import EncoderNotFoundError
from segvn.utils.io import replace_link

log = logging.getLogger(__name__)

H264_ENCODERS: tuple[str, ...] = ("libx264", "libopenh264", "h264")
"""H.264 encoders in order of preference; ``h264`` is whatever FFmpeg's default H.264 encoder is."""


def available_h264_encoders() -> list[str]:
    """H.264 encoders of :data:`H264_ENCODERS` that this PyAV build has *and* can open (tiny test frame)."""
    usable = []
    for name in H264_ENCODERS:
        try:
            ctx = av.CodecContext.create(name, "w")
            ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 64, 64, "yuv420p", Fraction(1, 25)
            ctx.open()
        except (av.FFmpegError, ValueError):
            continue
        usable.append(ctx.codec.name if name == "h264" else name)
    return list(dict.fromkeys(usable))


def pick_h264_encoder() -> str:
    """The preferred usable H.264 encoder, or :class:`EncoderNotFoundError`."""
    found = available_h264_encoders()
    if not found:
        raise EncoderNotFoundError(
            f"this PyAV/FFmpeg build has no usable H.264 encoder (tried {', '.join(H264_ENCODERS)}); "
            "install a PyAV wheel built with libx264 or libopenh264 (`pip install av`)."
        )
    return found[0]


class VideoWriter:
    """Write RGB uint8 frames to an H.264 (yuv420p) mp4 at a constant frame rate, via PyAV.

    ``crf`` (libx264 quality, lower is better; 18 is visually lossless) is used unless ``bitrate`` (bit/s)
    is given. 4:2:0 needs even sizes: an odd width/height is padded by one replicated pixel column/row
    (logged; :attr:`encoded_size` tells), so crop to ``(width, height)`` when reading such a file back.
    Use as a context manager so the encoder is flushed and the file finalised even on errors.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | Fraction,
        width: int,
        height: int,
        *,
        crf: int | None = 20,
        bitrate: int | None = None,
        preset: str = "medium",
        encoder: str | None = None,
        threads: int = 0,
    ):
        if width < 1 or height < 1 or not fps > 0:
            raise ValueError(f"bad video size/fps: {width}x{height} @ {fps}")
        self.path = Path(path)
        self.width, self.height = width, height
        self.encoded_size = (width + width % 2, height + height % 2)
        if self.encoded_size != (width, height):
            log.warning(
                "%s: odd size %dx%d padded to %dx%d for yuv420p", path, width, height, *self.encoded_size
            )
        self.encoder = encoder or pick_h264_encoder()
        self.rate = fps if isinstance(fps, Fraction) else Fraction(str(fps)).limit_denominator(100_000)
        self.frames_written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # written under a hidden name and renamed when finalised: a killed run leaves no unplayable file
        self._partial = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial{self.path.suffix}")
        self._container = av.open(
            str(replace_link(self._partial)), mode="w", options={"movflags": "+faststart"}
        )
        options = {}
        if self.encoder == "libx264":
            options["preset"] = preset
            if bitrate is None and crf is not None:
                options["crf"] = str(crf)
            if threads:  # 0: x264's own choice (1.5 threads per core, plus look-ahead threads)
                options["threads"] = str(threads)
        self._stream = self._container.add_stream(self.encoder, rate=self.rate, options=options)
        self._stream.width, self._stream.height = self.encoded_size
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = 1 / self.rate
        if bitrate is not None:
            self._stream.bit_rate = int(bitrate)

    def write(self, rgb: np.ndarray) -> None:
        """Append one RGB uint8 (height, width, 3) frame."""
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 frame of shape {(self.height, self.width, 3)}, got {rgb.dtype} {rgb.shape}"
            )
        if self.encoded_size != (self.width, self.height):
            pad = ((0, self.encoded_size[1] - self.height), (0, self.encoded_size[0] - self.width), (0, 0))
            rgb = np.pad(rgb, pad, mode="edge")
        # OpenCV's RGB -> I420 is BT.601 limited range like swscale's default (values within 1-3 of
        # it), at a quarter of the CPU time swscale takes inside the encoder (docs/notes/code_defaults.md).
        self._encode(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420))

    def write_i420(self, yuv: np.ndarray) -> None:
        """Append one frame given as I420 uint8 ``(3 * height / 2, width)``, BT.601 limited range (as
        OpenCV's ``COLOR_RGB2YUV_I420`` gives); even sizes only (:meth:`write` pads odd ones)."""
        shape = (self.height * 3 // 2, self.width)
        if self.encoded_size != (self.width, self.height) or yuv.shape != shape or yuv.dtype != np.uint8:
            raise ValueError(
                f"expected an I420 uint8 frame of shape {shape} of an even-sized video, got {yuv.dtype} "
                f"{yuv.shape} for {self.width}x{self.height}"
            )
        self._encode(yuv)

    def _encode(self, yuv: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = self.frames_written
        self._container.mux(self._stream.encode(frame))
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finalise the file (idempotent)."""
        if self._container is None:
            return
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()
            self._container = None
            os.replace(self._partial, self.path)  # replaces a link at path too, never writes through it

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
