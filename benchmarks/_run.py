"""What the benchmark protocols share: the repository, the shared data, and running a segvn command.

A benchmark script's own folder is first on ``sys.path`` when it runs (``python benchmarks/<name>.py``),
so ``from _run import segvn`` finds this module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGVN_SHARED", REPO.parent / "shared"))


def segvn(verb: str, *args: str, log: Path) -> float:
    """Run ``python -m segvn.<verb> ARGS`` (output to ``log``); returns its wall-clock seconds; raises with
    the log's tail when it fails."""
    start = time.perf_counter()
    env = {**os.environ, "WANDB_MODE": "offline", "SEGVN_SHARED": str(SHARED)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", f"segvn.{verb}", *args], cwd=REPO, env=env, stdout=fh, stderr=fh
        )
    if proc.returncode != 0:
        raise SystemExit(f"segvn.{verb} failed (see {log}):\n" + log.read_text()[-3000:])
    return time.perf_counter() - start
