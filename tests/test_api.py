"""The Python API (``segvn.load_model``, ``SegvnModel.predict`` / ``predict_video``, ``segvn.overlay``) as
users call it: a real checkpoint (``camvid_checkpoint``: two training steps on CamVid at 64x96), real
CamVid frames, the real dash-cam video, and the labels ``python -m segvn.predict`` writes for the same frame.
"""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import segvn
from segvn.errors import CheckpointError, ConfigError, DataError, InputNotFoundError, SegvnError

from .conftest import run_python, run_segvn


@pytest.fixture(scope="module")
def model(camvid_checkpoint: Path) -> segvn.SegvnModel:
    """The checkpoint with the defaults (on the CPU: ONNX Runtime, as the command)."""
    return segvn.load_model(camvid_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def frame_paths(camvid_root: Path) -> list[Path]:
    return sorted((camvid_root / "val").glob("*.png"))[:3]


def _video_frames(path: Path) -> tuple[int, int, int]:
    """(decoded frames, width, height) of a video file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(stream)), stream.width, stream.height


@pytest.mark.slow
def test_import_segvn_is_cheap_and_lazy() -> None:
    code = (
        "import sys, segvn\n"
        "assert 'torch' not in sys.modules and 'segvn.api' not in sys.modules, 'imported eagerly'\n"
        "assert {'load_model', 'overlay', 'SegvnModel', 'SegvnError'} <= set(segvn.__all__)\n"
        "assert 'load_model' in dir(segvn)\n"
        "from segvn import load_model\n"
        "import segvn.api\n"
        "assert load_model is segvn.api.load_model and segvn.overlay is segvn.api.overlay\n"
        "assert 'torch' in sys.modules\n"
        "try:\n    segvn.no_such_name\nexcept AttributeError as err:\n    print(err)\n"
    )
    proc = run_python("-c", code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no_such_name" in proc.stdout


@pytest.mark.slow
def test_docstring_examples_run() -> None:
    """The examples of segvn/api.py (the user guide page) run as written: an untrained checkpoint, no data."""
    import segvn.api

    result = doctest.testmod(segvn.api, optionflags=doctest.ELLIPSIS, raise_on_error=False)
    assert result.failed == 0
    assert result.attempted >= 20, "the examples were not found"


@pytest.mark.slow
def test_labels_are_those_of_the_predict_command(
    model: segvn.SegvnModel, camvid_checkpoint: Path, frame_paths: list[Path], tmp_path: Path
) -> None:
    path = frame_paths[0]
    proc = run_segvn(
        "predict", f"ckpt_path={camvid_checkpoint}", f"input={path}", "save_labels=true",
        f"hydra.run.dir={tmp_path / 'cli'}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = np.asarray(Image.open(tmp_path / "cli" / "labels" / f"{path.stem}.png"))
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    # runtime=auto on a CPU with native bf16 times onnx against torch bf16 in each process: only the
    # same runtime promises the same pixels (bf16 moves a few boundary ones)
    same_runtime = (summary["runtime"], summary["precision"]) == (model.runtime, model.precision)

    rgb = np.asarray(Image.open(path).convert("RGB"))
    for given in (path, str(path), Image.open(path), rgb):
        labels = model.predict(given)
        assert labels.shape == rgb.shape[:2] == expected.shape and labels.dtype == np.uint8
        assert labels.max() < len(model.class_names)
        if same_runtime:
            np.testing.assert_array_equal(labels, expected)
        else:
            assert (labels == expected).mean() > 0.99
    assert model.class_names == summary["class_names"] and summary["image_size"] == [64, 80]
    assert model.palette.shape == (len(model.class_names), 3) and model.palette.dtype == np.uint8
    # the training scale (trained at 64x96): 360x480 -> short side 64, width 85.3 rounded to 16 -> 80
    assert model.training_image_size == (64, 96) and model.input_size(360, 480) == (64, 80)

    labels, probs = model.predict(rgb, probabilities=True)
    np.testing.assert_array_equal(labels, model.predict(rgb))
    assert probs.shape == (len(model.class_names), *rgb.shape[:2]) and probs.dtype == np.float32
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)
    assert (probs.argmax(axis=0) == labels).mean() > 0.999  # up to exact ties


@pytest.mark.slow
def test_a_batch_equals_the_single_calls(model: segvn.SegvnModel, frame_paths: list[Path]) -> None:
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in frame_paths]
    small = np.ascontiguousarray(frames[1][:200, :300])
    singles = [model.predict(f) for f in [*frames, small]]
    listed = model.predict([*frames, small])  # two sizes: batches of one size each
    assert isinstance(listed, list) and len(listed) == 4
    for one, of_batch in zip(singles, listed, strict=True):
        np.testing.assert_array_equal(one, of_batch)
    stacked = model.predict(np.stack(frames))
    assert stacked.shape == (3, 360, 480) and stacked.dtype == np.uint8
    np.testing.assert_array_equal(stacked, np.stack(singles[:3]))
    labels, probs = model.predict(np.stack(frames[:2]), probabilities=True)
    assert labels.shape == (2, 360, 480) and probs.shape == (2, len(model.class_names), 360, 480)
    np.testing.assert_array_equal(labels, stacked[:2])


@pytest.mark.slow
def test_an_exported_onnx_file_agrees_with_its_checkpoint(
    camvid_checkpoint: Path, frame_paths: list[Path], tmp_path: Path
) -> None:
    onnx_path = tmp_path / "model.onnx"
    proc = run_segvn(
        "export", f"ckpt_path={camvid_checkpoint}", f"out={onnx_path}", "verify.frames=2",
        f"hydra.run.dir={tmp_path / 'export'}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    exported = segvn.load_model(onnx_path, device="cpu")
    torch_model = segvn.load_model(camvid_checkpoint, device="cpu", runtime="torch")
    assert exported.runtime == "onnx" and torch_model.runtime == "torch"
    assert exported.class_names == torch_model.class_names
    assert exported.training_image_size == torch_model.training_image_size == (64, 96)
    for path in frame_paths:
        a, b = exported.predict(path), torch_model.predict(path)
        assert a.shape == b.shape == (360, 480)
        assert (a == b).mean() >= 0.99


@pytest.mark.slow
def test_predict_video_writes_the_overlay_video(
    model: segvn.SegvnModel, video_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "labels"
    summary = model.predict_video(video_path, out=out, max_frames=6, save_labels=True)
    video = out / "solidWhiteRight_overlay.mp4"
    assert summary["inputs"][0]["output"] == str(video) and summary["frames"] == 6
    assert _video_frames(video) == (6, 960, 540)
    assert (out / "summary.json").is_file() and (out / "class_shares.csv").is_file()
    labels = sorted((out / "labels" / "solidWhiteRight").glob("*.png"))
    assert len(labels) == 6 and Image.open(labels[0]).size == (960, 540)
    assert summary["class_names"] == model.class_names and summary["image_size"] == [64, 112]


@pytest.mark.slow
def test_overlay_is_an_rgb_picture_of_the_frame(model: segvn.SegvnModel, frame_paths: list[Path]) -> None:
    path = frame_paths[0]
    rgb = np.asarray(Image.open(path).convert("RGB"))
    labels = model.predict(rgb)
    for picture in (
        segvn.overlay(rgb, labels),
        segvn.overlay(path, labels, model.class_names),
        model.overlay(Image.open(path), labels),
    ):
        assert picture.shape == rgb.shape and picture.dtype == np.uint8
        assert (picture != rgb).any()
    np.testing.assert_array_equal(segvn.overlay(rgb, labels, alpha=0.0), rgb)
    # alpha 1 paints each pixel in its class's colour
    painted = segvn.overlay(rgb, labels, model.class_names, alpha=1.0, legend=False)
    np.testing.assert_array_equal(painted, model.palette[labels])


@pytest.mark.slow
def test_bad_inputs_are_one_line_errors_naming_them(
    model: segvn.SegvnModel, camvid_checkpoint: Path, tmp_path: Path
) -> None:
    def one_line(err: pytest.ExceptionInfo, *needles: str) -> None:
        text = str(err.value)
        assert isinstance(err.value, SegvnError) and "\n" not in text, text
        assert all(n in text for n in needles), text

    missing = tmp_path / "no_such.ckpt"
    with pytest.raises(CheckpointError) as err:
        segvn.load_model(missing)
    one_line(err, str(missing), "not found")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(CheckpointError) as err:
        segvn.load_model(garbage)
    one_line(err, str(garbage), "corrupt")
    with pytest.raises(ConfigError) as err:
        segvn.load_model(camvid_checkpoint, batch_size=0)
    one_line(err, "batch_size")
    with pytest.raises(ConfigError) as err:
        segvn.load_model(camvid_checkpoint, batch_sise=4)
    one_line(err, "batch_sise")
    with pytest.raises(ConfigError) as err:
        segvn.load_model(camvid_checkpoint, runtime="tensorrt")
    one_line(err, "runtime", "tensorrt")

    with pytest.raises(InputNotFoundError) as err:
        model.predict(tmp_path / "no_such.png")
    one_line(err, "no_such.png")
    with pytest.raises(DataError) as err:
        model.predict(np.zeros((32, 32, 3), np.float32))
    one_line(err, "uint8", "float32")
    with pytest.raises(DataError) as err:
        model.predict([])
    one_line(err, "no images")
    with pytest.raises(InputNotFoundError) as err:
        model.predict_video(tmp_path / "no_such.mp4", out=tmp_path / "out")
    one_line(err, "no_such.mp4")
    with pytest.raises(ConfigError) as err:
        model.predict_video(tmp_path / "no_such.mp4", out=tmp_path / "out", image_size=[64, 96])
    one_line(err, "image_size", "load_model")
    with pytest.raises(DataError) as err:
        segvn.overlay(np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4), np.uint8))
    one_line(err, "labels")
    assert not (tmp_path / "out").exists()
