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
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from segvn.data.unlabelled import UNLABELLED_DEFAULTS
from segvn.errors import CheckpointError, ConfigError, SegvnError
from segvn.inference.exported import is_exported_file, read_model_source
from segvn.models.checkpoint import FROZEN_STAGES, MOVED_MODEL_SETTINGS, Checkpoint, pop_moved_settings
from segvn.utils.config import CONF_DIR, CONFIG_MODULE, CONFIG_PATH
from segvn.utils.run import fail, make_output_dir, run_task, warn
from segvn.utils.schema import check_bounds, check_numbers

log = logging.getLogger("segvn")

_HELP_FLAGS = ("--help", "-h", "--info", "--hydra-help", "--cfg", "-c")


def _arg(argv: list[str], key: str) -> str | None:
    for a in argv:
        if a.startswith(f"{key}="):
            return a.split("=", 1)[1]
    return None


def register_checkpoint_configs(ckpt: Checkpoint) -> None:
    """The checkpoint's ``data`` and ``model`` configs as the Hydra options ``data=checkpoint``/``model=checkpoint``.

    A data config stored before ``data.unlabelled`` existed gets its defaults, so ``data.unlabelled.X=...``
    can be set on the command line for any teacher.
    """
    stored = ckpt.config
    cs = ConfigStore.instance()
    for group in ("data", "model"):
        node = stored.get(group)
        if node is not None:
            container = OmegaConf.to_container(node)
            if group == "data" and isinstance(container, dict):
                container.setdefault("unlabelled", dict(UNLABELLED_DEFAULTS))
            cs.store(group=group, name="checkpoint", node=OmegaConf.create(container))


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
        fail(f"ckpt_path=PATH is required: the checkpoint (from segvn.train) to {verb}")
    try:
        ckpt = checkpoint_reader(verb, exports)(path)
    except SegvnError as err:
        fail(str(err))
    register_checkpoint_configs(ckpt)
    return ckpt


RESUME_CONFIG = "segvn_resume"

_CHECKED: dict[str, tuple[Any, Checkpoint]] = {}


def frozen_stages(cfg: DictConfig) -> int:
    """The encoder stages a training config freezes: ``callbacks.freeze_encoder.frozen_stages`` where that
    callback is configured, else 0."""
    node = OmegaConf.select(cfg, FROZEN_STAGES.rsplit(".", 1)[0], default=None)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return 0
    return int(node.get("frozen_stages", 0) or 0)


def resumable_checkpoint(
    path: str | Path, model_cfg: DictConfig, module: Any = None, frozen: int | None = None
) -> Checkpoint:
    """``path`` read and checked to go on training the model of ``model_cfg``: :class:`CheckpointError` if not.

    Checks the optimizer groups (:meth:`Checkpoint.require_resumable`, with ``frozen`` encoder stages
    when given) and that the weights fit the network (:meth:`Checkpoint.require_fits`, against
    ``module`` when given). ``resume=`` checks before Hydra starts, so a refused resume writes nothing;
    the training task then takes that checked file (once) instead of reading and checking it again.
    """
    wanted = (OmegaConf.to_container(model_cfg, resolve=True), frozen)
    hit = _CHECKED.pop(str(path), None)
    if hit is not None and hit[0] == wanted:
        return hit[1]
    ckpt = Checkpoint.read(path)
    ckpt.require_resumable(model_cfg, frozen)
    ckpt.require_fits(model_cfg, module)
    _CHECKED[str(path)] = (wanted, ckpt)
    return ckpt


