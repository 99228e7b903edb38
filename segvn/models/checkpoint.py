"""Reading segvn checkpoints safely and rebuilding the model they hold.

Checkpoints are opened with ``torch.load(weights_only=True)``: tensors, containers and plain
values only, so a crafted file cannot run code. The resolved training config that
:class:`segvn.callbacks.ConfigInCheckpoint` stored under ``segvn_config`` rebuilds the model.
:class:`Checkpoint` is the one way in for every command that starts from a checkpoint: the file is
read once, and its config, class names and model come from that one read.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segvn.errors import CheckpointError
from segvn.models.weights import blocked_global, load_failure

CONFIG_KEY = "segvn_config"

log = logging.getLogger(__name__)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, refusing anything but plain data and naming the problem."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint is empty (0 bytes)")
    zipped = zipfile.is_zipfile(path)
    if not zipped and not _is_legacy(path):
        raise CheckpointError(
            f"{path}: cannot read checkpoint, the file is truncated or corrupt (not a PyTorch zip archive); "
            "copy it again from where training wrote it"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - refused (unsafe) or unreadable, told apart below
        unsafe = blocked_global(err)
        if unsafe or (zipped and isinstance(err, pickle.UnpicklingError)):
            named = f" ({unsafe})" if unsafe else ""
            raise CheckpointError(
                f"{path}: refused to load: the file holds pickled Python objects{named} that are not plain "
                "tensors or containers, which could run arbitrary code. Only checkpoints written by "
                "segvn.train are accepted."
            ) from err
        raise CheckpointError(
            f"{path}: cannot read checkpoint, the file is truncated or corrupt ({load_failure(err)}); copy it "
            "again from where training wrote it"
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    if CONFIG_KEY not in ckpt:
        raise CheckpointError(
            f"{path}: not a segvn checkpoint: it has no '{CONFIG_KEY}' (the training config); "
            "checkpoints from segvn.train carry it"
        )
    bad = non_finite_count(ckpt["state_dict"])
    if bad:
        raise CheckpointError(
            f"{path}: {bad} weights are NaN or infinite: the training that wrote it diverged, so its "
            "predictions mean nothing. Use an earlier checkpoint of the run, or retrain with a lower "
            "model.optimizer.lr"
        )
    return ckpt


LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
"""The first bytes of a file of torch.save's legacy format (``_use_new_zipfile_serialization=False``):
its magic number, pickled."""


def _is_legacy(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(LEGACY_MAGIC)) == LEGACY_MAGIC


def non_finite_count(state_dict: dict[str, Any]) -> int:
    """How many entries of the floating-point tensors of a state dict are NaN or infinite."""
    return sum(
        int((~torch.isfinite(t)).sum())
        for t in state_dict.values()
        if isinstance(t, torch.Tensor) and t.is_floating_point()
    )


HEAD_WEIGHT = "segmentation_head.0.weight"
"""State-dict key suffix of the smp segmentation head's convolution: its first dimension is the classes."""


def output_channels(state_dict: dict[str, Any]) -> int | None:
    """How many classes the network of a state dict predicts (its head's output channels); ``None`` if unknown."""
    for key, value in state_dict.items():
        if key.endswith(HEAD_WEIGHT) and isinstance(value, torch.Tensor) and value.ndim >= 1:
            return int(value.shape[0])
    return None


def require_outputs(path: str | Path, channels: int | None, names: list[str], what: str = "network") -> None:
    """:class:`CheckpointError` naming ``path`` and both numbers when ``channels`` is not ``len(names)``."""
    if channels is not None and channels != len(names):
        raise CheckpointError(
            f"{path}: the {what} outputs {channels} channels but its config names {len(names)} classes "
            f"({', '.join(names)}); the file is damaged or was trained with another model.net.num_classes "
            "- use a checkpoint trained with one output per class"
        )


FROZEN_STAGES = "callbacks.freeze_encoder.frozen_stages"
"""The setting of the encoder stages that training keeps frozen (:class:`segvn.callbacks.FreezeEncoder`)."""

