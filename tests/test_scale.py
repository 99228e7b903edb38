"""The training-scale default of ``image_size`` (:mod:`segvn.inference.scale`) in predict, visualize, evaluate.

The real checkpoint (``camvid_checkpoint``) was trained at 64x96; frames twice as large (128x192) and the
960x540 dash-cam video must reach the model at the training scale by default, at frame size with
``image_size=native``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from segvn.data.yuv import I420Frame
from segvn.errors import ConfigError
from segvn.inference.predictor import Predictor
from segvn.inference.scale import FrameResizer, ImageSizeChoice, ScaleRule, model_stride, resolve_image_size

CAMVID_FRAME = "0016E5_07959.png"


def test_scale_rule_keeps_aspect_and_rounds_to_the_stride() -> None:
    rule = ScaleRule(64, 16)
    assert rule(128, 192) == (64, 96)
    assert rule(540, 960) == (64, 112)  # 113.8 -> 112
    assert rule(960, 540) == (112, 64)
    assert rule(360, 480) == (64, 80)  # 85.3 -> 80
    assert rule(64, 96) == (64, 96)
    assert ScaleRule(8, 16)(100, 100) == (16, 16)  # never below one stride


def test_resolve_image_size_rules(caplog) -> None:
    assert resolve_image_size(None, (64, 96), 16) == ImageSizeChoice(ScaleRule(64, 16), "training-scale")
    assert resolve_image_size(None, None, 16) == ImageSizeChoice(None, "native")
    assert resolve_image_size("native", (64, 96), 16) == ImageSizeChoice(None, "native")
    with caplog.at_level(logging.WARNING, logger="segvn.inference.scale"):
        assert resolve_image_size([80, 120], (64, 96), 16) == ImageSizeChoice((80, 120), "explicit")
        assert not caplog.records
        resolve_image_size([360, 480], (64, 96), 16)
    assert "5.6x the training short side 64" in caplog.text
    for bad in ("big", [0, 10], [1, 2, 3]):
        with pytest.raises(ConfigError, match="image_size"):
            resolve_image_size(bad, (64, 96), 16)


class _Spy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape[-2:]))
        return torch.zeros(x.shape[0], 3, *x.shape[-2:])


def test_predictor_computes_the_size_per_frame_size() -> None:
    spy = _Spy()
    predictor = Predictor(spy, "cpu", ScaleRule(64, 16), num_classes=3)
    for shape in ((128, 192), (540, 960)):
        out = predictor([np.zeros((*shape, 3), np.uint8)])
        assert out.labels.shape == (1, *shape)
    assert spy.shapes == [(64, 96), (64, 112)]
    assert predictor.sizes_used == {(128, 192): (64, 96), (540, 960): (64, 112)}
    spy.shapes.clear()
    Predictor(spy, "cpu", (32, 48), num_classes=3)(
        [np.zeros((128, 192, 3), np.uint8)]
    )  # fixed size still works
    assert spy.shapes == [(32, 48)]


def test_frame_resizer_is_the_one_resize_path(caplog) -> None:
    """RGB and I420 frames reach the model's size the same way (area-averaged when shrinking), the
    size is logged once per frame size, and a frame already at that size is not touched."""
    rng = np.random.default_rng(0)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (360, 480, 3), dtype=np.uint8), (9, 9), 3)
    resizer = FrameResizer(ImageSizeChoice(ScaleRule(64, 16), "training-scale").for_frame)
    with caplog.at_level(logging.INFO, logger="segvn.inference.scale"):
        small = resizer([rgb, rgb])
        resizer([rgb])
    assert small.shape == (2, 64, 80, 3) and small.dtype == np.uint8
    assert np.array_equal(small[0], cv2.resize(rgb, (80, 64), interpolation=cv2.INTER_AREA))
    assert caplog.text.count("frames of 360x480 go through the model at 64x80") == 1
    assert resizer.sizes_used == {(360, 480): (64, 80)}
    yuv = I420Frame(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420))
    from_i420 = resizer([yuv])[0]
    assert (
        np.abs(from_i420.astype(int) - small[0].astype(int)).mean() < 6
    )  # planes resized, then converted (chroma at half size)
    for same in (FrameResizer(None), FrameResizer((360, 480))):
        assert np.array_equal(same([rgb])[0], rgb)


@pytest.fixture
def big_frame(camvid_root: Path, tmp_path: Path) -> Path:
    """A real CamVid frame at 128x192: twice the checkpoint's 64x96 training size."""
    rgb = np.asarray(Image.open(camvid_root / "val" / CAMVID_FRAME).convert("RGB"))
    path = tmp_path / "big.png"
    Image.fromarray(cv2.resize(rgb, (192, 128), interpolation=cv2.INTER_AREA)).save(path)
    return path


