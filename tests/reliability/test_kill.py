"""Killed at a random point, a run leaves every artefact whole or absent, and a re-run completes the work.

Each probe starts a real command (a tiny training on real CamVid frames, a prediction of a folder of real
frames), waits until it has set up, kills it with SIGKILL at a random moment within the next seconds (the
seed is in the test id, so a failure can be replayed; ``SEGVN_KILL_REPEATS=N`` tries N times as many
points), checks every file it left (checkpoints load,
JSON/YAML/CSV parse, PNGs decode to the end), then runs the command again and checks it finished.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from ..conftest import REPO_ROOT, run_segvn, segvn_env

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

TINY_TRAIN = (
    "+experiment=resnet18",
    "data=camvid_streets",
    "data.image_size=[64,96]",
    "data.num_workers=0",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "callbacks.last_checkpoint.every_n_train_steps=1",
    "test=false",
    "logger=csv",
)


REPEATS = int(os.environ.get("SEGVN_KILL_REPEATS", "1"))
"""``make reliability`` kills each command at more random points than the default suite does."""


def _seeds(first: int, count: int) -> list[int]:
    return list(range(first, first + count * REPEATS))


def _start(verb: str, *args: str, root: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", f"segvn.{verb}", *args]
    return subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=segvn_env(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _kill_after_setup(proc: subprocess.Popen, ready: Path, seed: int, window: float) -> bool:
    """SIGKILL ``proc`` a random time (within ``window`` s) after ``ready`` appears; True if it was killed."""
    deadline = time.monotonic() + 300
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(seed).uniform(0.0, window))
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    return True


def _whole_or_absent(run_dir: Path) -> list[str]:
    """Every artefact under ``run_dir`` that is not whole (temporary ``.*.tmp`` files are not artefacts)."""
    from segvn.models.checkpoint import Checkpoint

    broken = []
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        try:
            if path.suffix == ".ckpt":
                Checkpoint.read(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".yaml":
                yaml.safe_load(path.read_text())
            elif path.suffix == ".csv":
                rows = list(csv.reader(path.read_text().splitlines()))
                if rows and any(len(r) != len(rows[0]) for r in rows):
                    raise ValueError("ragged rows")
            elif path.suffix == ".png":
                with Image.open(path) as img:
                    img.load()
        except Exception as err:  # any failure to read is what this probe looks for
            broken.append(f"{path.relative_to(run_dir)}: {type(err).__name__}: {err}")
    return broken


def _kill_and_rerun(
    probe,
    tmp_path: Path,
    verb: str,
    first: tuple[str, ...],
    again: tuple[str, ...],
    ready: Path,
    artefacts: Path,
    seed: int,
    window: float,
    guard: Path | None = None,
) -> None:
    """Start ``segvn.<verb> first``, kill it once ``ready`` exists, check ``artefacts``, run ``again`` to the end."""
    proc = _start(verb, *first, root=tmp_path)
    assert _kill_after_setup(proc, ready, seed, window), "ended before the kill"
    broken = _whole_or_absent(artefacts)
    if broken:
        probe.wrong(f"half-written artefacts after a kill: {broken}")
    if guard is not None:
        probe.guard(guard)
    done = run_segvn(verb, *again, root=tmp_path, timeout=600)
    probe.expect_ok(done)
    assert not _whole_or_absent(artefacts)


@pytest.mark.parametrize("seed", _seeds(11, 2))
def test_killed_training_is_whole_and_resumes(camvid_root: Path, tmp_path: Path, probe, seed: int) -> None:
    run_dir = tmp_path / "run"
    first = (*TINY_TRAIN, f"seed={seed}", f"hydra.run.dir={run_dir}")
    _kill_and_rerun(
        probe, tmp_path, "train", first, (f"resume={run_dir}",), run_dir / "config.yaml", run_dir, seed, 10.0
    )
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["global_step"] == 9, summary


@pytest.mark.parametrize("seed", _seeds(21, 1))
def test_killed_folder_prediction_is_whole_and_completes(
    camvid_root: Path, camvid_checkpoint: Path, tmp_path: Path, probe, seed: int
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for src in sorted((camvid_root / "val").glob("*.png"))[:40]:
        shutil.copy(src, frames / src.name)
    run_dir = tmp_path / "pred"
    args = (f"ckpt_path={camvid_checkpoint}", f"input={frames}", "save_labels=true", "progress=false")
    args += (f"hydra.run.dir={run_dir}",)
    _kill_and_rerun(
        probe, tmp_path, "predict", args, args, run_dir / "config.yaml", run_dir, seed, 3.0, guard=frames
    )
    names = {p.stem for p in frames.glob("*.png")}
    assert {p.stem for p in (run_dir / "overlays").glob("*.png")} == names
    assert {p.stem for p in (run_dir / "labels").glob("*.png")} == names
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("seed", _seeds(31, 1))
def test_killed_pseudolabelling_is_whole_and_continues(
    camvid_root: Path, camvid_checkpoint: Path, tmp_path: Path, probe, seed: int
) -> None:
    out = tmp_path / "pseudo"
    args = (
        f"ckpt_path={camvid_checkpoint}",
        f"pool.folders=[{camvid_root / 'val'}]",
        "pool.max_frames=24",
        "data.unlabelled.transductive=true",  # validation frames, on purpose
        f"out={out}",
    )
    first, again = (*args, f"hydra.run.dir={tmp_path / 'run'}"), (*args, f"hydra.run.dir={tmp_path / 'run2'}")
    ready = tmp_path / "run" / "config.yaml"
    _kill_and_rerun(probe, tmp_path, "pseudolabel", first, again, ready, out, seed, 3.0, guard=camvid_root)
    record = json.loads((out / "pseudolabel.json").read_text())
    assert len(record["frames"]) == 24
    assert {p.stem for p in (out / "pseudolabels").glob("*.png")} == set(record["frames"])
