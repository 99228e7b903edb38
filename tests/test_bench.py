"""``make bench QUICK=1``: every benchmark still runs and writes its figures (tiny sizes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, SHARED_DIR


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_benchmarks_run(camvid_root: Path, video_path: Path, tmp_path: Path) -> None:
    env = {**os.environ, "SEGVN_SHARED": str(SHARED_DIR), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--out", str(tmp_path)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    doc = json.loads((tmp_path / "quick.json").read_text())
    assert doc["machine"]["cores"] and doc["quick"] is True
    ran = {name: e for name, e in doc["benchmarks"].items() if e["status"] != "missing"}
    assert {"train_throughput", "bfscore", "decode", "predict"} <= set(ran)
    assert all(e["status"] == "ok" and e["headline"] for e in ran.values()), ran
    assert ran["bfscore"]["result"]["max_abs_delta"] == 0.0, "BF score equals the scipy reference"
    table = (tmp_path / "quick.md").read_text()
    assert "| train_throughput | segvn / plain loop =" in table


@pytest.mark.timeout(300)
def test_profile_onnx_names_the_operators() -> None:
    """``benchmarks/profile_onnx.py`` (not in ``make bench``) still exports, profiles and reports."""
    proc = subprocess.run(
        [sys.executable, "benchmarks/profile_onnx.py", "--size", "64x96", "--iters", "1", "--warmup", "0"],
        cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    ops = dict(line.split()[:2] for line in proc.stdout.splitlines() if line.startswith("  ") and "%" in line)
    assert "Conv" in ops and float(ops["Conv"].rstrip("%")) > 50, proc.stdout
    assert "slowest nodes:" in proc.stdout
