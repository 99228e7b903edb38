"""What the benchmark protocols share: the repository, the shared data, and running a segvn command.

A benchmark script's own folder is first on ``sys.path`` when it runs (``python benchmarks/<name>.py``),
so ``from _run import segvn`` finds this module.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGVN_SHARED", REPO.parent / "shared"))


def segvn(verb: str, *args: str, log: Path, clock: str = "wall") -> float:
    """Run ``python -m segvn.<verb> ARGS`` (output to ``log``); returns its seconds on ``clock`` (``wall``, or
    ``cpu``: its own CPU time and its finished children's, e.g. data workers); raises with the log's tail
    when it fails. Both figures are also written beside the log (``LOG.cost.json``, read by :func:`cost`),
    so a continued benchmark reads them back."""
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "WANDB_MODE": "offline", "SEGVN_SHARED": str(SHARED)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", f"segvn.{verb}", *args], cwd=REPO, env=env, stdout=fh, stderr=fh
        )
    if proc.returncode != 0:
        raise SystemExit(f"segvn.{verb} failed (see {log}):\n" + log.read_text()[-3000:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = {
        "wall_s": time.perf_counter() - start,
        "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    }
    log.with_suffix(".cost.json").write_text(json.dumps(spent))
    return spent["cpu_s" if clock == "cpu" else "wall_s"]


def cost(log: Path) -> dict[str, float]:
    """What the command logged to ``log`` cost: ``wall_s`` and ``cpu_s`` (empty if it never ran here)."""
    path = log.with_suffix(".cost.json")
    return json.loads(path.read_text()) if path.is_file() else {}
