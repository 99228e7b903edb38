"""Running a task so that bad input ends in one clear message, not a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from segvn.data.errors import SegvnDataError
from segvn.data.video import SegvnVideoError
from segvn.models.checkpoint import CheckpointError
from segvn.models.weights import WeightsError

log = logging.getLogger("segvn")

USER_ERRORS: tuple[type[BaseException], ...] = (
    SegvnDataError,
    SegvnVideoError,
    CheckpointError,
    WeightsError,
    FileNotFoundError,
)


def run_task(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; a user error (bad data, weights, paths) is logged and exits with status 1.

    Whatever the task wrote before the error (checkpoints, frames, partial reports) stays.
    """
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS as err:
        log.error("%s", err)
        sys.exit(1)
    finally:
        try:
            import wandb

            if wandb.run is not None:
                wandb.finish()
        except ImportError:  # pragma: no cover
            pass
