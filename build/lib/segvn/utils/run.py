"""Running a task so that bad input ends in one clear message, not a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from segvn.errors import SegvnError

log = logging.getLogger("segvn")


def run_task(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; a :class:`~segvn.errors.SegvnError` is logged as one line and exits with status 1.

    Whatever the task wrote before the error (checkpoints, frames, partial reports) stays. An open
    W&B run is finished either way, so the next job of a sweep starts a run of its own.
    """
    try:
        return fn(*args, **kwargs)
    except SegvnError as err:
        log.error("%s", err)
        sys.exit(1)
    finally:
        try:
            import wandb

            if wandb.run is not None:
                wandb.finish()
        except ImportError:  # pragma: no cover
            pass
