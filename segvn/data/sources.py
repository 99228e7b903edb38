"""Where the frames come from: streets of labelled frames, and how they are split.

A *source* finds every frame on disk, groups them by street (a video sequence), and decides
which frames belong to train, val, test and predict. Two split modes exist, as in the thesis:

- ``streets``: whole streets go to one split (``train``/``val``/``test``/``predict`` list them),
  so validation never sees a street the model was trained on;
- ``ratio``: the labelled frames of the listed streets are shuffled with ``seed`` and cut by
  ``ratios`` into train/val/test.

Streets listed under ``predict`` are looked up only when the predict split is asked for, so a
training machine need not hold the prediction streets; an unknown street in train/val/test is an
error as soon as its split is used.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segvn.data.io import list_images
from segvn.errors import DataError

SPLITS = ("train", "val", "test", "predict")


@dataclass(frozen=True)
class Sample:
    """One frame: its image, its label map (``None`` when unlabelled) and its street."""

    image: Path
    label: Path | None
    street: str

    @property
    def name(self) -> str:
        return self.image.stem


class StreetSource:
    """Base class: subclasses implement :meth:`discover` and say how labels are stored."""

    label_format: str = "rgb"
    root_hint: str = ""
    """Appended to the missing-root error: where this source's default root comes from."""

    def __init__(
        self,
        root: str | Path,
        split_mode: str = "streets",
        train: Sequence[str] = (),
        val: Sequence[str] = (),
        test: Sequence[str] = (),
        predict: Sequence[str] = (),
        ratios: Sequence[float] = (0.6, 0.2, 0.2),
        seed: int = 0,
    ) -> None:
        if split_mode not in ("streets", "ratio"):
            raise DataError(f"data.source.split_mode={split_mode!r}: use 'streets' or 'ratio'")
        if len(ratios) != 3 or any(r < 0 for r in ratios) or not np.isclose(sum(ratios), 1.0):
            raise DataError(
                f"data.source.ratios={list(ratios)}: give three non-negative shares for "
                "train/val/test that sum to 1"
            )
        self.root = Path(root).expanduser()
        self.split_mode = split_mode
        lists = {"train": train, "val": val, "test": test, "predict": predict}
        for split, names in lists.items():
            bad = [n for n in names if not isinstance(n, str)]
            if bad:
                raise DataError(
                    f"data.source.{split}: street names must be strings, got {bad!r}; quote names such as "
                    "'0016E5' that YAML would read as numbers"
                )
        self.streets = {split: list(names) for split, names in lists.items()}
        self.ratios = tuple(float(r) for r in ratios)
        self.seed = seed
        self._frames: dict[str, list[Sample]] | None = None

    # -- subclasses -------------------------------------------------------------------------
    def discover(self) -> dict[str, list[Sample]]:
        """All frames on disk grouped by street, each list sorted by file name."""
        raise NotImplementedError

    @property
    def lut(self) -> np.ndarray | None:
        """Lookup table for ``index`` label maps; ``None`` for colour masks."""
        return None

    @property
    def known(self) -> np.ndarray | None:
        """Which raw ``index`` label values exist (bool per value); ``None``: segvn indices 0..7, 255."""
        return None

    def orphan_labels(self) -> dict[str, list[Path]]:
        """Label files without a frame of the same stem, per street (for ``segvn.check``)."""
        return {}

    # -- splitting --------------------------------------------------------------------------
    @property
    def frames(self) -> dict[str, list[Sample]]:
        if self._frames is None:
            if not self.root.is_dir():
                raise DataError(
                    f"data root {self.root} does not exist; set data.root=DIR "
                    f"to the folder that holds your streets{self.root_hint}"
                )
            self._frames = self.discover()
        return self._frames

    def _street_frames(self, street: str, split: str) -> list[Sample]:
        if street not in self.frames:
            known = ", ".join(sorted(self.frames)) or "none"
            raise DataError(
                f"unknown street {street!r} in data.source.{split}: no such street under "
                f"{self.root} (found: {known})"
            )
        return self.frames[street]

    def samples(self, split: str) -> list[Sample]:
        """The frames of one split (labelled ones only, except for ``predict``)."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        if split == "predict":
            return [s for street in self.streets["predict"] for s in self._street_frames(street, split)]
        if self.split_mode == "streets":
            return [
                s
                for street in self.streets[split]
                for s in self._street_frames(street, split)
                if s.label is not None
            ]
        return self._ratio_split()[split]

    def _ratio_split(self) -> dict[str, list[Sample]]:
        listed = self.streets["train"] + self.streets["val"] + self.streets["test"]
        pool = sorted(
            (s for street in dict.fromkeys(listed) for s in self._street_frames(street, "train") if s.label),
            key=lambda s: str(s.image),
        )
        random.Random(self.seed).shuffle(pool)
        n_train = round(self.ratios[0] * len(pool))
        n_val = round(self.ratios[1] * len(pool))
        return {
            "train": pool[:n_train],
            "val": pool[n_train : n_train + n_val],
            "test": pool[n_train + n_val :],
        }

    def split_size(self, split: str) -> int | str:
        """Frames of a split; for ``predict``, a note instead of an error when its streets are absent."""
        if split != "predict":
            return len(self.samples(split))
        try:
            return len(self.samples(split))
        except DataError:
            return "absent"

    def describe(self) -> str:
        parts = [f"{split}={self.split_size(split)}" for split in SPLITS]
        return f"{type(self).__name__}({self.root}, {self.split_mode}: {', '.join(parts)})"


class StreetFolders(StreetSource):
    """The thesis layout, the one real users bring (``data=vietnam``)::

        ROOT/<street>/frames/<video>_<frame>.png   every extracted frame
        ROOT/<street>/labels/<video>_<frame>.png   RGB colour masks of the labelled ones

    A frame is labelled when ``labels/`` holds a file of the same stem.
    """

    label_format = "rgb"

    def __init__(
        self, root: str | Path, frames_dir: str = "frames", labels_dir: str = "labels", **kw
    ) -> None:
        super().__init__(root, **kw)
        self.frames_dir = frames_dir
        self.labels_dir = labels_dir

    def discover(self) -> dict[str, list[Sample]]:
        streets: dict[str, list[Sample]] = {}
        for street_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            frame_dir = street_dir / self.frames_dir
            if not frame_dir.is_dir():
                continue
            labels = {}
            label_dir = street_dir / self.labels_dir
            if label_dir.is_dir():
                labels = {p.stem: p for p in list_images(label_dir)}
            streets[street_dir.name] = [
                Sample(image=p, label=labels.get(p.stem), street=street_dir.name)
                for p in list_images(frame_dir)
            ]
        if not streets:
            raise DataError(
                f"{self.root}: no street folders with a '{self.frames_dir}/' subfolder; expected "
                f"ROOT/<street>/{self.frames_dir}/*.png and ROOT/<street>/{self.labels_dir}/*.png"
            )
        return streets

    def orphan_labels(self) -> dict[str, list[Path]]:
        out: dict[str, list[Path]] = {}
        for street_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            label_dir = street_dir / self.labels_dir
            if not label_dir.is_dir():
                continue
            frame_dir = street_dir / self.frames_dir
            stems = {p.stem for p in list_images(frame_dir)} if frame_dir.is_dir() else set()
            orphans = [p for p in list_images(label_dir) if p.stem not in stems]
            if orphans:
                out[street_dir.name] = orphans
        return out
