"""Config plumbing: where ``conf/`` lives, custom resolvers, instantiating named groups."""

from __future__ import annotations

import importlib.resources
import netrc
import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segvn.utils.schema import register_schemas

CONFIG_MODULE = "segvn.conf"
"""The configs ship inside the package (the top-level ``conf/`` folder, mapped in ``pyproject.toml``)."""
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"
"""What ``@hydra.main(config_path=...)`` takes: works for editable installs, wheels and ``pip install .``."""
CONF_DIR = str(importlib.resources.files(CONFIG_MODULE))
"""The configs as a folder on disk (``conf/`` of the checkout for an editable install)."""


def wandb_offline() -> bool:
    """True unless W&B credentials are available or ``WANDB_MODE=online`` is set."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return True
    if mode == "online" or os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


REPO_DIR = Path(__file__).resolve().parents[2]
"""The folder holding the ``segvn`` package: the checkout for an editable install (``../shared`` beside it)."""


def register_resolvers() -> None:
    """Register segvn's OmegaConf resolvers (idempotent): ``segvn.wandb_offline``, ``segvn.repo_dir``."""
    if not OmegaConf.has_resolver("segvn.wandb_offline"):
        OmegaConf.register_new_resolver("segvn.wandb_offline", wandb_offline)
    if not OmegaConf.has_resolver("segvn.repo_dir"):
        OmegaConf.register_new_resolver("segvn.repo_dir", lambda: str(REPO_DIR))


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain resolved Python types (safe to store in checkpoints and JSON)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


def save_resolved_config(cfg: DictConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(to_container(cfg))))
    return path


def instantiate_dict(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry with a ``_target_`` of a group such as ``callbacks`` or ``logger``."""
    if not cfg:
        return []
    return [instantiate(node) for node in cfg.values() if isinstance(node, DictConfig) and "_target_" in node]


register_resolvers()
register_schemas()
