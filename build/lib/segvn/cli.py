"""How every ``python -m segvn.<verb>`` starts: Hydra, one error path, one way in from a checkpoint.

:func:`command` turns a task function into the Hydra main of a command. The task receives the
composed config (and, for commands that start from a checkpoint, the :class:`Checkpoint` read once);
a :class:`~segvn.errors.SegvnError` it raises becomes one logged line and exit status 1, with
everything written before it kept.

Commands that start from a checkpoint (``evaluate``, ``predict``, ``visualize``) rebuild the data and
model settings stored in it, with command-line overrides winning: before Hydra composes, the file
named by ``ckpt_path=`` is read and its ``data`` and ``model`` configs are registered in Hydra's
ConfigStore as the options ``data=checkpoint`` and ``model=checkpoint``, which those commands select
by default (see their ``conf/<verb>.yaml``). So ``data.root=DIR`` edits the stored data config and
``data=camvid`` replaces it.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from segvn.errors import CheckpointError, SegvnError
from segvn.models.checkpoint import Checkpoint
from segvn.utils.config import CONFIG_PATH
from segvn.utils.run import run_task

log = logging.getLogger("segvn")

_HELP_FLAGS = ("--help", "-h", "--info", "--hydra-help", "--cfg", "-c")


def _arg(argv: list[str], key: str) -> str | None:
    for a in argv:
        if a.startswith(f"{key}="):
            return a.split("=", 1)[1]
    return None


def _fail(message: str) -> None:
    logging.basicConfig(format="[%(levelname)s] %(message)s")
    log.error("%s", message)
    sys.exit(1)


def register_checkpoint_configs(ckpt: Checkpoint) -> None:
    """The checkpoint's ``data`` and ``model`` configs as the Hydra options ``data=checkpoint``/``model=checkpoint``."""
    stored = ckpt.config
    cs = ConfigStore.instance()
    for group in ("data", "model"):
        node = stored.get(group)
        if node is not None:
            cs.store(group=group, name="checkpoint", node=OmegaConf.create(OmegaConf.to_container(node)))


def _read_checkpoint(verb: str, argv: list[str]) -> Checkpoint | None:
    if any(a in _HELP_FLAGS or a.startswith("--cfg") for a in argv[1:]):
        return None
    path = _arg(argv[1:], "ckpt_path")
    if path is None:
        _fail(f"ckpt_path=PATH is required: the checkpoint (from segvn.train) to {verb}")
    try:
        ckpt = Checkpoint.read(path)
    except SegvnError as err:
        _fail(str(err))
    register_checkpoint_configs(ckpt)
    return ckpt


def command(
    config_name: str, from_checkpoint: bool = False
) -> Callable[[Callable[..., Any]], Callable[[], Any]]:
    """Decorate ``task(cfg)`` (or ``task(cfg, ckpt)`` with ``from_checkpoint``) into a command's ``main()``."""

    def wrap(task: Callable[..., Any]) -> Callable[[], Any]:
        loaded: dict[str, Checkpoint] = {}

        def hydra_task(cfg: DictConfig) -> Any:
            if not from_checkpoint:
                return run_task(task, cfg)
            path = str(cfg.ckpt_path)
            if path not in loaded:  # a sweep over ckpt_path: read each file once
                loaded[path] = run_task(Checkpoint.read, path)
            return run_task(task, cfg, loaded[path])

        hydra_main = hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)(
            hydra_task
        )

        @functools.wraps(task)
        def main() -> Any:
            if from_checkpoint:
                ckpt = _read_checkpoint(config_name, sys.argv)
                if ckpt is not None:
                    loaded[str(_arg(sys.argv[1:], "ckpt_path"))] = ckpt
            return hydra_main()

        return main

    return wrap


def check_classes(ckpt: Checkpoint, data_class_names: list[str]) -> None:
    """:class:`CheckpointError` when the data's classes are not the ones the model predicts."""
    names = ckpt.class_names
    if list(data_class_names) != names:
        raise CheckpointError(
            f"{ckpt.path}: the model predicts {len(names)} classes ({', '.join(names)}) but the data has "
            f"{len(data_class_names)} ({', '.join(data_class_names)}); use data whose classes match"
        )


__all__ = ["Checkpoint", "check_classes", "command", "register_checkpoint_configs"]
