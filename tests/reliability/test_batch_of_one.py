"""Training never dies on a batch of one: an odd-sized real training set trains through its epoch end.

DeepLabV3+'s image-pooling branch has a BatchNorm after global pooling, which cannot normalise one
value per channel: a last training batch of one sample crashed at the end of the first epoch, before
any checkpoint. The training loader drops an incomplete last batch; ``data.batch_size=1`` and a
training set smaller than the batch are refused at set-up with one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ..conftest import TINY_TRAIN
from .conftest import Probe, run_segvn

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

TINY = (*TINY_TRAIN, "data.source.train=[0001TP]")
"""The tests' tiny training on one training street: the subsets below hold only 0001TP and 0016E5."""


def _camvid_subset(camvid_root: Path, root: Path, train: int, val: int = 2) -> Path:
    """A CamVid-layout data root holding the first ``train`` frames of 0001TP and ``val`` of 0016E5 (real files)."""
    for folder, street, n in (("train", "0001TP", train), ("val", "0016E5", val)):
        (root / folder).mkdir(parents=True)
        (root / f"{folder}annot").mkdir()
        for frame in sorted((camvid_root / folder).glob(f"{street}_*.png"))[:n]:
            shutil.copy(frame, root / folder / frame.name)
            shutil.copy(camvid_root / f"{folder}annot" / frame.name, root / f"{folder}annot" / frame.name)
    return root


def test_three_real_frames_with_batches_of_two_train_through_the_epoch_end(
    camvid_root: Path, tmp_path: Path, probe: Probe
) -> None:
    data = _camvid_subset(camvid_root, tmp_path / "data", train=3)
    run = tmp_path / "run"
    probe.guard(data)
    proc = run_segvn(
        "train", *TINY, f"data.root={data}", "data.batch_size=2", f"hydra.run.dir={run}", root=tmp_path
    )
    probe.expect_ok(proc)
    assert "data: train=3," in proc.stdout + proc.stderr
    assert (run / "checkpoints" / "last.ckpt").is_file()
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["global_step"] == 1, "one full batch of two; the last frame is left for the next epoch"


def test_a_batch_size_of_one_is_refused_at_set_up(camvid_root: Path, tmp_path: Path, probe: Probe) -> None:
    data = _camvid_subset(camvid_root, tmp_path / "data", train=3)
    run = tmp_path / "run"
    probe.guard(data)
    proc = run_segvn(
        "train", *TINY, f"data.root={data}", "data.batch_size=1", f"hydra.run.dir={run}", root=tmp_path
    )
    probe.expect_error(proc, "data.batch_size=1", "trainer.accumulate_grad_batches")
    assert not (run / "config.yaml").exists() and not (run / "checkpoints").exists()


def test_a_training_set_smaller_than_the_batch_is_refused(
    camvid_root: Path, tmp_path: Path, probe: Probe
) -> None:
    data = _camvid_subset(camvid_root, tmp_path / "data", train=1)
    run = tmp_path / "run"
    probe.guard(data)
    proc = run_segvn(
        "train", *TINY, f"data.root={data}", "data.batch_size=2", f"hydra.run.dir={run}", root=tmp_path
    )
    probe.expect_error(proc, "1 frame,", "data.batch_size=2")
    assert not (run / "checkpoints" / "last.ckpt").exists()
