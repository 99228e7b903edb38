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
``data=camvid`` replaces it. ``evaluate`` and ``predict`` also take an exported file
(``ckpt_path=model.onnx``): its metadata carry the same configs, and the file is the model.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from segvn.errors import CheckpointError, SegvnError
from segvn.inference.export import is_exported_file, read_model_source
from segvn.models.checkpoint import Checkpoint
from segvn.utils.config import CONFIG_PATH
from segvn.utils.run import make_output_dir, run_task
from segvn.utils.schema import check_numbers

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


def checkpoint_reader(verb: str, exports: bool) -> Callable[[str], Checkpoint]:
    """How ``segvn.<verb>`` reads ``ckpt_path``: exported files too when ``exports`` (evaluate, predict)."""

    def read(path: str) -> Checkpoint:
        if exports:
            return read_model_source(path)
        if is_exported_file(path):
            raise CheckpointError(
                f"{path}: an exported model; segvn.{verb} needs the PyTorch checkpoint (.ckpt) it was exported from"
            )
        return Checkpoint.read(path)

    return read


def _read_checkpoint(verb: str, argv: list[str], exports: bool = False) -> Checkpoint | None:
    if any(a in _HELP_FLAGS or a.startswith("--cfg") for a in argv[1:]):
        return None
    path = _arg(argv[1:], "ckpt_path")
    if path is None:
        _fail(f"ckpt_path=PATH is required: the checkpoint (from segvn.train) to {verb}")
    try:
        ckpt = checkpoint_reader(verb, exports)(path)
    except SegvnError as err:
        _fail(str(err))
    register_checkpoint_configs(ckpt)
    return ckpt


RESUME_CONFIG = "segvn_resume"
MODEL_KEYS = ("model.", "data.image_size", "data.class_names")
"""Overrides that change the network a resumed checkpoint must fit: a resume warns about them."""


def prepare_resume(argv: list[str]) -> str | None:
    """For ``resume=RUN_DIR``: the run's stored config as the primary config, its directory and last.ckpt.

    Rewrites ``argv`` in place (``hydra.run.dir=RUN_DIR``, ``ckpt_path=RUN_DIR/checkpoints/last.ckpt``
    when it exists) and returns the config name to compose, or ``None`` without ``resume=``.
    Command-line overrides still win over the stored values.
    """
    value = _arg(argv[1:], "resume")
    if value in (None, "", "null", "None"):
        return None
    run_dir = Path(value).expanduser().resolve()
    stored = run_dir / "config.yaml"
    if not stored.is_file():
        _fail(f"resume={value}: {stored} not found; give the directory of a segvn.train run")
    cfg = OmegaConf.load(stored)
    cfg.resume = str(run_dir)
    node = OmegaConf.create({"defaults": [{"hydra": "default"}, "_self_"], **OmegaConf.to_container(cfg)})
    ConfigStore.instance().store(name=RESUME_CONFIG, node=node)
    argv.append(f"hydra.run.dir={run_dir}")
    last = run_dir / "checkpoints" / "last.ckpt"
    if _arg(argv[1:], "ckpt_path") is None:
        if last.is_file():
            argv.append(f"ckpt_path={last}")
        else:
            _warn(f"resume: {run_dir} has no checkpoints/last.ckpt yet: the run starts again from epoch 0")
    for a in argv[1:]:
        if a.split("=", 1)[0].lstrip("+~").startswith(MODEL_KEYS):
            _warn(f"resume: {a} changes the model of the run; the checkpoint's weights must still fit it")
    return RESUME_CONFIG


def _warn(message: str) -> None:
    print(f"[segvn] WARNING {message}", file=sys.stderr)


def check_settings(cfg: DictConfig) -> None:
    """Before any set-up: every numeric setting holds a number, and ``paths.output_dir`` can be created."""
    check_numbers(cfg)
    out = OmegaConf.select(cfg, "paths.output_dir", default=None, throw_on_resolution_failure=False)
    if out:
        make_output_dir(str(out), "paths.output_dir")


def run_hydra(main: Callable[[], Any]) -> Any:
    """Run a Hydra main; a setting that does not fit the config's schema ends in one error line.

    Hydra prints composition errors (``batch_size=abc`` against a typed schema) over several lines
    without saying "error"; here they are caught (Hydra re-raises them under ``HYDRA_FULL_ERROR``) and
    shown as one line naming the setting. Any other exception keeps its traceback.
    """
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import OmegaConfBaseException

    user_full = os.environ.get("HYDRA_FULL_ERROR") == "1"  # Hydra's own test of the variable
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return main()
    except (ConfigCompositionException, OmegaConfBaseException) as err:
        if user_full:
            raise
        text = " ".join(str(err).split())
        if isinstance(
            err.__cause__, OmegaConfBaseException
        ):  # the why, without its full_key/object_type lines
            text += "; " + " ".join(str(err.__cause__).strip().split("\n")[0].split())
        print(f"[segvn] ERROR {text}", file=sys.stderr)
        sys.exit(1)
    finally:
        if not user_full:
            os.environ.pop("HYDRA_FULL_ERROR", None)


def command(
    config_name: str, from_checkpoint: bool = False, exports: bool = False
) -> Callable[[Callable[..., Any]], Callable[[], Any]]:
    """Decorate ``task(cfg)`` (or ``task(cfg, ckpt)`` with ``from_checkpoint``) into a command's ``main()``.

    ``exports``: ``ckpt_path`` may also be an exported file (ONNX/TorchScript from ``segvn.export``).
    """

    def wrap(task: Callable[..., Any]) -> Callable[[], Any]:
        loaded: dict[str, Checkpoint] = {}

        def hydra_task(cfg: DictConfig) -> Any:
            run_task(check_settings, cfg)
            if not from_checkpoint:
                return run_task(task, cfg)
            path = str(cfg.ckpt_path)
            if path not in loaded:  # a sweep over ckpt_path: read each file once
                loaded[path] = run_task(checkpoint_reader(config_name, exports), path)
            return run_task(task, cfg, loaded[path])

        @functools.wraps(task)
        def main() -> Any:
            name = config_name
            if from_checkpoint:
                ckpt = _read_checkpoint(config_name, sys.argv, exports)
                if ckpt is not None:
                    loaded[str(_arg(sys.argv[1:], "ckpt_path"))] = ckpt
            elif config_name == "train":
                name = prepare_resume(sys.argv) or config_name
            return run_hydra(
                hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=name)(hydra_task)
            )

        return main

    return wrap


__all__ = ["Checkpoint", "command", "register_checkpoint_configs"]