def _repoint(node: Any, old: list[str], new: str) -> Any:
    """Every string of a plain config equal to or under a path of ``old`` moved to ``new``."""
    if isinstance(node, dict):
        return {k: _repoint(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_repoint(v, old, new) for v in node]
    if isinstance(node, str):
        for prefix in old:
            if node == prefix or node.startswith(prefix.rstrip("/") + "/"):
                return new + node[len(prefix.rstrip("/")) :]
    return node


def moved_setting(key: str, value: Any) -> str:
    """The one-line message for ``model.<key>=value``, a setting that moved to a callback."""
    new = MOVED_MODEL_SETTINGS[key]
    if isinstance(value, bool) or value is None:
        value = {True: "true", False: "false", None: "null"}[value]
    return f"model.{key}={value} was moved: it is {new} now; set {new}={value}"


def check_moved_overrides(argv: list[str]) -> None:
    """Exit with one line naming the new setting for a command-line override of a moved ``model.<key>``.

    Hydra would only say that the key is not in the config.
    """
    for arg in argv[1:]:
        key, _, value = arg.lstrip("+~").partition("=")
        name = key.removeprefix("model.")
        if key.startswith("model.") and name in MOVED_MODEL_SETTINGS:
            fail(moved_setting(name, value))


def _move_stored_settings(cfg: dict[str, Any]) -> None:
    """A run written before the moved model settings: their stored values onto the callbacks that took them over.

    So ``resume=RUN_DIR`` of such a run freezes, orders memory and compiles as the run did. A callback the
    stored config lacks comes from ``conf/callbacks/default.yaml``.
    """
    moved = pop_moved_settings(cfg.get("model"))
    if not moved:
        return
    defaults = OmegaConf.load(Path(CONF_DIR) / "callbacks" / "default.yaml")
    callbacks = cfg.get("callbacks")
    if not isinstance(callbacks, dict):
        callbacks = cfg["callbacks"] = {}
    for setting, value in moved.items():
        _, name, key = setting.split(".")
        node = callbacks.setdefault(name, OmegaConf.to_container(defaults[name]))
        node[key] = value
    warn(
        "resume: the run's config stores settings that have moved; carried over as "
        + ", ".join(f"{k}={v}" for k, v in moved.items())
    )


def _stored_run_config(run_dir: Path, stored: Path) -> dict[str, Any]:
    """The run's config.yaml with every path under its recorded run directory moved to ``run_dir``.

    config.yaml holds resolved absolute paths (``paths.output_dir``, the loggers' save dirs, the
    checkpoint and plot paths); a moved or copied run must write where it now is, never back
    into the directory it was copied from.
    """
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(stored))
    except Exception as err:  # noqa: BLE001 - any YAML problem: one line naming the file
        fail(f"resume={run_dir}: cannot read {stored} ({type(err).__name__}: {str(err).splitlines()[0]})")
    if not isinstance(cfg, dict):
        fail(f"resume={run_dir}: {stored} is not a segvn.train config")
    recorded = (cfg.get("paths") or {}).get("output_dir")
    if isinstance(recorded, str) and recorded:
        old = {recorded, str(Path(recorded).expanduser().resolve())}
        cfg = _repoint(cfg, sorted(old, key=len, reverse=True), str(run_dir))
    ckpt = cfg.get("ckpt_path")
    if isinstance(ckpt, str) and Path(ckpt).is_relative_to(run_dir) and not Path(ckpt).is_file():
        cfg["ckpt_path"] = None  # an earlier resume's last.ckpt, gone: resume picks it again below
    cfg["resume"] = str(run_dir)
    _move_stored_settings(cfg)
    return cfg


def _check_resume(argv: list[str], ckpt_path: str) -> None:
    """Compose the resumed config as Hydra will and refuse (exit 1, nothing written) a checkpoint that cannot go on."""
    from hydra import compose, initialize_config_module

    overrides = [a for a in argv[1:] if not a.startswith("-")]
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            cfg = compose(config_name=RESUME_CONFIG, overrides=overrides)
        resumable_checkpoint(ckpt_path, cfg.model, frozen=frozen_stages(cfg))
    except SegvnError as err:
        fail(str(err))
    except Exception:  # noqa: BLE001 - a bad override or model setting: Hydra and the task report it
        return


