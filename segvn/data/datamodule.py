"""The LightningDataModule: one source of streets, four splits, albumentations transforms."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import ConcatDataset, DataLoader, Dataset, RandomSampler

from segvn.data.check import LABELLED_SPLITS, check_dataset, validate_options
from segvn.data.classes import CLASS_NAMES
from segvn.data.consistency import UnlabelledViews, online_settings
from segvn.data.dataset import SegmentationDataset
from segvn.data.pseudo import PseudoLabelDataset, Weighted, shared_frames
from segvn.data.sampling import build_train_sampler, sampler_settings
from segvn.data.sources import SPLITS, StreetSource
from segvn.data.stats import LabelStats, class_weights, scan_labels
from segvn.data.transforms import build_transforms
from segvn.data.unlabelled import VIDEO_FOLDER, UnlabelledFrame, UnlabelledSet, evaluated_frames
from segvn.errors import ConfigError, DataError
from segvn.utils.schema import switch

log = logging.getLogger(__name__)


def _check_settings(**values: object) -> None:
    """:class:`ConfigError` naming ``data.<key>`` for a count that is not a whole number in range."""
    for key, value in values.items():
        if value is None and key == "eval_batch_size":
            continue
        low = 0 if key == "num_workers" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"data.{key} must be a whole number >= {low}, got {value!r}")


class SegDataModule(L.LightningDataModule):
    """Serves train/val/test/predict loaders of one :class:`StreetSource`.

    ``image_size`` resizes every frame (``None`` keeps the native size; the model pads sides that
    are not multiples of its output stride and crops the output back). ``augment`` holds the
    training augmentation settings of :func:`~segvn.data.transforms.build_transforms`. ``root``
    is where the data lives (``data.root``, its one home): ``source`` is a source factory (Hydra
    ``_partial_: true``) called with it, or an already built :class:`StreetSource`.
    ``check`` (``level``: off/cheap/full, ``warn_only``: error kinds reported as warnings) is the
    dataset check :meth:`setup` runs before fitting; see :mod:`segvn.data.check`.
    ``sampler`` (``name``: uniform/rare_class, ``temperature``, ``min_share``) chooses how training
    frames are drawn; see :mod:`segvn.data.sampling`.
    ``pseudo`` (``dir``: a folder written by ``segvn.pseudolabel``, ``weight``: the loss weight of its
    pixels, ``strong``: strong augmentation on its frames, ``transductive``: allow pool frames that are
    also validation/test frames) adds pseudo-labelled frames to the training set; see
    :mod:`segvn.data.pseudo`.
    ``unlabelled`` (``data.unlabelled``: streets, folders, videos, ``max_frames``, ``transductive``) is the
    set of frames without labels that ``segvn.pseudolabel`` labels; it is no split of the loaders, so it
    never reaches validation or test metrics; see :mod:`segvn.data.unlabelled`.
    ``online`` (``batch_size``: unlabelled frames per step, null: off) adds a batch of weak/strong views of
    the unlabelled set to every training batch, for online self-training; see :mod:`segvn.data.consistency`.
    """

    def __init__(
        self,
        source: StreetSource | Callable[..., StreetSource],
        root: str | Path | None = None,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_size: Sequence[int] | None = None,
        augment: dict | None = None,
        shuffle: bool = True,
        pin_memory: bool = False,
        cache_dir: str | Path | None = None,
        class_names: Sequence[str] = CLASS_NAMES,
        check: dict | None = None,
        sampler: dict | None = None,
        pseudo: dict | None = None,
        unlabelled: dict | None = None,
        online: dict | None = None,
    ) -> None:
        super().__init__()
        _check_settings(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers)
        if image_size is not None and (
            len(image_size) != 2 or not all(isinstance(v, int) and v > 0 for v in image_size)
        ):
            raise ConfigError(f"data.image_size must be [height, width] in pixels or null, got {image_size}")
        if not isinstance(source, StreetSource):
            if root is None:
                raise DataError("data.root is not set: the folder that holds the data")
            source = source(root=root)
        self.source = source
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.image_size = list(image_size) if image_size is not None else None
        self.augment = dict(augment or {})
        self.shuffle = shuffle
        self.pin_memory = pin_memory
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.class_names = list(class_names)
        self._datasets: dict[str, SegmentationDataset] = {}
        self._stats: LabelStats | None = None
        check = dict(check or {})
        unknown = sorted(set(check) - {"level", "warn_only"})
        if unknown:
            raise DataError(f"data.check: unknown setting(s) {unknown}; use level and warn_only")
        self.check = {
            "level": str(check.get("level", "cheap")),
            "warn_only": list(check.get("warn_only") or []),
        }
        validate_options(self.check["level"], self.check["warn_only"])
        self.sampler = sampler_settings(sampler)
        self.pseudo = _pseudo_settings(pseudo)
        if self.pseudo and self.sampler["name"] != "uniform":
            raise ConfigError(
                f"data.sampler.name={self.sampler['name']} with data.pseudo: pseudo-labelled frames are drawn "
                "uniformly; set data.sampler.name=uniform"
            )
        self._pseudo: PseudoLabelDataset | None = None
        video_dir = self.cache_dir / VIDEO_FOLDER if self.cache_dir is not None else None
        self.unlabelled = UnlabelledSet(self.source, unlabelled, video_dir)
        self.online = online_settings(online)
        self._views: UnlabelledViews | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def dataset(self, split: str) -> SegmentationDataset:
        """The dataset of one split, built on first use."""
        if split not in self._datasets:
            samples = self.source.samples(split)
            transform = build_transforms(split == "train", self.image_size, **self.augment)
            self._datasets[split] = SegmentationDataset(
                samples, transform, self.source.label_format, self.source.lut, self.source.known
            )
        return self._datasets[split]

    def require(self, split: str) -> SegmentationDataset:
        """The dataset of a split, or a clear error when the split has no frames."""
        ds = self.dataset(split)
        if len(ds) == 0:
            what = "frames" if split == "predict" else "labelled frames"
            raise DataError(
                f"the {split} split is empty: no {what} for data.source.{split}="
                f"{self.source.streets.get(split)} under {self.source.root}; list streets that have "
                f"{'frames' if split == 'predict' else 'labels'}, or use split_mode=ratio"
            )
        return ds

    def require_batches(self, processes: int | None = None) -> int:
        """Full training batches per epoch and process, or a clear error when there are none.

        The training loader drops an incomplete last batch (a batch of one fails in the
        BatchNorm after DeepLabV3+'s global pooling), so a training split with fewer frames per
        process than ``data.batch_size`` would train zero steps. ``processes`` defaults to the
        attached trainer's world size.
        """
        frames = len(self.require("train"))
        if processes is None:
            processes = int(getattr(self.trainer, "world_size", 1) or 1) if self.trainer is not None else 1
        per_process = math.ceil(frames / processes)
        batches = per_process // self.batch_size
        if batches == 0:
            over = f" over {processes} processes ({per_process} each)" if processes > 1 else ""
            fix = f"set data.batch_size={per_process} or less, or " if per_process > 1 else ""
            raise DataError(
                f"the training split has {frames} frame{'s' if frames != 1 else ''}{over}, fewer than "
                f"data.batch_size={self.batch_size}: "
                f"an incomplete last batch is dropped, so no training step would run; {fix}train on more "
                f"frames (data.source.train={self.source.streets.get('train')} under {self.source.root})"
            )
        return batches

    def has_split(self, split: str) -> bool:
        return len(self.dataset(split)) > 0

    def prepare_data(self) -> None:
        """Runs once per machine before ``setup``: finds (or generates) the frames on disk."""
        _ = self.source.frames

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.require("train")
            self.require("val")
            self.require_batches()
            stats = self.label_stats("train")  # reads every training label once: sizes, colours, counts
            self.check_data(stats)
            self.pseudo_dataset()
            self.online_views()
        elif stage in ("validate", "test"):
            self.require("val" if stage == "validate" else "test")
        elif stage == "predict":
            self.require("predict")

    def check_data(self, stats: LabelStats | None = None) -> None:
        """The set-up check of ``self.check`` over train/val/test: raises :class:`DataError` on errors."""
        if self.check["level"] == "off":
            return
        splits = [s for s in LABELLED_SPLITS if s != "test" or self.source.streets.get("test")]
        report = check_dataset(self, self.check["level"], self.check["warn_only"], splits, label_stats=stats)
        if report.warnings:
            kinds = sorted({f.kind for f in report.warnings})
            log.warning(
                "dataset check (%s): %d warning(s) (%s); python -m segvn.check shows them",
                self.check["level"],
                len(report.warnings),
                ", ".join(kinds),
            )

    def label_stats(self, split: str = "train") -> LabelStats:
        """Pixel statistics of a split's labels (scanned once, cached on disk)."""
        if split == "train" and self._stats is not None:
            return self._stats
        ds = self.require(split)
        stats = scan_labels(
            ds.samples, ds.label_format, ds.lut, self.num_classes, self.cache_dir, known=ds.known
        )
        if split == "train":
            self._stats = stats
        return stats

    def class_weights(self, method: str = "median_frequency") -> torch.Tensor:
        """Loss weights from the training labels; see :func:`segvn.data.stats.class_weights`."""
        if method == "none":
            return torch.ones(self.num_classes)
        weights = class_weights(self.label_stats("train"), method)
        log.info(
            "class weights (%s): %s",
            method,
            ", ".join(f"{n}={w:.3f}" for n, w in zip(self.class_names, weights, strict=True)),
        )
        return torch.from_numpy(np.asarray(weights))

    def pseudo_dataset(self) -> PseudoLabelDataset | None:
        """The pseudo-labelled frames of ``data.pseudo``, checked: same classes, none evaluated (unless
        ``transductive``); ``None`` without ``data.pseudo``."""
        if not self.pseudo or self._pseudo is not None:
            return self._pseudo
        transform = build_transforms(True, self.image_size, **self.augment, strong=self.pseudo["strong"])
        pseudo = PseudoLabelDataset(
            self.pseudo["dir"],
            transform,
            float(self.pseudo["weight"]),
            class_weighted=self.pseudo["class_weighted"],
        )
        if pseudo.class_names != self.class_names:
            raise DataError(
                f"data.pseudo.dir={self.pseudo['dir']}: pseudo-labels of a teacher of other classes "
                f"({', '.join(pseudo.class_names)}) than the data's ({', '.join(self.class_names)})"
            )
        if not self.pseudo["transductive"]:
            evaluated = [s.image for split in ("val", "test") for s in self.dataset(split).samples]
            shared = shared_frames([image for image, _ in pseudo.frames], evaluated)
            if shared:
                raise DataError(
                    f"data.pseudo.dir={self.pseudo['dir']}: {len(shared)} pseudo-labelled frame(s) are also "
                    f"validation/test frames ({', '.join(shared[:3])}); pseudo-label other frames, or set "
                    "data.pseudo.transductive=true to learn from the evaluated street's frames on purpose"
                )
        log.info(
            "pseudo-labels: %d frame(s) from %s, loss weight %g, %s",
            len(pseudo),
            pseudo.folder,
            pseudo.weight,
            "class-weighted" if pseudo.class_weighted else "not class-weighted",
        )
        self._pseudo = pseudo
        return pseudo

    def unlabelled_frames(self) -> list[UnlabelledFrame]:
        """The frames of ``data.unlabelled``, checked: none is a validation/test frame (by path or pixels)
        unless ``data.unlabelled.transductive``; a :class:`DataError` names them otherwise."""
        frames = self.unlabelled.frames()
        if frames and not self.unlabelled.transductive:
            try:
                evaluated = evaluated_frames(self)
            except DataError as err:
                if self.source.root.is_dir():
                    raise
                log.warning("unlabelled set: not checked against validation/test frames (%s)", err)
                return frames  # the student's data.pseudo check compares them when it trains
            shared = shared_frames([f.image for f in frames], evaluated)
            if shared:
                raise DataError(
                    f"data.unlabelled: {len(shared)} unlabelled frame(s) are also validation/test frames "
                    f"({', '.join(shared[:3])}); leave them out of the pool, or set "
                    "data.unlabelled.transductive=true to learn from the evaluated street's frames on purpose"
                )
        return frames

    def online_views(self) -> UnlabelledViews | None:
        """Weak/strong views of the unlabelled set for ``data.online`` (checked like the set itself); ``None``
        when online self-training is off."""
        if self.online["batch_size"] is None or self._views is not None:
            return self._views
        frames = self.unlabelled_frames()
        if len(frames) < self.online["batch_size"]:
            raise DataError(
                f"data.online.batch_size={self.online['batch_size']}: the unlabelled set has {len(frames)} "
                "frame(s); give data.unlabelled streets, folders or videos with more frames"
            )
        self._views = UnlabelledViews([f.image for f in frames], self.image_size, **self.augment)
        log.info(
            "online self-training: %d unlabelled frame(s), %d per step",
            len(frames),
            self.online["batch_size"],
        )
        return self._views

    def train_dataset(self) -> Dataset:
        """The training frames, with the pseudo-labelled ones after them when ``data.pseudo`` is set."""
        labelled = self.require("train")
        pseudo = self.pseudo_dataset()
        return labelled if pseudo is None else ConcatDataset([Weighted(labelled, 1.0), pseudo])

    def _loader(self, split: str, train: bool, batch_size: int | None = None) -> DataLoader:
        dataset = self.train_dataset() if train else self.require(split)
        sampler = None
        if not train and torch.distributed.is_available() and torch.distributed.is_initialized():
            # every frame exactly once across processes: Lightning's default DistributedSampler pads the
            # split with repeated frames, which would count them twice in the metrics
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        if train and self.shuffle and self.sampler["name"] != "uniform":
            stats = self.label_stats("train")
            row = {f: i for i, f in enumerate(stats.files)}  # labelled frames only: map back by label path
            counts = np.zeros((len(dataset), self.num_classes), np.int64)
            pixels = np.ones(len(dataset), np.int64)
            for i, s in enumerate(dataset.samples):
                if s.label is not None and str(s.label) in row:
                    counts[i], pixels[i] = stats.counts[row[str(s.label)]], stats.pixels[row[str(s.label)]]
            sampler = build_train_sampler(
                self.sampler["name"],
                counts,
                pixels,
                self.class_names,
                float(self.sampler["temperature"]),
                float(self.sampler["min_share"]),
            )
        return DataLoader(
            dataset,
            batch_size=batch_size or (self.batch_size if train else self.eval_batch_size),
            shuffle=train and self.shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            # an incomplete last training batch is dropped: one frame would fail in BatchNorm after global
            # pooling (DeepLabV3+'s image-pooling branch), and a small one makes a noisy step
            drop_last=train,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        labelled = self._loader("train", True)
        views = self.online_views()
        if views is None:
            return labelled
        # as many unlabelled batches as labelled ones, drawn with replacement: the labelled frames set the
        # epoch, however many unlabelled frames there are (Lightning combines the two loaders)
        size = self.online["batch_size"]
        unlabelled = DataLoader(
            views,
            batch_size=size,
            sampler=RandomSampler(views, replacement=True, num_samples=len(labelled) * size),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=True,
            persistent_workers=self.num_workers > 0,
        )
        return {"labelled": labelled, "unlabelled": unlabelled}

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", False)

    def eval_dataloader(self, split: str, batch_size: int | None = None) -> DataLoader:
        """An unshuffled loader over any split, in file order (for evaluation and prediction)."""
        return self._loader(split, False, batch_size)

    def describe(self) -> str:
        """Frames per split; absent prediction streets are noted, not an error (training needs none)."""
        parts = []
        for split in SPLITS:
            try:
                parts.append(f"{split}={len(self.dataset(split))}")
            except DataError:
                if split != "predict":
                    raise
                parts.append(f"predict=absent ({', '.join(self.source.streets['predict'])} not found)")
        if self.pseudo:
            parts.append(f"pseudo={self.pseudo['dir']}")
        return ", ".join(parts)


PSEUDO_DEFAULTS = {
    "dir": None,
    "weight": 1.0,
    "strong": True,
    "transductive": False,
    "class_weighted": False,
}


def _pseudo_settings(pseudo: dict | None) -> dict | None:
    """``data.pseudo`` with its defaults, or ``None`` when off (no ``dir``)."""
    settings = {**PSEUDO_DEFAULTS, **dict(pseudo or {})}
    unknown = sorted(set(settings) - set(PSEUDO_DEFAULTS))
    if unknown:
        raise ConfigError(f"data.pseudo: unknown setting(s) {unknown}; use {', '.join(PSEUDO_DEFAULTS)}")
    for key in ("strong", "transductive", "class_weighted"):
        settings[key] = switch(settings[key], f"data.pseudo.{key}")
    if not settings["dir"]:
        return None
    try:
        weight = float(settings["weight"])
    except (TypeError, ValueError):
        weight = -1.0
    if weight < 0:
        raise ConfigError(f"data.pseudo.weight must be a number >= 0, got {settings['weight']!r}")
    settings["weight"] = weight
    return settings
