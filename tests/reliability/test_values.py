"""Silent wrong results: label values out of a file's range, and networks whose outputs do not match their
class names. Each probe uses real files: real CamVid frames, a real 16-bit PNG, the real test checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segvn.data.classes import CLASS_NAMES, IGNORE_INDEX, rgb_to_index
from segvn.data.labelformats import import_labels

from .conftest import run_segvn

pytestmark = [pytest.mark.reliability]

ROAD = CLASS_NAMES.index("road")


def _street(root: Path, camvid_root: Path) -> tuple[Path, str, tuple[int, int]]:
    """A street folder holding one real CamVid frame; returns it, the frame stem and (h, w)."""
    frame = sorted((camvid_root / "train").glob("0001TP_*.png"))[0]
    street = root / "data" / "street"
    (street / "frames").mkdir(parents=True)
    image = Image.open(frame).convert("RGB")
    image.save(street / "frames" / frame.name)
    return street, frame.stem, (image.height, image.width)


@pytest.mark.parametrize(
    ("fmt", "road_value"),
    [("cityscapes", 7), ("matlab", 1 + CLASS_NAMES.index("road"))],  # matlab: class k is value k+1
)
def test_16bit_label_values_out_of_range_are_counted_not_wrapped(
    probe, tmp_path, camvid_root, fmt, road_value
):
    street, stem, (h, w) = _street(tmp_path, camvid_root)
    ids = np.full((h, w), road_value, dtype=np.uint16)
    ids[:40] = 256 + road_value  # 263 for Cityscapes: wraps onto road modulo 256
    ids[40:60] = 1000  # Cityscapes "id 232" modulo 256
    src = tmp_path / "export"
    src.mkdir()
    name = f"{stem}_gtFine_labelIds.png" if fmt == "cityscapes" else f"{stem}.png"
    Image.fromarray(ids).save(src / name)
    assert Image.open(src / name).mode.startswith("I;16")  # a real 16-bit PNG
    probe.guard(src)

    report = import_labels(fmt, src, street, classes=list(CLASS_NAMES) if fmt == "matlab" else None)

    labels = rgb_to_index(np.asarray(Image.open(street / "labels" / f"{stem}.png").convert("RGB")))[0]
    if (labels[:60] == ROAD).any():
        probe.wrong(
            f"{fmt}: 16-bit values {256 + road_value} / 1000 were imported as road (wrapped to 8 bits)"
        )
    assert (labels[:60] == IGNORE_INDEX).all() and (labels[60:] == ROAD).all()
    found = report.out_of_range[name]
    assert {v for v, _ in found["values"]} == {256 + road_value, 1000}
    assert found["pixels"] == 60 * w
    assert not any("232" in label for label in report.unknown_labels)
    assert "out-of-range" in report.line()
    probe.ran()


def _cut_head(raw: dict, channels: int, config_too: bool) -> dict:
    """The checkpoint dict with the segmentation head cut to ``channels`` outputs."""
    state = dict(raw["state_dict"])
    for key in [k for k in state if "segmentation_head.0." in k]:
        state[key] = state[key][:channels].clone()
    out = {**raw, "state_dict": state}
    if config_too:  # as a run trained with model.net.num_classes=5 but 8 class names would store it
        config = dict(raw["segvn_config"])
        config["model"] = {**config["model"], "net": {**config["model"]["net"], "num_classes": channels}}
        out["segvn_config"] = config
    return out


@pytest.fixture(scope="module")
def trained_raw(camvid_checkpoint: Path) -> dict:
    """The tiny real checkpoint as a dict, read once for this module."""
    return torch.load(camvid_checkpoint, map_location="cpu", weights_only=True)


@pytest.fixture
def five_output_ckpt(trained_raw: dict, tmp_path: Path) -> Callable[[bool], Path]:
    """``make(config_too)``: the tiny checkpoint cut to 5 output channels under its 8 class names."""

    def make(config_too: bool) -> Path:
        bad = tmp_path / "five_outputs.ckpt"
        torch.save(_cut_head(trained_raw, 5, config_too), bad)
        return bad

    return make


@pytest.mark.slow
@pytest.mark.parametrize(
    ("verb", "config_too", "args"),
    [
        ("evaluate", True, ("data.num_workers=0", "data.image_size=[64,96]")),
        ("evaluate", False, ("data.num_workers=0",)),
        ("predict", True, ()),
        ("visualize", True, ()),
        ("export", True, ()),
    ],
)
def test_checkpoint_whose_outputs_do_not_match_its_classes_is_refused(
    probe, tmp_path, camvid_checkpoint, five_output_ckpt, verb, config_too, args
):
    bad = five_output_ckpt(config_too)
    probe.guard(camvid_checkpoint.parent)
    proc = run_segvn(verb, f"ckpt_path={bad}", *args, f"hydra.run.dir={tmp_path / 'run'}", root=tmp_path)
    if proc.returncode == 0:
        probe.wrong(f"segvn.{verb} ran a 5-output network under 8 class names")
    probe.expect_error(proc, str(bad), "5 channels", "8 classes")


@pytest.mark.slow
def test_prelabel_refuses_a_checkpoint_whose_outputs_do_not_match(
    probe, tmp_path, camvid_root, five_output_ckpt
):
    bad = five_output_ckpt(True)
    street, _, _ = _street(tmp_path, camvid_root)
    probe.guard(street)
    proc = run_segvn(
        "labels", "prelabel", f"ckpt_path={bad}", f"street={street}", "format=palette",
        f"hydra.run.dir={tmp_path / 'run'}", root=tmp_path,
    )  # fmt: skip
    if proc.returncode == 0:
        probe.wrong("segvn.labels prelabel ran a 5-output network under 8 class names")
    probe.expect_error(proc, str(bad), "5 channels", "8 classes")


@pytest.fixture(scope="module")
def five_output_exports(camvid_checkpoint, trained_raw, tmp_path_factory) -> dict[str, Path]:
    """ONNX and TorchScript files of a network with 5 output channels whose metadata name 8 classes."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from segvn.inference.export import export_metadata, export_network
    from segvn.models.checkpoint import Checkpoint

    out = tmp_path_factory.mktemp("five_exports")
    cut = _cut_head(trained_raw, 5, True)
    model_cfg = OmegaConf.create(cut["segvn_config"]["model"])
    model_cfg.net.encoder_weights = None
    module = instantiate(model_cfg)
    module.load_state_dict(cut["state_dict"])
    ckpt = Checkpoint(camvid_checkpoint, trained_raw)  # the stored config: 8 class names
    files = {}
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
        files[fmt] = export_network(
            module.eval(), fmt, out / f"five{suffix}", export_metadata(ckpt, module, fmt)
        )
    return files


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("verb", ["evaluate", "predict"])
def test_exported_file_whose_outputs_do_not_match_its_classes_is_refused(
    probe, tmp_path, five_output_exports, fmt, verb
):
    path = five_output_exports[fmt]
    args = ("data.num_workers=0", "data.image_size=[64,96]") if verb == "evaluate" else ()
    probe.guard(path.parent)
    proc = run_segvn(verb, f"ckpt_path={path}", *args, f"hydra.run.dir={tmp_path / 'run'}", root=tmp_path)
    if proc.returncode == 0:
        probe.wrong(f"segvn.{verb} ran a 5-output {fmt} file under 8 class names")
    probe.expect_error(proc, str(path), "5 channels", "8 classes")


@pytest.mark.slow
def test_model_file_whose_outputs_do_not_match_is_refused(
    probe, tmp_path, camvid_checkpoint, five_output_exports
):
    path = five_output_exports["onnx"]
    probe.guard(path.parent, camvid_checkpoint.parent)
    proc = run_segvn(
        "evaluate", f"ckpt_path={camvid_checkpoint}", "split=val", "runtime=onnx", f"model_file={path}",
        "data.num_workers=0", "data.image_size=[64,96]", f"hydra.run.dir={tmp_path / 'run'}", root=tmp_path,
    )  # fmt: skip
    probe.expect_error(proc, str(path), "5 channels", "8 classes")