def prepare_resume(argv: list[str]) -> str | None:
    """For ``resume=RUN_DIR``: the run's stored config as the primary config, its directory and last.ckpt.

    Rewrites ``argv`` in place (``hydra.run.dir=RUN_DIR``, ``ckpt_path=RUN_DIR/checkpoints/last.ckpt``
    when it exists) and returns the config name to compose, or ``None`` without ``resume=``.
    Command-line overrides still win over the stored values. Every stored path under the run's
    recorded directory follows RUN_DIR, so a moved or copied run resumes where it now is. The
    checkpoint is checked against the model (overrides applied) before anything is written.
    """
    value = _arg(argv[1:], "resume")
    if value in (None, "", "null", "None"):
        return None
    run_dir = Path(value).expanduser().resolve()
    stored = run_dir / "config.yaml"
    if not stored.is_file():
        fail(f"resume={value}: {stored} not found; give the directory of a segvn.train run")
    cfg = _stored_run_config(run_dir, stored)
    node = OmegaConf.create({"defaults": [{"hydra": "default"}, "_self_"], **cfg})
    ConfigStore.instance().store(name=RESUME_CONFIG, node=node)
    argv.append(f"hydra.run.dir={run_dir}")
    last = run_dir / "checkpoints" / "last.ckpt"
    if _arg(argv[1:], "ckpt_path") is None:
        if last.is_file():
            argv.append(f"ckpt_path={last}")
        else:
            warn(f"resume: {run_dir} has no checkpoints/last.ckpt yet: the run starts again from epoch 0")
    ckpt_path = _arg(argv[1:], "ckpt_path") or cfg.get("ckpt_path")
    if ckpt_path not in (None, "", "null", "None"):
        _check_resume(argv, str(ckpt_path))
    return RESUME_CONFIG


def check_settings(cfg: DictConfig) -> None:
    """Before any set-up: no moved model setting (e.g. in a config file of one's own), every numeric
    setting holds a number in its schema's range, and ``paths.output_dir`` can be created."""
    model = cfg.get("model")
    for key in MOVED_MODEL_SETTINGS:
        if isinstance(model, DictConfig) and key in model:
            raise ConfigError(
                moved_setting(key, OmegaConf.select(model, key, throw_on_resolution_failure=False))
            )
    check_numbers(cfg)
    check_bounds(cfg)
    out = OmegaConf.select(cfg, "paths.output_dir", default=None, throw_on_resolution_failure=False)
    if out:
        make_output_dir(str(out), "paths.output_dir")


_OVERRIDE_ERROR = re.compile(r"^Error merging override (?P<key>[^=\s]+)=(?P<value>.*)$")
_REPEATED_VALUE = re.compile(r"^(Invalid value|Value) '.*?'( of type '\w+')?,? ")


def composition_error_line(err: BaseException) -> str:
    """One line for an error of Hydra's composition: ``setting='value': what was expected``.

    ``runtime=tensorrt`` against the schema's enum gives ``runtime='tensorrt': expected one of [auto,
    torch, onnx, torchscript]``; ``batch_size=abc`` gives ``batch_size='abc': could not be converted to
    Integer``. Other composition errors keep Hydra's text, on one line, with OmegaConf's reason after it.
    """
    text = " ".join(str(err).split())
    cause = err.__cause__
    reason = " ".join(str(cause).strip().split("\n")[0].split()) if cause is not None else ""
    override = _OVERRIDE_ERROR.match(text)
    if override and reason:
        return f"{override['key']}={override['value']!r}: {_REPEATED_VALUE.sub('', reason)}"
    return f"{text}; {reason}" if reason else text


def run_hydra(main: Callable[[], Any]) -> Any:
    """Run a Hydra main; a setting that does not fit the config's schema ends in one error line.

    Hydra prints composition errors (``batch_size=abc`` against a typed schema) over several lines
    without saying "error"; here they are caught (Hydra re-raises them under ``HYDRA_FULL_ERROR``) and
    shown as one line naming the setting (:func:`composition_error_line`). Any other exception keeps
    its traceback.
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
        fail(composition_error_line(err))
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
            check_moved_overrides(sys.argv)
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


__all__ = ["Checkpoint", "command", "frozen_stages", "register_checkpoint_configs", "resumable_checkpoint"]