MOVED_MODEL_SETTINGS: dict[str, str] = {
    "encoder_frozen_stages": FROZEN_STAGES,
    "encoder_norm_eval": "callbacks.freeze_encoder.norm_eval",
    "channels_last": "callbacks.memory_format.channels_last",
    "compile": "callbacks.torch_compile.enabled",
}
"""Settings ``model.<key>`` of earlier versions (arguments of ``SegModule``) and the callback settings
that replaced them. Checkpoints and run directories written before carry the old keys."""


def pop_moved_settings(model_cfg: Any) -> dict[str, Any]:
    """Remove the :data:`MOVED_MODEL_SETTINGS` from a model config (plain dict or DictConfig), in place.

    Returns ``{new setting: stored value}`` for the keys that were there, so a resumed run can carry
    them over to the callbacks; a model rebuilt for evaluation or prediction needs none of them.
    """
    moved: dict[str, Any] = {}
    if not isinstance(model_cfg, dict | DictConfig):
        return moved
    for old, new in MOVED_MODEL_SETTINGS.items():
        if old in model_cfg:
            moved[new] = model_cfg.pop(old)
    return moved


def checkpoint_config(ckpt: dict[str, Any]) -> DictConfig:
    """The resolved training config stored in a checkpoint, without the :data:`MOVED_MODEL_SETTINGS`
    of older checkpoints (they are not arguments of the model any more)."""
    cfg = OmegaConf.create(ckpt[CONFIG_KEY])
    pop_moved_settings(cfg.get("model"))
    return cfg


def model_from_checkpoint(
    ckpt: dict[str, Any], model_cfg: DictConfig | None = None, path: str | Path = "checkpoint"
):
    """Instantiate the LightningModule from ``model_cfg`` (default: the stored one) and load the weights.

    Pretrained-encoder settings are dropped (the checkpoint holds the trained weights), so a
    checkpoint made with a local weights file loads on a machine without that file.
    """
    cfg = OmegaConf.create(
        OmegaConf.to_container(model_cfg if model_cfg is not None else checkpoint_config(ckpt).model)
    )
    pop_moved_settings(cfg)
    cfg.net.encoder_weights = None
    module = instantiate(cfg)
    require_outputs(path, output_channels(ckpt["state_dict"]), list(module.class_names))
    try:
        module.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: weights do not fit the model described by its config: {str(err)[:500]}"
        ) from err
    return module.eval()


