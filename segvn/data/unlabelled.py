"""The unlabelled set (``data.unlabelled``): the frames nobody labelled, which self-training learns from.

Where its frames come from (any mix; the data guide in ``docs/guide`` shows the settings):

- ``streets``: frames of the listed streets that training does not use with a label -- the frames without
  a label of a training street, every frame of any other street (a prediction street of the thesis
  layout, whose frames are all unlabelled);
- ``predict: true``: every frame of the ``data.source.predict`` streets;
- ``folders``: any folders of frames (``pattern`` filters the file names of folders and streets);
- ``videos``: video files (or folders of videos), sampled per video as ``segvn.extract`` samples
  (``num_frames``, ``every_n`` or ``fps``; none set: one frame a second, CamVid's rate). The frames are
  decoded once with PyAV and written as PNGs in ``segvn.extract``'s layout under
  ``<data.cache_dir>/unlabelled/`` (a killed extraction continues), so the teacher and the student read
  them as files.

``max_frames`` keeps at most that many frames of the whole set, spread evenly over the sorted names.
Nothing of it ever reaches validation or test metrics: the set is no split of the data module's loaders,
and a frame that is also a validation/test frame (same file or same pixels) is refused unless
``transductive: true`` asks for it (learning from the evaluated street on purpose).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segvn.data.check import _pixel_hash, _quick_hash, check_intact, validate_options
from segvn.data.extract import extract_frames, find_videos
from segvn.data.findings import CheckReport, _Collector
from segvn.data.io import list_images
from segvn.data.pseudo import frame_hash
from segvn.data.sources import StreetSource
from segvn.data.video import FrameSelection, open_video, probe_video
from segvn.errors import ConfigError, DataError, SegvnError
from segvn.utils.schema import switch

log = logging.getLogger(__name__)

UNLABELLED_DEFAULTS: dict[str, Any] = {
    "streets": [],
    "predict": False,
    "folders": [],
    "pattern": "*",
    "videos": [],
    "num_frames": None,
    "every_n": None,
    "fps": None,
    "max_frames": None,
    "transductive": False,
}
VIDEO_FOLDER = "unlabelled"
"""Under ``data.cache_dir``: the frames drawn from ``data.unlabelled.videos``."""


@dataclass(frozen=True)
class UnlabelledFrame:
    """One frame of the unlabelled set: its image file and where it came from (``street X``, ``folder D``,
    ``video V``)."""

    image: Path
    source: str

    @property
    def name(self) -> str:
        return self.image.stem


def unlabelled_settings(settings: dict | None) -> dict[str, Any]:
    """``data.unlabelled`` with its defaults, checked; a :class:`ConfigError` names the setting."""
    out = {**UNLABELLED_DEFAULTS, **dict(settings or {})}
    unknown = sorted(set(out) - set(UNLABELLED_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"data.unlabelled: unknown setting(s) {unknown}; use {', '.join(UNLABELLED_DEFAULTS)}"
        )
    for key in ("streets", "folders", "videos"):
        value = out[key] or []
        if isinstance(value, str | bytes) or not all(isinstance(v, str) for v in value):
            raise ConfigError(
                f"data.unlabelled.{key}={value!r}: give a list of names, e.g. data.unlabelled.{key}=[A,B] "
                "(quote names such as '0016E5' that YAML would read as numbers)"
            )
        out[key] = [str(v) for v in value]
    for key in ("predict", "transductive"):
        out[key] = switch(out[key], f"data.unlabelled.{key}")
    max_frames = out["max_frames"]
    if max_frames is not None and (
        isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1
    ):
        raise ConfigError(f"data.unlabelled.max_frames={max_frames!r}: a whole number >= 1, or null for all")
    selection(out)
    return out


def selection(settings: dict[str, Any]) -> FrameSelection:
    """The frames taken from each video: ``num_frames``/``every_n``/``fps`` as ``segvn.extract``; none: fps=1."""
    chosen = {k: settings.get(k) for k in ("num_frames", "every_n", "fps") if settings.get(k) is not None}
    try:
        return FrameSelection(**(chosen or {"fps": 1.0}))
    except ValueError as err:
        raise ConfigError(f"data.unlabelled: {err}") from err


def spread(items: list, max_frames: int | None) -> list:
    """At most ``max_frames`` of ``items``, spread evenly (first and last kept), in their order."""
    if max_frames is None or not 0 < max_frames < len(items):
        return items
    picks = np.linspace(0, len(items) - 1, max_frames).round().astype(int)
    return [items[i] for i in sorted(set(picks.tolist()))]


def unique_names(frames: Sequence[UnlabelledFrame]) -> list[UnlabelledFrame]:
    """Each file once (a folder listed twice, or a street's folder also given as a folder); two different
    files of the same name are a :class:`DataError` (pseudo-labels are keyed by name)."""
    seen: dict[Path, UnlabelledFrame] = {}
    for f in frames:
        seen.setdefault(f.image.resolve(), f)
    by_name: dict[str, list[UnlabelledFrame]] = {}
    for f in seen.values():
        by_name.setdefault(f.name, []).append(f)
    twice = sorted(n for n, fs in by_name.items() if len(fs) > 1)
    if twice:
        where = ", ".join(str(f.image) for f in by_name[twice[0]])
        raise DataError(
            f"data.unlabelled: frame name(s) {', '.join(twice[:3])} appear in more than one source ({where}); "
            "pseudo-labels are named after frames: rename the copies or list one source"
        )
    return sorted(seen.values(), key=lambda f: f.name)


class UnlabelledSet:
    """The frames of ``data.unlabelled`` (see the module docstring) for one :class:`StreetSource`.

    ``video_dir`` is where frames drawn from videos are written (``<data.cache_dir>/unlabelled``).
    """

    def __init__(self, source: StreetSource, settings: dict | None, video_dir: str | Path | None) -> None:
        self.source = source
        self.settings = unlabelled_settings(settings)
        self.video_dir = Path(video_dir).expanduser() if video_dir is not None else None

    @property
    def configured(self) -> bool:
        s = self.settings
        return bool(s["streets"] or s["predict"] or s["folders"] or s["videos"])

    @property
    def transductive(self) -> bool:
        return self.settings["transductive"]

    def street_names(self) -> list[str]:
        names = list(self.settings["streets"])
        if self.settings["predict"]:
            names += self.source.streets["predict"]
        return list(dict.fromkeys(names))

    def file_sources(self) -> dict[str, list[UnlabelledFrame]]:
        """The frames of streets and folders per source (``street X``/``folder D``), before ``max_frames``."""
        pattern = str(self.settings["pattern"])
        out: dict[str, list[UnlabelledFrame]] = {}
        streets = self.street_names()
        if streets:
            frames = self.source.frames
            used = {s.image for s in self.source.samples("train")}  # labelled training frames: not unlabelled
            for street in streets:
                if street not in frames:
                    known = ", ".join(sorted(frames)) or "none"
                    raise DataError(
                        f"data.unlabelled.streets: no street {street!r} under {self.source.root} (found: {known})"
                    )
                label = f"street {street}"
                out[label] = [
                    UnlabelledFrame(s.image, label)
                    for s in frames[street]
                    if s.image not in used and s.image.match(pattern)
                ]
        for folder in self.settings["folders"]:
            path = Path(folder).expanduser()
            if not path.is_dir():
                raise DataError(f"data.unlabelled.folders: {folder} is not a folder of frames")
            label = f"folder {path}"
            out[label] = [UnlabelledFrame(p, label) for p in list_images(path) if p.match(pattern)]
        return out

    def videos(self) -> list[Path]:
        """The video files of ``videos`` (a folder gives its videos, as ``segvn.extract``)."""
        found: list[Path] = []
        for entry in self.settings["videos"]:
            found += find_videos(Path(entry).expanduser())
        return list(dict.fromkeys(found))

    def video_frames(self, video: Path) -> list[UnlabelledFrame]:
        """The selected frames of one video, decoded once into ``video_dir`` (reused when already there)."""
        if self.video_dir is None:
            raise DataError(
                "data.unlabelled.videos needs data.cache_dir: the folder its frames are written to; set it"
            )
        chosen = selection(self.settings)
        key = hashlib.blake2b(str(video.resolve()).encode(), digest_size=4).hexdigest()
        street = f"{video.stem}-{key}"  # two videos of one name in different folders do not share frames
        _, index = probe_video(video)
        wanted = chosen.indices(index.timestamps)
        frames_dir = self.video_dir / street / "frames"
        paths = [frames_dir / f"{video.stem}_{i:06d}.png" for i in wanted]
        if not all(p.is_file() for p in paths):
            log.info("unlabelled set: decoding %d frame(s) of %s (%s)", len(paths), video, chosen.describe())
            extract_frames(video, street, self.video_dir, chosen, backend="pyav", on_error="stop")
        label = f"video {video.name}"
        return [UnlabelledFrame(p, label) for p in paths if p.is_file()]

    def frames(self) -> list[UnlabelledFrame]:
        """Every frame of the set, each once, sorted by name, at most ``max_frames`` (spread evenly)."""
        found = [f for fs in self.file_sources().values() for f in fs]
        for video in self.videos():
            found += self.video_frames(video)
        return spread(unique_names(found), self.settings["max_frames"])

    def describe(self) -> str:
        parts = [
            f"{k}={v}" for k, v in self.settings.items() if v not in ([], None, False) and k != "pattern"
        ]
        return ", ".join(parts) or "nothing"


def evaluated_frames(dm: Any) -> list[Path]:
    """The validation and test frames of a data module (what no unlabelled frame may be, by default)."""
    return [s.image for split in ("val", "test") for s in dm.dataset(split).samples]


def _pixels_key(path: Path, level: str) -> str:
    return frame_hash(path) if level == "full" else _quick_hash(path)


def check_unlabelled(
    dm: Any, report: CheckReport, level: str = "full", warn_only: Sequence[str] = ()
) -> None:
    """Add the unlabelled set of a data module to ``report`` (``segvn.check``), writing nothing.

    Counts per source (``split`` ``unlabelled`` in the counts table; videos: the frames their sampling
    takes), ``unreadable`` frames and videos (at ``cheap`` a truncation check and the probe, at ``full``
    every frame decoded), and ``unlabelled_leak``: an unlabelled frame that is also a validation/test frame
    by content hash (``full``: the decoded pixels, video frames too; ``cheap``: the file's size and first
    64 KiB) -- an error, a warning with ``transductive``. Nothing when ``data.unlabelled`` is empty.
    """
    unlabelled: UnlabelledSet = dm.unlabelled
    if level == "off" or not unlabelled.configured:
        return
    out = _Collector(validate_options(level, warn_only))
    where = {"split": "unlabelled"}
    counts: dict[str, dict[str, int]] = {}
    hashes: dict[str, list[str]] = {}  # content key -> the unlabelled frames (files, or video#frame)
    try:
        sources = unlabelled.file_sources()
    except SegvnError as err:
        out.add("missing_root", str(err), **where)
        sources = {}
    for label, frames in sources.items():
        counts[label] = {"frames": len(frames), "labels": 0}
        for f in frames:
            try:
                if level != "full":
                    check_intact(f.image)
                key = _pixels_key(f.image, level)
            except (DataError, OSError) as err:
                out.add("unreadable", str(err), path=str(f.image), street=label, **where)
                continue
            hashes.setdefault(key, []).append(str(f.image))
    chosen = selection(unlabelled.settings)
    try:
        videos = unlabelled.videos()
    except SegvnError as err:
        out.add("unreadable", f"data.unlabelled.videos: {err}", **where)
        videos = []
    for video in videos:
        label = f"video {video.name}"
        try:
            _, index = probe_video(video)
            wanted = chosen.indices(index.timestamps)
            counts[label] = {"frames": len(wanted), "labels": 0}
            if index.damaged_at is not None:
                raise DataError(f"{video}: damaged at {index.damaged_at:.2f} s ({index.damage})")
            if level == "full":
                with open_video(video, backend="pyav") as reader:
                    for frame in reader.frames(wanted):
                        key = _pixel_hash(frame.rgb)
                        hashes.setdefault(key, []).append(f"{video}#{frame.index}")
        except SegvnError as err:
            out.add(
                "unreadable", f"{err}; fix or drop it from data.unlabelled.videos", path=str(video), **where
            )
    total = sum(c["frames"] for c in counts.values())
    cap = unlabelled.settings["max_frames"]
    if cap is not None and cap < total:
        counts[f"all (max_frames={cap})"] = {"frames": cap, "labels": 0}
    if not total:
        out.add(
            "empty_split", f"the unlabelled set has no frames ({unlabelled.describe()})", "warning", **where
        )
    try:
        evaluated = evaluated_frames(dm)
    except SegvnError:
        evaluated = []  # the labelled splits' own findings say why
    severity = "warning" if unlabelled.transductive else None
    allowed = " (allowed: data.unlabelled.transductive=true)" if unlabelled.transductive else ""
    for path in evaluated:
        try:
            key = _pixels_key(path, level)
        except (DataError, OSError):
            continue  # reported with its split
        for copy in hashes.get(key, []):
            what = "a validation/test frame" if copy == str(path) else f"the validation/test frame {path}"
            out.add(
                "unlabelled_leak",
                f"unlabelled frame {copy} is {what}{allowed}; leave it out of "
                "data.unlabelled, or set data.unlabelled.transductive=true on purpose",
                severity,
                path=copy,
                files=[copy, str(path)],
                **where,
            )
    report.counts["unlabelled"] = counts
    report.findings += out.findings


__all__ = [
    "UNLABELLED_DEFAULTS",
    "UnlabelledFrame",
    "UnlabelledSet",
    "check_unlabelled",
    "evaluated_frames",
    "selection",
    "spread",
    "unique_names",
    "unlabelled_settings",
]
