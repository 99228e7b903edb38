"""``make bench QUICK=1``: every benchmark still runs and writes its figures (tiny sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run_python


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_benchmarks_run(camvid_root: Path, video_path: Path, tmp_path: Path) -> None:
    proc = run_python(
        "benchmarks/run.py", "--quick", "--out", str(tmp_path), timeout=900, env={"OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    doc = json.loads((tmp_path / "quick.json").read_text())
    assert doc["machine"]["cores"] and doc["quick"] is True
    ran = {name: e for name, e in doc["benchmarks"].items() if e["status"] != "missing"}
    assert {"train_throughput", "bfscore", "decode", "predict"} <= set(ran)
    assert all(e["status"] == "ok" and e["headline"] for e in ran.values()), ran
    assert ran["bfscore"]["result"]["max_abs_delta"] == 0.0, "BF score equals the scipy reference"
    table = (tmp_path / "quick.md").read_text()
    assert "| train_throughput | segvn / plain loop =" in table


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_profile_onnx_names_the_operators() -> None:
    """``benchmarks/profile_onnx.py`` (not in ``make bench``) still exports, profiles and reports."""
    proc = run_python(
        "benchmarks/profile_onnx.py", "--size", "64x96", "--iters", "1", "--warmup", "0",
        timeout=300, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    ops = dict(line.split()[:2] for line in proc.stdout.splitlines() if line.startswith("  ") and "%" in line)
    assert "Conv" in ops and float(ops["Conv"].rstrip("%")) > 50, proc.stdout
    assert "slowest nodes:" in proc.stdout