@dataclass
class Checkpoint:
    """A segvn checkpoint read once: its path, raw dict and stored training config; builds the model.

    ``Checkpoint.read(path)`` raises :class:`CheckpointError` naming the file for anything that is not
    a readable segvn checkpoint.
    """

    path: Path
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def read(cls, path: str | Path) -> Checkpoint:
        ckpt = cls(Path(path).expanduser(), load_checkpoint(path))
        ckpt.require_outputs(output_channels(ckpt.raw["state_dict"]))
        return ckpt

    def require_outputs(self, channels: int | None, what: str = "network") -> None:
        """:class:`CheckpointError` when the network's output channels are not one per class name.

        Without this, a 5-channel network under 8 class names runs and scores every pixel as one of the
        first 5 classes: a wrong result with exit status 0. ``channels`` ``None``: cannot be told.
        """
        require_outputs(self.path, channels, self.class_names, what)

    @property
    def config(self) -> DictConfig:
        """The resolved training config stored in the file."""
        return checkpoint_config(self.raw)

    @property
    def class_names(self) -> list[str]:
        """The classes the model predicts, in output-channel order."""
        model_cfg = self.config.get("model") or {}
        return list(
            model_cfg.get("class_names") or self.config.get("data", {}).get("class_names") or _default_names()
        )

    def require_classes(self, data_class_names: list[str]) -> None:
        """:class:`CheckpointError` when the data's classes are not the ones the model predicts."""
        names = self.class_names
        if list(data_class_names) != names:
            raise CheckpointError(
                f"{self.path}: the model predicts {len(names)} classes ({', '.join(names)}) but the data has "
                f"{len(data_class_names)} ({', '.join(data_class_names)}); use data whose classes match"
            )

    @property
    def frozen_stages(self) -> int:
        """How many encoder stages the training that wrote the file kept frozen (old or new setting)."""
        stored = OmegaConf.create(self.raw[CONFIG_KEY])
        new = OmegaConf.select(stored, FROZEN_STAGES, default=None)
        old = OmegaConf.select(stored, "model.encoder_frozen_stages", default=None)
        return int(new if new is not None else old or 0)

    def require_resumable(self, model_cfg: DictConfig, frozen_stages: int | None = None) -> None:
        """:class:`CheckpointError` when training cannot go on from this file with ``model_cfg``'s optimizer.

        ``model.encoder_lr_mult`` other than 1 gives the encoder its own parameter group, and a saved
        optimizer state only loads into as many groups as it was saved with. Any other change of the
        multiplier is allowed but has no effect: the saved learning rates and schedule carry on.
        Frozen weights have no optimizer state either, so ``frozen_stages`` (the stages the resumed run
        freezes; ``None``: not checked) must be the stages the file was trained with.
        """
        if frozen_stages is not None and frozen_stages != self.frozen_stages:
            raise CheckpointError(
                f"{self.path}: trained with {FROZEN_STAGES}={self.frozen_stages}, so its optimizer state cannot "
                f"resume with {FROZEN_STAGES}={frozen_stages} (frozen weights are not in the optimizer); "
                f"resume with {FROZEN_STAGES}={self.frozen_stages}"
            )
        saved = float((self.config.get("model") or {}).get("encoder_lr_mult", 1.0))
        wanted = float(model_cfg.get("encoder_lr_mult", 1.0))
        if (saved == 1.0) != (wanted == 1.0):
            raise CheckpointError(
                f"{self.path}: trained with model.encoder_lr_mult={saved:g}, so its optimizer state cannot "
                f"resume with model.encoder_lr_mult={wanted:g} (one learning rate vs a separate one for "
                f"the encoder); resume with model.encoder_lr_mult={saved:g}"
            )
        if saved != wanted:
            log.warning(
                "%s: trained with model.encoder_lr_mult=%g; the resumed run keeps the saved learning rates, "
                "so model.encoder_lr_mult=%g has no effect",
                self.path, saved, wanted,
            )  # fmt: skip

    def require_fits(self, model_cfg: DictConfig, module: torch.nn.Module | None = None) -> None:
        """:class:`CheckpointError` (one line) when the weights do not fit the network of ``model_cfg``.

        Compares names and shapes with ``module`` (default: built from ``model_cfg`` without pretrained
        weights) and names the model settings that differ from the stored ones, so a resume with a
        model-changing override is refused before it writes anything.
        """
        if module is None:
            cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
            pop_moved_settings(cfg)
            if "net" in cfg:
                cfg.net.encoder_weights = None
            module = instantiate(cfg)
        own = module.state_dict()
        saved = self.raw["state_dict"]
        missing = [k for k in own if k not in saved]
        extra = [k for k in saved if k not in own]
        shaped = [k for k in own if k in saved and tuple(own[k].shape) != tuple(saved[k].shape)]
        if not (missing or extra or shaped):
            return
        stored = _flat((self.config.get("model") or {}), "model")
        wanted = _flat(model_cfg, "model")
        changed = [
            f"{k}={wanted.get(k)} (trained with {stored.get(k)})"
            for k in sorted(stored.keys() | wanted.keys())
            if stored.get(k) != wanted.get(k) and not k.endswith("encoder_weights")
        ]
        counts = ", ".join(
            f"{len(keys)} {what}"
            for keys, what in ((shaped, "of another shape"), (missing, "missing"), (extra, "unexpected"))
            if keys
        )
        raise CheckpointError(
            f"{self.path}: its weights do not fit the model to train"
            f"{': ' + ', '.join(changed[:4]) if changed else ''} (tensors: {counts}; first: "
            f"{(shaped or missing or extra)[0]}); train on with the model settings it was trained with, "
            "or start a new run"
        )

    def model(self, model_cfg: DictConfig | None = None):
        """The LightningModule with the trained weights, in eval mode (see :func:`model_from_checkpoint`)."""
        return model_from_checkpoint(self.raw, model_cfg, self.path)


def _flat(node: Any, prefix: str) -> dict[str, Any]:
    """A nested config as ``{"model.net.encoder_name": value, ...}`` (resolved plain values)."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}.{key}"))
    return out


def _default_names() -> list[str]:
    from segvn.data.classes import CLASS_NAMES

    return list(CLASS_NAMES)
