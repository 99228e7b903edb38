"""The remembered outcome of ``runtime=auto``'s race, so a command or ``load_model`` races once per setup.

The race (:func:`~segvn.inference.runtime_choice.faster_runtime`) times ONNX Runtime against OpenVINO
(and torch bf16) on one frame, a few seconds at every start. Its winner depends only on the network,
the frame size, the precision asked for, the CPU and the software that runs it, so it is kept in one
small JSON file, ``runtime_race.json``, under the user's cache folder (``$SEGVN_CACHE_DIR``, else the
platform's, ``~/.cache/segvn`` on Linux), one entry per :func:`race_key`: the checkpoint (its resolved
path, size and modification time), the race's frame size and settings, the CPU model and thread count,
and the versions of torch, ONNX Runtime, OpenVINO and segvn. A changed checkpoint, CPU or version makes
a new key, so that start races again. A file that cannot be read is ignored with a warning and written
anew; a cache folder that cannot be written only costs the next start a race.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from segvn.utils.io import write_json

log = logging.getLogger(__name__)

CACHE_ENV = "SEGVN_CACHE_DIR"
"""Environment variable naming the folder of segvn's per-user cache (default: the platform's cache folder)."""
RACE_FILE = "runtime_race.json"
MAX_ENTRIES = 64
"""Entries kept (the most recent): one per checkpoint and setup, so the file stays small."""
VERSIONED = ("torch", "onnxruntime", "openvino", "segvn")


def cache_dir() -> Path:
    """segvn's per-user cache folder: ``$SEGVN_CACHE_DIR``, else the platform's (``~/.cache/segvn``)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("segvn", appauthor=False))


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what :mod:`platform` says)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def race_key(checkpoint: str | Path, size: tuple[int, int], **settings: Any) -> dict[str, Any]:
    """What the race's outcome depends on: the checkpoint file, the frame ``size``, the race's
    ``settings`` (precision, channels_last, whether bf16 runs), this CPU and the software versions."""
    path = Path(checkpoint).expanduser().resolve()
    stat = path.stat()
    return {
        "checkpoint": str(path),
        "checkpoint_bytes": stat.st_size,
        "checkpoint_mtime_ns": stat.st_mtime_ns,
        "size": [int(s) for s in size],
        **{name: settings[name] for name in sorted(settings)},
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "versions": {package: _version(package) for package in VERSIONED},
    }


def _stamp(entry: dict[str, Any]) -> float:
    """When ``entry`` was raced (seconds since the epoch; 0 when it does not say)."""
    stamp = entry.get("stamp")
    return float(stamp) if isinstance(stamp, int | float) else 0.0


class RaceCache:
    """``runtime_race.json`` in ``directory`` (default :func:`cache_dir`): race winners by key."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.path = Path(directory if directory is not None else cache_dir()) / RACE_FILE

    @staticmethod
    def _id(key: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]

    def _entries(self, warn: bool = True) -> dict[str, Any]:
        """The file's entries; empty when there is none, or (with a warning when ``warn``) an unreadable one."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as err:
            if warn:
                log.warning("%s: cannot read the runtime race cache (%s); racing again", self.path, err)
            return {}
        try:
            data = json.loads(text)
            entries = data["entries"]
            if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
                raise ValueError("entries is not an object of objects")
        except (ValueError, KeyError, TypeError) as err:
            if warn:
                log.warning(
                    "%s: corrupt runtime race cache ignored (%s: %s); racing again and writing it anew",
                    self.path, type(err).__name__, err,
                )  # fmt: skip
            return {}
        return entries

    def lookup(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """The entry of ``key`` (``winner``, ``times_ms``, ``size``, ``raced_at``), or ``None``."""
        entry = self._entries().get(self._id(key))
        if entry is None or entry.get("key") != key or not isinstance(entry.get("winner"), str):
            return None
        return entry

    def store(self, key: dict[str, Any], winner: str, times_ms: dict[str, float]) -> None:
        """Remember ``winner`` and the ``times_ms`` it won with for ``key`` (the oldest entries beyond
        :data:`MAX_ENTRIES` are dropped). A folder that cannot be written is a warning, not an error."""
        entries = self._entries(warn=False)
        entries[self._id(key)] = {
            "key": key,
            "winner": winner,
            "times_ms": {name: round(float(ms), 3) for name, ms in times_ms.items()},
            "raced_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "stamp": time.time(),
        }
        newest = sorted(entries.items(), key=lambda item: -_stamp(item[1]))[:MAX_ENTRIES]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, {"entries": dict(newest)})
        except OSError as err:
            log.warning(
                "%s: cannot write the runtime race cache (%s); the next start races again", self.path, err
            )


__all__ = ["CACHE_ENV", "RACE_FILE", "RaceCache", "cache_dir", "cpu_model", "race_key"]
