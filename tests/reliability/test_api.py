"""Probes of the Python API: bad files and folders given to ``segvn.load_model`` / ``predict`` /
``predict_video`` end in one-line ``SegvnError`` s naming them, and nothing is written beside ``out``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import segvn

pytestmark = [pytest.mark.reliability]


@pytest.fixture(scope="module")
def model(camvid_checkpoint: Path) -> segvn.SegvnModel:
    return segvn.load_model(camvid_checkpoint, device="cpu", runtime="torch")


def _outside(tmp_path: Path) -> Path:
    """A sibling folder with a file, which no call may touch."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    return outside


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["missing", "folder", "truncated", "garbage_onnx", "empty"])
def test_a_bad_model_file(probe, camvid_checkpoint: Path, tmp_path: Path, kind: str) -> None:
    probe.guard(_outside(tmp_path))
    path = tmp_path / "model.ckpt"
    if kind == "folder":
        path.mkdir()
    elif kind == "truncated":
        data = camvid_checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "garbage_onnx":
        path = tmp_path / "model.onnx"
        path.write_bytes(np.random.default_rng(0).bytes(2048))
    elif kind == "empty":
        path.write_bytes(b"")
    with pytest.raises(Exception) as err:
        segvn.load_model(path, device="cpu")
    probe.error(err.value, str(path))


@pytest.mark.slow
@pytest.mark.parametrize("setting", [{"image_size": [64]}, {"temporal": {"ema": 2.0}}, {"device": "gpu7"}])
def test_a_bad_setting(probe, camvid_checkpoint: Path, setting: dict) -> None:
    with pytest.raises(Exception) as err:
        segvn.load_model(camvid_checkpoint, **setting)
    probe.error(err.value, next(iter(setting)))


@pytest.mark.slow
def test_a_truncated_image(probe, model: segvn.SegvnModel, camvid_root: Path, tmp_path: Path) -> None:
    probe.guard(_outside(tmp_path))
    source = sorted((camvid_root / "val").glob("*.png"))[0]
    broken = tmp_path / "broken.png"
    broken.write_bytes(source.read_bytes()[:200])
    with pytest.raises(Exception) as err:
        model.predict([source, broken])
    probe.error(err.value, str(broken))


@pytest.mark.slow
def test_a_truncated_video_keeps_its_frames_in_out(
    probe, model: segvn.SegvnModel, video_path: Path, tmp_path: Path
) -> None:
    probe.guard(_outside(tmp_path))
    video = tmp_path / "in" / "clip.mp4"
    video.parent.mkdir()
    data = video_path.read_bytes()
    video.write_bytes(data[: len(data) // 8])
    out = tmp_path / "out"
    with pytest.raises(Exception) as err:
        model.predict_video(video, out=out)
    probe.error(err.value, str(video), str(out))
    assert (out / "clip_overlay.mp4").is_file() and (out / "summary.json").is_file()
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["clip.mp4"]


@pytest.mark.slow
def test_out_is_a_file(probe, model: segvn.SegvnModel, video_path: Path, tmp_path: Path) -> None:
    probe.guard(_outside(tmp_path))
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an older file")
    with pytest.raises(Exception) as err:
        model.predict_video(video_path, out=out, max_frames=2)
    probe.error(err.value, str(out))
    assert out.read_bytes() == b"an older file"


@pytest.mark.slow
def test_overlay_of_labels_of_another_frame(probe, model: segvn.SegvnModel, tmp_path: Path) -> None:
    frame = np.zeros((48, 64, 3), np.uint8)
    Image.fromarray(frame).save(tmp_path / "frame.png")
    with pytest.raises(Exception) as err:
        segvn.overlay(tmp_path / "frame.png", model.predict(frame.transpose(1, 0, 2)))
    probe.error(err.value, "labels")
