"""What ``segvn.predict`` writes besides the pictures: per-input results, ``class_shares.csv``, the summary.

One :class:`InputResult` per video (or group of images) becomes one entry of ``summary.json``;
:class:`SharesCSV` holds one row per predicted frame (``source, frame, timestamp, <share per class>``),
flushed after every batch so an interrupted run keeps its rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segvn.utils.io import json_safe, replace_link


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
        # what a re-run into the same folder needs to carry this input over without predicting it again
        out["share_sums"] = None if self.share_sums is None else [float(v) for v in self.share_sums]
        if self.tc_state is not None:
            out["tc_intersection"], out["tc_union"] = (v.tolist() for v in self.tc_state)
        return json_safe(out, digits=None)

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> InputResult:
        """The result an earlier run wrote into ``summary.json`` (see :meth:`to_dict`)."""
        names = {f for f in cls.__dataclass_fields__ if f not in ("share_sums", "tc_state")}
        result = cls(**{k: v for k, v in entry.items() if k in names})
        if entry.get("share_sums") is not None:
            result.share_sums = np.asarray(entry["share_sums"], dtype=np.float64)
        if entry.get("tc_intersection") is not None:
            result.tc_state = (np.asarray(entry["tc_intersection"]), np.asarray(entry["tc_union"]))
        return result


class SharesCSV:
    """``class_shares.csv``: one row per predicted frame, flushed after every batch (kept on errors).

    Rows wait in memory until :meth:`flush` writes them in one call, so a killed run leaves whole rows.
    """

    def __init__(
        self, path: str | Path, class_names: Sequence[str], keep_sources: set[str] = frozenset()
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.class_names = list(class_names)
        header = ["source", "frame", "timestamp", *self.class_names]
        kept: list[list[str]] = []
        if keep_sources and self.path.is_file():  # a re-run keeps the rows of the inputs it carries over
            with self.path.open(newline="") as fh:
                rows = list(csv.reader(fh))
            if rows and rows[0] == header:
                kept = [r for r in rows[1:] if r and r[0] in keep_sources]
        self._fh = open(replace_link(self.path), "w", newline="")  # noqa: SIM115 - closed in close()
        self._pending = io.StringIO()
        self._writer = csv.writer(self._pending)
        self._writer.writerow(header)
        self._writer.writerows(kept)
        self.flush()
        self.rows = len(kept)

    def write(self, source: str, index: int, timestamp: float | None, shares: np.ndarray) -> None:
        ts = "" if timestamp is None else f"{timestamp:.6f}"
        self._writer.writerow([source, index, ts, *(f"{s:.6f}" for s in shares)])
        self.rows += 1

    def flush(self) -> None:
        if self._fh.closed:
            return
        self._fh.write(self._pending.getvalue())
        self._fh.flush()
        self._pending.seek(0)
        self._pending.truncate()

    def close(self) -> None:
        if not self._fh.closed:
            self.flush()
            self._fh.close()

    def __enter__(self) -> SharesCSV:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
    return json_safe(summary)


def summary_line(summary: dict[str, Any]) -> str:
    """The one-line report ``segvn.predict`` logs."""

    def num(v: float | None, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    return (
        f"{summary['status']}: {summary['frames']} frames in {num(summary['seconds'], '.1f')} s, "
        f"{num(summary['fps'], '.2f')} fps end-to-end, {num(summary['model_fps'], '.2f')} fps model-only, "
        f"TC {num(summary['tc'], '.4f')} -> {summary['output_dir']}"
    )
