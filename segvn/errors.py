"""The one root of every error meant for a user of segvn.

A :class:`SegvnError` is bad input, not a bug: a missing file, a corrupt checkpoint, a setting that
cannot work. Its message names the file or setting and says how to fix it, so the command wrappers
(:func:`segvn.utils.run.run_task`) log that one line and exit with status 1, with no traceback.
Anything else that escapes is a bug in segvn and keeps its traceback.

Each domain subclasses the root, and also the built-in exception a Python caller would expect
(``ValueError`` for bad values, ``FileNotFoundError`` for missing files), so library code that
catches those keeps working.
"""

from __future__ import annotations

from pathlib import Path


class SegvnError(Exception):
    """Root of every user-facing segvn error: the message is the whole report."""


class ConfigError(SegvnError, ValueError):
    """A setting that cannot work (wrong type, out of range, contradicting another)."""


class DataError(SegvnError, ValueError):
    """Bad data: missing roots, unreadable files, size mismatches, empty splits, unknown streets."""


class InputNotFoundError(SegvnError, FileNotFoundError):
    """A file or folder named on the command line does not exist."""


class ImageSourceError(DataError):
    """An image the server may not read: outside the allowed roots, on a host not allowed, another scheme."""


class ImageTooLargeError(DataError):
    """An image over the server's pixel or byte limit."""


class VideoError(SegvnError, RuntimeError):
    """A video that cannot be opened, decoded or written."""


class CheckpointError(SegvnError, ValueError):
    """A checkpoint that is missing, truncated, unsafe, foreign or does not fit."""


class WeightsError(SegvnError, ValueError):
    """A pretrained-weights file that cannot be read or does not fit the network."""


class ExportError(SegvnError, RuntimeError):
    """An exported model that disagrees with PyTorch, or a file that is not a segvn export."""


class PartialResultError(SegvnError, RuntimeError):
    """Some inputs failed part-way; what was done before is kept and the message says where."""


class TrainingDivergedError(SegvnError, FloatingPointError):
    """The loss or a gradient became NaN or infinite."""


class NonFiniteWeightsError(SegvnError, RuntimeError):
    """A model whose weights hold NaN or infinity: training diverged."""


class ExtractError(VideoError):
    """Bad extraction input (empty folder, bad street name, clashing video names, foreign manifest)."""


class VideoNotFoundError(VideoError, FileNotFoundError):
    """The video file does not exist."""


class VideoDecodeError(VideoError):
    """The file is not a readable video, or decoding failed part-way (truncated or corrupt data).

    ``frame_index``/``timestamp`` say where decoding stopped; frames yielded before it are valid.
    """

    def __init__(
        self, message: str, path: Path, frame_index: int | None = None, timestamp: float | None = None
    ):
        super().__init__(message)
        self.path = path
        self.frame_index = frame_index
        self.timestamp = timestamp


class EncoderNotFoundError(VideoError):
    """No usable H.264 encoder in the installed PyAV/FFmpeg build."""
