"""Config plumbing: where ``conf/`` lives, custom resolvers, instantiating named groups."""

from __future__ import annotations

import hashlib
import importlib.resources
import netrc
import os
import secrets
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segvn.utils.command_configs import register_command_schemas
from segvn.utils.cpu import bf16_if_native
from segvn.utils.io import write_atomic
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


def launch_dir() -> str:
    """``${segvn.cwd:}``: the directory segvn was started from (Hydra's ``runtime.cwd``).

    Unlike ``${hydra:runtime.cwd}`` it also resolves before Hydra has set its config, as in the
    process that starts a multirun and resolves ``hydra.sweep.dir`` (``paths.root_dir`` needs it).
    """
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return str(HydraConfig.get().runtime.cwd)
    except Exception:  # pragma: no cover - a half-set HydraConfig
        pass
    return os.getcwd()


def unique_suffix() -> str:
    """Six hex digits: ``${segvn.unique:}`` keeps run directories started in the same second apart.

    Random, except under ``torchrun``: there every rank composes its own config, so the digits come
    from what the ranks share (the rendezvous id, master port and the launching agent), and all
    ranks name the same run directory. Registered with ``use_cache=True``: one value per config
    (Hydra copies the cache into each job's config, as for ``${now:...}``).
    """
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env and "LOCAL_RANK" in env:
        shared = "|".join(
            [
                env["TORCHELASTIC_RUN_ID"],
                env.get("MASTER_ADDR", ""),
                env.get("MASTER_PORT", ""),
                str(os.getppid()),
            ]
        )
        return hashlib.sha1(shared.encode()).hexdigest()[:6]
    return secrets.token_hex(3)


def sweep_group(default: str | None = None, *, _root_: Any = None) -> str:
    """``${segvn.sweep_group:}``: the sweep directory's name in a multirun, else the task name.

    For W&B's ``group``, so the jobs of one multirun (any launcher) show as one group. ``default``
    (or the config's ``task_name``) names single runs.
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized():
            hc = HydraConfig.get()
            if hc.mode == RunMode.MULTIRUN:
                return Path(str(hc.sweep.dir)).name
    except Exception:  # pragma: no cover - outside Hydra
        pass
    if default:
        return str(default)
    task = _root_.get("task_name") if _root_ is not None else None
    return str(task or "segvn")


def budget_interval(
    minutes: float, share: float | None, clock: str = "wall"
) -> dict[str, float] | int | None:
    """``${segvn.budget_interval:MINUTES,SHARE,CLOCK}``: a ``share`` of a budget of ``minutes`` as Lightning's
    time-based ``val_check_interval`` (``{"seconds": ...}``); None (once per epoch) when share is null. A
    CPU-time budget gets 1 (Lightning asks after every batch; :class:`segvn.callbacks.TimeBudgetSchedule`
    answers on the CPU clock, since Lightning's interval is wall-clock)."""
    if share is None:
        return None
    return 1 if clock == "cpu" else {"seconds": float(minutes) * 60.0 * float(share)}


def budget_val_epochs(share: float | None, clock: str = "wall") -> int | None:
    """``${segvn.budget_val_epochs:SHARE,CLOCK}``: ``check_val_every_n_epoch`` under a budget: 1, or None for
    a CPU-time budget validated on its clock (its validations are counted in batches across epochs)."""
    return None if clock == "cpu" and share is not None else 1


def budget_max_time(minutes: float, clock: str = "wall") -> dict[str, float] | None:
    """``${segvn.budget_max_time:MINUTES,CLOCK}``: Lightning's ``max_time`` for a wall-clock budget; None for
    a CPU-time budget, which :class:`segvn.callbacks.TimeBudgetSchedule` ends itself."""
    return {"minutes": minutes} if clock == "wall" else None


def register_resolvers() -> None:
    """Register segvn's OmegaConf resolvers (idempotent): ``segvn.wandb_offline``, ``segvn.repo_dir``."""
    if not OmegaConf.has_resolver("segvn.wandb_offline"):
        OmegaConf.register_new_resolver("segvn.wandb_offline", wandb_offline)
    if not OmegaConf.has_resolver("segvn.repo_dir"):
        OmegaConf.register_new_resolver("segvn.repo_dir", lambda: str(REPO_DIR))
    if not OmegaConf.has_resolver("segvn.beside_repo"):  # ${segvn.beside_repo:shared} = <repo>/../shared
        OmegaConf.register_new_resolver("segvn.beside_repo", lambda name: str(REPO_DIR.parent / name))
    if not OmegaConf.has_resolver("segvn.cwd"):
        OmegaConf.register_new_resolver("segvn.cwd", launch_dir)
    if not OmegaConf.has_resolver("segvn.unique"):
        OmegaConf.register_new_resolver("segvn.unique", unique_suffix, use_cache=True)
    if not OmegaConf.has_resolver("segvn.sweep_group"):
        OmegaConf.register_new_resolver("segvn.sweep_group", sweep_group)
    if not OmegaConf.has_resolver("segvn.bf16_if_native"):  # a fast recipe's trainer.precision
        OmegaConf.register_new_resolver("segvn.bf16_if_native", bf16_if_native)
    if not OmegaConf.has_resolver("segvn.budget_interval"):
        OmegaConf.register_new_resolver("segvn.budget_interval", budget_interval)
    if not OmegaConf.has_resolver("segvn.budget_val_epochs"):
        OmegaConf.register_new_resolver("segvn.budget_val_epochs", budget_val_epochs)
    if not OmegaConf.has_resolver("segvn.budget_max_time"):
        OmegaConf.register_new_resolver("segvn.budget_max_time", budget_max_time)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain resolved Python types (safe to store in checkpoints and JSON)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


def save_resolved_config(cfg: DictConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, OmegaConf.to_yaml(OmegaConf.create(to_container(cfg))))
    return path


def instantiate_dict(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry with a ``_target_`` of a group such as ``callbacks`` or ``logger``."""
    if not cfg:
        return []
    return [instantiate(node) for node in cfg.values() if isinstance(node, DictConfig) and "_target_" in node]


register_resolvers()
register_schemas()
register_command_schemas()
