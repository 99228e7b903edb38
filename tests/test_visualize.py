"""``python -m segvn.visualize``: filters, activations, class pictures and the prediction of a real
short-trained checkpoint on a real CamVid frame."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segvn.errors import ConfigError
from segvn.visualize import visualize

from .conftest import run_segvn
from .fixtures_ckpt import IMAGE_SIZE, best_checkpoint, make_trained_run


@pytest.fixture(scope="session")
def checkpoint(camvid_root, tmp_path_factory, request) -> Path:
    return best_checkpoint(make_trained_run(tmp_path_factory, request.config))


FAST = ["class_vis.steps=2", "class_vis.octaves=1", "class_vis.size=[32,32]", "class_vis.classes=[0,4]"]


@pytest.fixture(scope="module")
def frame(camvid_root: Path) -> Path:
    return camvid_root / "val" / "0016E5_07959.png"


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode in ("RGB", "L")
        assert np.asarray(im).std() > 0, f"{path.name} is blank"
        return im.size


@pytest.mark.slow
@pytest.mark.xdist_group("trained_run")
def test_visualize_command_writes_every_figure(checkpoint, frame, tmp_path):
    out = tmp_path / "vis"
    proc = run_segvn("visualize", f"ckpt_path={checkpoint}", f"image={frame}", *FAST, f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "visualize.json").read_text())
    # the training scale: short side as in training (64 of 64x96), the frame's 4:3 aspect kept, sides
    # rounded to the output stride 16: 360x480 -> 64x85.3 -> 64x80
    assert IMAGE_SIZE[0] == 64 and summary["input_size"] == [64, 80], "the training scale is the default"
    assert summary["frame_size"] == [360, 480]

    # ResNet-18 conv1: 64 filters of 7x7 -> an 8x8 grid of 28 px tiles, 2 px apart
    assert summary["first_conv"] == {"layer": "encoder.conv1", "shape": [64, 3, 7, 7]}
    assert _size(out / "filters.png") == (8 * 30 + 2, 8 * 30 + 2)

    # the default layers, spread over encoder and decoder, at their strides of the 64x96 input
    layers = summary["layers"]
    assert list(layers) == ["encoder.layer1", "encoder.layer2", "encoder.layer4", "decoder.aspp", "decoder"]
    assert layers["encoder.layer1"]["shape"] == [64, 16, 20]
    assert layers["encoder.layer4"]["shape"] == [512, 4, 5]
    for name, info in layers.items():
        grid, overlay = (out / f for f in info["files"])
        width, height = _size(grid)
        assert width > 8 * info["shape"][2] and height > 8 * info["shape"][1], name
        w, h = _size(overlay)
        assert w == 480 and h > 360, "the strongest channel over the full frame, under a title bar"
        assert 0 <= info["strongest_channel"] < info["shape"][0]

    # prediction: frame | overlay, at the frame's size, under a title bar
    w, h = _size(out / "prediction.png")
    assert w == 2 * 480 + 4 and h > 360
    assert sum(summary["prediction_share"].values()) == pytest.approx(1.0)
    # class pictures of the two chosen classes, titled
    assert summary["class_visualizations"] == ["building", "road"]
    w, h = _size(out / "class_visualizations.png")
    assert w >= 2 * 32 and h > 32


@pytest.mark.slow
@pytest.mark.xdist_group("trained_run")
def test_visualize_one_layer_in_process_and_clear_errors(checkpoint, frame, tmp_path, compose_ckpt):
    def run(*overrides: str) -> dict:
        return visualize(*compose_ckpt(checkpoint, overrides, config_name="visualize"))

    base = [f"image={frame}", "class_vis.enabled=false", "image_size=[32,48]"]
    summary = run(*base, "layer=encoder.layer3")
    assert list(summary["layers"]) == ["encoder.layer3"]
    assert summary["layers"]["encoder.layer3"]["shape"] == [256, 2, 3]
    assert "class_visualizations" not in summary["files"]

    with pytest.raises(ConfigError) as err:
        run(*base, "layer=encoder.layr3")
    message = str(err.value)
    assert (
        "did you mean encoder.layer3" in message and "decoder.aspp" in message and "encoder.layer4" in message
    )

    with pytest.raises(FileNotFoundError, match="not found"):
        run(f"image={tmp_path / 'missing.png'}")


@pytest.mark.slow
@pytest.mark.xdist_group("trained_run")
def test_visualize_unknown_layer_is_one_clear_error(checkpoint, frame, tmp_path):
    proc = run_segvn(
        "visualize",
        f"ckpt_path={checkpoint}",
        f"image={frame}",
        "layer=decoder.nope",
        f"hydra.run.dir={tmp_path}",
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "unknown layer 'decoder.nope'" in out and "Valid layers include" in out and "Traceback" not in out
