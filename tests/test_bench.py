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


@pytest.mark.slow
@pytest.mark.benchmark
@pytest.mark.timeout(1500)
def test_active_learning_smoke(camvid_root: Path, tmp_path: Path) -> None:
    """``benchmarks/active_learning.py`` end to end at tiny sizes: both policies, 2 rounds, 1 seed, CPU-time
    budgets; the ``next`` policy labels what ``segvn.labels next`` proposed, and labelled frames are links,
    not copies."""
    import csv

    out = tmp_path / "al"
    proc = run_python(
        "benchmarks/active_learning.py", "--size", "64", "96", "--minutes", "0.05", "--clock", "cpu", "--rounds", "2",
        "--seeds", "42", "--max-images", "4", "--train", "data.num_workers=0", "--evaluate", "device=cpu",
        "--next", "device=cpu", "--out", str(out), timeout=1500, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = list(csv.DictReader((out / "active_learning.csv").read_text().splitlines()))
    assert [(r["policy"], r["labelled"]) for r in rows] == [
        ("random", "20"), ("next", "20"), ("random", "40"), ("random", "60"), ("next", "40"), ("next", "60"),
    ]  # fmt: skip
    assert all(0.0 <= float(r["miou"]) <= 1.0 for r in rows)
    assert all(float(r["cpu_minutes"]) > 0 and int(r["steps"]) > 0 for r in rows)
    assert (out / "active_learning.png").stat().st_size > 0
    assert "random's final mIoU" in (out / "active_learning.md").read_text()
    proposed = [
        r["frame"]
        for r in csv.DictReader((out / "work/s42_next_r2/next/next_frames.csv").read_text().splitlines())
    ]
    train = out / "work/s42_next_r2/camvid/train"
    assert len(proposed) == 20 and all((train / f"{stem}.png").is_symlink() for stem in proposed)
    assert all(s.startswith(("0001TP", "0006R0")) for s in proposed)  # the training streets' frames only
    images = [*(out / "work").glob("*/camvid/*/*.png"), *(out / "work").glob("*/street/*/*.png")]
    assert images and all(p.is_symlink() for p in images)


@pytest.mark.slow
@pytest.mark.benchmark
@pytest.mark.timeout(600)
def test_pseudolabel_quality_scores_folders_against_the_labels(
    camvid_root, camvid_checkpoint, tmp_path
) -> None:
    """``benchmarks/pseudolabel_quality.py`` on a few 0016E5 frames: both variants, scores in range, the
    flow variant keeps a subset of the plain one's pixels; the keep sweep agrees with the folder's own
    thresholds and, keeping everything, with the teacher's accuracy."""
    out = tmp_path / "plq"
    proc = run_python(
        "benchmarks/pseudolabel_quality.py", "--ckpt", str(camvid_checkpoint), "--max-frames", "4",
        "--pseudo", "scales=[1.0]", "flip=false", "device=cpu", "--keep-sweep", "0.5", "1.0", "--out", str(out),
        timeout=600,
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    doc = json.loads((out / "pseudolabel_quality.json").read_text())
    plain, flow = doc["plain"]["all"], doc["flow"]["all"]
    assert plain["frames"] == flow["frames"] == 4
    for r in (plain, flow):
        assert 0 <= r["right_kept"] <= r["kept"] <= 1 and 0 <= r["precision"] <= 1
    assert flow["kept"] <= plain["kept"] and doc["flow"]["flow_dropped"] is not None
    assert plain["teacher_accuracy"] == flow["teacher_accuracy"]  # one teacher, the same raw classes
    assert "| flow (all) | 4 |" in (out / "pseudolabel_quality.md").read_text()
    half, whole = doc["keep_sweep"]["rows"]
    # the folder was thresholded at keep=0.5: re-thresholding its raw classes there gives the same score
    assert half["kept"] == pytest.approx(plain["kept"]) and half["precision"] == pytest.approx(
        plain["precision"]
    )
    assert whole["kept"] == pytest.approx(1.0) and whole["precision"] == pytest.approx(
        plain["teacher_accuracy"]
    )


@pytest.mark.slow
@pytest.mark.benchmark
@pytest.mark.timeout(900)
def test_selftrain_continued_compares_both_arms_from_one_model(
    camvid_root, camvid_checkpoint, tmp_path
) -> None:
    """``benchmarks/selftrain_continued.py`` from a real run: the continued run and the student both start
    from the model's weights, every arm is scored, the table compares the student with the continued run."""
    out = tmp_path / "cont"
    tiny = ["data.num_workers=0", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1", "budget.validate_every=null", "test=false"]  # fmt: skip
    proc = run_python(
        "benchmarks/selftrain_continued.py", "--run", str(camvid_checkpoint.parent.parent), "--seed", "1",
        "--recipe", "resnet18_fast", "--size", "64", "96", "--minutes", "30", "--protocols", "inductive",
        "--pool-max-frames", "4", "--pseudo", "scales=[1.0]", "flip=false",
        "--train", *tiny, "--out", str(out),
        timeout=900,
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    doc = json.loads((out / "continued.json").read_text())
    (row,) = doc["rows"]
    assert row["continued"]["steps"] == row["student"]["steps"] == 2
    for arm in ("continued", "student", "model"):
        assert 0 <= row[arm]["miou"] <= 1 and row[arm]["images"] == 153  # the second half of 0016E5
    assert row["relative_gain"] == pytest.approx(row["student"]["miou"] / row["continued"]["miou"] - 1)
    work = out / "work"
    for run in ("s1_continued", "s1_inductive_student"):
        overrides = (work / run / ".hydra" / "overrides.yaml").read_text()
        assert f"init_from={doc['model']}" in overrides
    assert "| 1 | inductive |" in (out / "continued.md").read_text()
    assert (out / "frames_s1.png").stat().st_size > 0
    missing = run_python("benchmarks/selftrain_continued.py", "--run", str(tmp_path), "--out", str(out))
    assert missing.returncode != 0 and "no metrics.json" in missing.stderr
