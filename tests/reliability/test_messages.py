"""Wrong or unsafe words: what segvn says about unreadable weights, unsafe legacy checkpoints, a diverged run
without checkpoints, and a truncated frame at the cheap set-up check."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from segvn.data.check import check_source
from segvn.data.sources import StreetFolders
from segvn.errors import SegvnError
from segvn.models.checkpoint import load_checkpoint
from segvn.models.factory import build_network

from .conftest import run_segvn

pytestmark = [pytest.mark.reliability]


class _Payload:
    """Unpickling this would create ``marker``: a file that runs code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


@pytest.fixture
def mobilenet_weights(shared_dir: Path) -> Path:
    path = shared_dir / "weights" / "mobilenet_v2_imagenet.pth"
    if not path.is_file():
        pytest.skip(f"{path} not found; set SEGVN_SHARED to the shared/ folder")
    return path


@pytest.mark.parametrize("damage", ["truncated", "pickled_code", "pickled_code_legacy"])
def test_unreadable_encoder_weights_never_advise_weights_only_false(
    probe, tmp_path, mobilenet_weights, damage
):
    bad = tmp_path / "encoder.pth"
    marker = tmp_path / "code_ran"
    if damage == "truncated":  # the real weights cut in half
        data = mobilenet_weights.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        state = torch.load(mobilenet_weights, map_location="cpu", weights_only=True)
        torch.save(
            {**state, "payload": _Payload(marker)},
            bad,
            _use_new_zipfile_serialization=damage == "pickled_code",
        )
    probe.guard(mobilenet_weights.parent)
    with pytest.raises(SegvnError) as err:
        build_network(encoder_name="mobilenet_v2", encoder_weights=str(bad))
    text = str(err.value)
    assert "weights_only" not in text, text
    assert "not a plain tensor file or state dict" in text
    assert not marker.exists()
    probe.error(err.value, str(bad), "refused to load" if damage != "truncated" else "cannot read weights")


@pytest.mark.slow
def test_malicious_legacy_checkpoint_is_refused_not_called_corrupt(probe, tmp_path, camvid_checkpoint):
    raw = torch.load(camvid_checkpoint, map_location="cpu", weights_only=True)
    marker = tmp_path / "code_ran"
    evil = tmp_path / "legacy.ckpt"
    torch.save(
        {**raw, "payload": _Payload(marker)}, evil, pickle_module=pickle, _use_new_zipfile_serialization=False
    )
    probe.guard(camvid_checkpoint.parent)
    proc = run_segvn("evaluate", f"ckpt_path={evil}", f"hydra.run.dir={tmp_path / 'run'}", root=tmp_path)
    line = probe.expect_error(proc, str(evil), "refused to load")
    assert "corrupt" not in line and "weights_only" not in line
    assert not marker.exists()


def test_truncated_legacy_checkpoint_is_still_called_truncated(probe, tmp_path):
    good = tmp_path / "legacy_full.ckpt"
    torch.save({"state_dict": {"w": torch.arange(100_000.0)}}, good, _use_new_zipfile_serialization=False)
    cut = tmp_path / "legacy_cut.ckpt"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SegvnError) as err:
        load_checkpoint(cut)
    probe.error(err.value, str(cut), "truncated or corrupt")
    assert "weights_only" not in str(err.value)


@pytest.mark.slow
def test_diverged_run_without_checkpoint_says_none_was_written(probe, tmp_path):
    run = tmp_path / "run"
    proc = run_segvn(
        "train", "model.optimizer.lr=1e12", "data.image_size=[64,96]", "data.num_workers=0",
        "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "test=false",
        "logger=csv", f"hydra.run.dir={run}", root=tmp_path,
    )  # fmt: skip
    line = probe.expect_error(proc, "training diverged", "No checkpoint was written")
    assert "kept" not in line
    assert not list(run.rglob("*.ckpt"))


def test_diverged_note_names_the_checkpoints_that_exist(tmp_path):
    from segvn.callbacks.checkpoints import kept_note

    assert kept_note([tmp_path / "absent"]) == "No checkpoint was written before this step."
    (tmp_path / "last.ckpt").write_bytes(b"x")
    assert str(tmp_path / "last.ckpt") in kept_note([tmp_path]) and "kept" in kept_note([tmp_path])


@pytest.mark.parametrize("damaged", ["frame", "label"])
def test_cheap_check_catches_a_png_cut_in_half(probe, tmp_path, camvid_root, damaged):
    """The set-up check of training (level=cheap) must not pass a truncated PNG to the first batch."""
    root = tmp_path / "data"
    frames = sorted((camvid_root / "train").glob("0001TP_*.png"))[:3]
    for name, src in (("frames", camvid_root / "train"), ("labels", camvid_root / "trainannot")):
        (root / "street" / name).mkdir(parents=True)
        for frame in frames:
            shutil.copy(src / frame.name, root / "street" / name / frame.name)
    cut = root / "street" / ("frames" if damaged == "frame" else "labels") / frames[1].name
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    source = StreetFolders(root, train=["street"], val=[], test=[], predict=[])
    report = check_source(source, splits=["train"], level="cheap")
    found = [f for f in report.errors if f.kind == "unreadable"]
    if not found:
        probe.wrong(f"the cheap check passed {cut}, a PNG cut in half")
    assert [f.path for f in found] == [str(cut)]
    assert "truncated" in found[0].message
    probe.ran()
