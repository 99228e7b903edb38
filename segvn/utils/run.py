"""Running a task so that bad input ends in one clear message, not a traceback.

A single run (``python -m segvn.<verb> ...``) exits with status 1 on a
:class:`~segvn.errors.SegvnError`. A job of a multirun (``-m``) must not end the whole sweep, so
there the error becomes a :class:`SweepJobError`: Hydra records the job as failed, the other jobs
run, the sweep summary (:mod:`segvn.utils.sweep`) lists it, and the multirun exits non-zero at the end.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from hydra.errors import CompactHydraException, InstantiationException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from segvn.errors import ConfigError, SegvnError

log = logging.getLogger("segvn")


class SweepJobError(CompactHydraException):
    """A job of a multirun failed on bad input (already logged as one line).

    A :class:`~hydra.errors.CompactHydraException`, so when Hydra's basic sweeper re-raises it after
    all jobs of the batch have run, the command ends with this one line (no traceback) and status 1.
    Not a :class:`SegvnError`, so a :func:`run_task` around it lets it through unchanged.
    """


def _exit_logger() -> logging.Logger:
    """``[segvn] LEVEL message`` on stderr, whatever logging Hydra (or nobody) has set up yet."""
    logger = logging.getLogger("segvn.exit")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[segvn] %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return logger


def fail(err: SegvnError | str) -> NoReturn:
    """The exit of a user error outside a task (before Hydra starts, or where Hydra cannot run the task):
    one ERROR line and status 1. Inside a task, :func:`run_task` does the same."""
    _exit_logger().error("%s", err)
    sys.exit(1)


def warn(message: str) -> None:
    """A warning outside a task (before Hydra has set up the run's logging)."""
    _exit_logger().warning("%s", message)


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun (``-m``, any launcher)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # pragma: no cover - a half-set HydraConfig
        return False


def user_error_in(err: BaseException) -> SegvnError | None:
    """The :class:`SegvnError` behind ``err`` (its ``__cause__``/``__context__`` chain), if any."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, SegvnError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def run_task(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; a :class:`~segvn.errors.SegvnError` is logged as one line and exits with status 1.

    In a multirun job it raises :class:`SweepJobError` instead (the sweep goes on), and a
    ``sys.exit`` with a non-zero status inside the task becomes one too. Whatever the task wrote
    before the error (checkpoints, frames, partial reports) stays. An open W&B run is finished
    either way, so the next job of a sweep starts a run of its own.
    """
    failed = True
    try:
        try:
            out = fn(*args, **kwargs)
        except InstantiationException as err:  # hydra.utils.instantiate wraps the error of a constructor
            cause = user_error_in(err)
            if cause is None:
                raise
            raise cause from err
        failed = False
        return out
    except SegvnError as err:
        log.error("%s", err)
        if in_multirun():
            raise SweepJobError(str(err)) from err
        sys.exit(1)
    except SystemExit as exc:
        if exc.code in (0, None) or not in_multirun():
            raise
        raise SweepJobError(f"the job exited with status {exc.code}") from exc
    finally:
        try:
            import wandb

            if wandb.run is not None:
                wandb.finish(exit_code=1 if failed else 0)  # a failed job shows as failed in W&B
        except ImportError:  # pragma: no cover
            pass


def make_output_dir(path: str | Path, setting: str) -> Path:
    """Create the folder a command writes to; a :class:`ConfigError` naming ``setting=path`` when it cannot be.

    Under a regular file, in a read-only folder, or a name the file system refuses: one line saying which
    part is in the way, instead of the ``NotADirectoryError`` / ``PermissionError`` of the first write.
    """
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not path.is_dir():
            raise NotADirectoryError(f"{path} is a file")
    except OSError as err:
        blocker = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), None)
        if blocker is not None and not blocker.is_dir():
            why = f"{blocker} is a file, not a folder"
        else:
            why = err.strerror or str(err)
            if err.filename:
                why = f"{why}: {err.filename}"
        raise ConfigError(
            f"{setting}={path}: cannot create this output folder ({why}); give a folder you can write to"
        ) from None
    return path


class RunDirCheck(Callback):
    """Create Hydra's run (or sweep) directory before Hydra does, so an unusable one is one error line.

    Hydra's own ``mkdir`` fails with a traceback; this runs first (``on_run_start`` /
    ``on_multirun_start``, on the same config, so ``${now:}`` and ``${segvn.unique:}`` give the same path).
    """

    def _check(self, config: DictConfig, key: str) -> None:
        path = OmegaConf.select(config, key)
        if path in (None, ""):
            return
        try:
            make_output_dir(str(path), key)
        except ConfigError as err:  # before Hydra has set up the job's logging
            fail(err)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")