@pytest.mark.slow
def test_predict_defaults_to_the_training_scale(camvid_checkpoint, compose_ckpt, big_frame, tmp_path) -> None:
    from segvn.predict import predict

    def run(name: str, *overrides: str) -> dict:
        out = tmp_path / name
        cfg, ckpt = compose_ckpt(
            camvid_checkpoint, [f"input={big_frame}", f"paths.output_dir={out}", *overrides], "predict"
        )
        summary = predict(cfg, ckpt)
        assert summary == json.loads((out / "summary.json").read_text())
        assert Image.open(out / "overlays" / "big.png").size == (192, 128)  # outputs at frame size
        return summary

    default = run("default")
    assert default["image_size"] == [64, 96] and default["image_size_rule"] == "training-scale"
    assert default["training_image_size"] == [64, 96]
    native = run("native", "image_size=native")
    assert native["image_size"] == [128, 192] and native["image_size_rule"] == "native"
    explicit = run("explicit", "image_size=[96,144]")
    assert explicit["image_size"] == [96, 144] and explicit["image_size_rule"] == "explicit"


@pytest.mark.slow
def test_predict_video_keeps_the_aspect(camvid_checkpoint, compose_ckpt, video_path, tmp_path) -> None:
    from segvn.predict import predict

    out = tmp_path / "video"
    cfg, ckpt = compose_ckpt(
        camvid_checkpoint,
        [f"input={video_path}", "max_frames=2", "temporal.tc=false", f"paths.output_dir={out}"],
        "predict",
    )
    summary = predict(cfg, ckpt)
    # 540x960 at short side 64: 113.8 wide, rounded to the output stride 16
    assert summary["image_size"] == [64, 112] and summary["image_sizes"] == {"540x960": [64, 112]}
    assert model_stride(ckpt.model()) == 16


@pytest.mark.slow
def test_visualize_defaults_to_the_training_scale(camvid_checkpoint, compose_ckpt, big_frame) -> None:
    from segvn.visualize import visualize

    base = [f"image={big_frame}", "class_vis.enabled=false", "layer=encoder.layer1"]
    summary = visualize(*compose_ckpt(camvid_checkpoint, base, config_name="visualize"))
    assert summary["input_size"] == [64, 96] and summary["image_size_rule"] == "training-scale"
    summary = visualize(
        *compose_ckpt(camvid_checkpoint, [*base, "image_size=native"], config_name="visualize")
    )
    assert summary["input_size"] == [128, 192] and summary["image_size_rule"] == "native"


@pytest.fixture
def tiny_camvid(camvid_root: Path, tmp_path: Path) -> Path:
    """Two real CamVid val frames (360x480) with their labels, in the SegNet layout."""
    root = tmp_path / "camvid"
    for folder in ("train", "trainannot", "val", "valannot", "test", "testannot"):
        (root / folder).mkdir(parents=True)
    for folder in ("val", "valannot"):
        for name in sorted(p.name for p in (camvid_root / "val").glob("*.png"))[:2]:
            (root / folder / name).symlink_to(camvid_root / folder / name)
    return root


@pytest.mark.slow
def test_evaluate_applies_the_rule_only_to_other_data_sizes(
    camvid_checkpoint, compose_ckpt, tiny_camvid, tmp_path
) -> None:
    from segvn.evaluate import evaluate

    base = [
        "split=val",
        "data=camvid",
        f"data.root={tiny_camvid}",
        "data.num_workers=0",
        "data.check.level=off",
    ]

    def run(name: str, *overrides: str) -> dict:
        out = tmp_path / name
        return evaluate(
            *compose_ckpt(camvid_checkpoint, [*base, *overrides, f"paths.output_dir={out}"], "evaluate")
        )

    # the data already at the training size: no further resize
    at_training = run("a", "data.image_size=[64,96]")
    assert at_training["image_size"] == [64, 96] and at_training["image_size_rule"] == "training-scale"
    # native CamVid (360x480) seen at the training scale: short side 64, 85.3 -> 80; metrics at 360x480
    native_data = run("b")
    assert native_data["image_size"] == [64, 80] and native_data["image_size_rule"] == "training-scale"
    assert native_data["images"] == 2 and native_data["runtime"] == "onnx"  # the default runtime
    eager = run("d", "runtime=torch")
    assert eager["runtime"] == "torch" and eager["image_size"] == [64, 80]
    assert abs(eager["global_accuracy"] - native_data["global_accuracy"]) < 1e-3
    opted_out = run("c", "image_size=native")
    assert opted_out["image_size"] == [360, 480] and opted_out["image_size_rule"] == "native"
