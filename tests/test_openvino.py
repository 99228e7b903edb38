"""``runtime=openvino`` and ``segvn.export format=openvino [quantize=int8]`` (:mod:`segvn.inference.openvino`).

The checkpoint is the real one trained for two steps at 64x96 (``camvid_checkpoint``), converted by the
command as a user runs it; frames are real CamVid val frames and the dash-cam clip.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segvn.errors import CheckpointError, ConfigError, ExportError
from segvn.inference.exported import ExportedCheckpoint
from segvn.inference.formats import read_metadata
from segvn.inference.runtimes import open_export
from segvn.inference.verify import as_batch, compare_models
from segvn.models.checkpoint import Checkpoint

from .conftest import run_segvn

pytestmark = pytest.mark.slow

INT8_FLOOR = 0.6  # a two-step model's logits are nearly tied (as in test_quantize); trained ones pass 0.95


def error_lines(proc) -> list[str]:
    """The ERROR lines a command printed (segvn's one line per user error, on stdout or stderr)."""
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line]


@pytest.fixture(scope="module")
def frames(camvid_root: Path) -> list[np.ndarray]:
    paths = sorted((camvid_root / "val").glob("*.png"))[:2]
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


@pytest.fixture(scope="module")
def irs(camvid_checkpoint, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """The fp32 and int8 IRs made by ``segvn.export`` (with their ``.verify.json``)."""
    out = tmp_path_factory.mktemp("openvino")
    files = {}
    for name, extra in (
        ("fp32", []),
        ("int8", ["quantize=int8", "calibration.frames=4", f"verify.min_agreement={INT8_FLOOR}"]),
    ):
        path = out / f"model.{name}.xml"
        proc = run_segvn(
            "export", f"ckpt_path={camvid_checkpoint}", "format=openvino", *extra, f"out={path}",
            "verify.frames=2", f"hydra.run.dir={out / name}",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        files[name] = (path, json.loads(path.with_name(path.name + ".verify.json").read_text()))
    return files


def test_fp32_ir_agrees_with_torch(irs, camvid_checkpoint, frames) -> None:
    """The export's own check on real frames, and the IR run again here beside the PyTorch network at
    another size (not a multiple of the stride): argmax agreement >= 0.999."""
    path, report = irs["fp32"]
    assert report["format"] == "openvino" and report["precision"] == "fp32"
    assert path.with_suffix(".bin").is_file()
    check = report["verification"]
    assert [c["size"] for c in check["checks"]] == [[360, 480], [64, 80]]
    assert check["argmax_agreement"] >= 0.999 and check["max_abs_logit_diff"] < 1e-3
    assert {"openvino", "nncf", "torch"} <= set(report["versions"])
    module = Checkpoint.read(camvid_checkpoint).model().eval()
    ir = open_export(path)
    assert ir.format == "openvino" and type(ir).__name__ == "OpenVINOModel"
    batch = as_batch([np.ascontiguousarray(f[:100, :150]) for f in frames])
    result = compare_models(module, ir, [batch[i : i + 1] for i in range(len(batch))])
    assert result["pixels"] == 2 * 100 * 150
    assert result["argmax_agreement"] >= 0.999, result


def test_int8_ir_is_quantized_calibrated_and_verified(irs) -> None:
    """int8 through NNCF: a quarter-size weights file, calibrated on 4 real frames at the training scale,
    the head kept in float, its agreement with PyTorch reported and above the floor."""
    path, report = irs["int8"]
    fp32_path, _ = irs["fp32"]
    assert report["precision"] == "int8"
    check = report["verification"]
    assert check["min_agreement"] == INT8_FLOOR
    assert INT8_FLOOR <= check["argmax_agreement"] < 1.0, "int8 approximates: not every pixel agrees"
    meta = read_metadata(path)
    assert meta["precision"] == "int8" and meta["calibration"]["frames"] == 4
    assert meta["calibration"]["sizes"] == [[64, 80]], "calibrated at the training scale of 360x480 frames"
    assert any("segmentation_head" in node for node in meta["calibration"]["float_nodes"])
    assert path.with_suffix(".bin").stat().st_size < 0.4 * fp32_path.with_suffix(".bin").stat().st_size
    xml = path.read_text()
    assert 'element_type="i8"' in xml and "FakeQuantize" in xml


def test_metadata_round_trip(irs, camvid_checkpoint) -> None:
    """Class names, training size, stride and the stored configs travel in the IR's rt_info, so the IR
    stands in for its checkpoint."""
    path, report = irs["fp32"]
    ckpt = Checkpoint.read(camvid_checkpoint)
    meta = read_metadata(path)
    assert meta == report["metadata"]
    assert meta["format"] == "openvino" and meta["class_names"] == ckpt.class_names
    assert meta["training_image_size"] == [64, 96] and meta["output_stride"] == 16
    assert meta["config"]["model"]["net"]["num_classes"] == 8
    exported = ExportedCheckpoint.read(path)
    model = exported.model()
    assert exported.class_names == ckpt.class_names == model.class_names
    assert model.training_image_size == (64, 96) and model.stride == 16


def test_predict_runs_openvino_on_a_video_and_frames(
    irs, camvid_checkpoint, video_path, camvid_root, tmp_path
):
    """``segvn.predict runtime=openvino``: the checkpoint converted on the fly on a short real video, and the
    exported IR on a folder of real frames, whose labels match runtime=torch's."""
    video_run = tmp_path / "video"
    proc = run_segvn(
        "predict", f"ckpt_path={camvid_checkpoint}", f"input={video_path}", "runtime=openvino", "max_frames=6",
        f"hydra.run.dir={video_run}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((video_run / "summary.json").read_text())
    assert summary["runtime"] == "openvino" and summary["precision"] == "fp32"
    assert summary["frames"] == 6 and summary["model_file"] == str(video_run / "model.xml")
    assert (video_run / "model.xml").is_file() and (video_run / "model.bin").is_file()

    folder = tmp_path / "frames"
    folder.mkdir()
    for p in sorted((camvid_root / "val").glob("*.png"))[:2]:
        shutil.copy(p, folder / p.name)
    labels = {}
    for runtime, extra in (("openvino", [f"model_file={irs['fp32'][0]}"]), ("torch", [])):
        run = tmp_path / runtime
        proc = run_segvn(
            "predict", f"ckpt_path={camvid_checkpoint}", f"input={folder}", f"runtime={runtime}", *extra,
            "save_labels=true", f"hydra.run.dir={run}",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads((run / "summary.json").read_text())["runtime"] == runtime
        pngs = sorted((run / "labels").rglob("*.png"))
        assert len(pngs) == 2
        labels[runtime] = np.stack([np.asarray(Image.open(p)) for p in pngs])
    agreement = float((labels["openvino"] == labels["torch"]).mean())
    assert agreement >= 0.999, agreement


def test_evaluate_runs_openvino(irs, camvid_checkpoint, tmp_path) -> None:
    """``segvn.evaluate runtime=openvino`` from the checkpoint and ``ckpt_path=IR.xml`` give one result;
    the int8 IR is recorded as int8."""
    results = {}
    for name, source, extra in (
        ("ckpt", camvid_checkpoint, ["runtime=openvino"]),
        ("ir", irs["fp32"][0], []),
        ("int8", irs["int8"][0], []),
    ):
        run = tmp_path / name
        proc = run_segvn(
            "evaluate",
            f"ckpt_path={source}",
            "split=val",
            "data.num_workers=0",
            *extra,
            f"hydra.run.dir={run}",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[name] = json.loads((run / "metrics.json").read_text())
    assert results["ckpt"]["runtime"] == results["ir"]["runtime"] == "openvino"
    assert results["ckpt"]["images"] == results["ir"]["images"] > 0
    assert results["ckpt"]["mean_iou"] == pytest.approx(results["ir"]["mean_iou"], abs=1e-6)
    assert results["int8"]["precision"] == "int8" and results["ckpt"]["precision"] == "fp32"


def test_bf16_is_honoured_where_the_cpu_has_it(irs, camvid_checkpoint, compose_ckpt, tmp_path) -> None:
    """``precision=bf16`` compiles with the bf16 hint; where the CPU has no native bf16 it runs fp32 and the
    summary says so. channels_last stays a torch setting."""
    from segvn.inference.openvino import native_bf16
    from segvn.predict import predict

    frame = tmp_path / "f.png"
    Image.fromarray(np.full((72, 100, 3), 90, np.uint8)).save(frame)
    cfg, ckpt = compose_ckpt(
        camvid_checkpoint,
        [f"input={frame}", "runtime=openvino", f"model_file={irs['fp32'][0]}", "precision=bf16",
         f"paths.output_dir={tmp_path / 'p'}"],
        "predict",
    )  # fmt: skip
    summary = predict(cfg, ckpt)
    assert summary["runtime"] == "openvino"
    assert summary["precision"] == ("bf16" if native_bf16() else "fp32")
    model = open_export(irs["fp32"][0])
    assert model.set_precision("bf16") == ("bf16" if native_bf16() else "fp32")
    assert model(torch.zeros(1, 3, 64, 96)).dtype == torch.float32
    cfg, ckpt = compose_ckpt(
        camvid_checkpoint, [f"input={frame}", "runtime=openvino", "channels_last=true"], "predict"
    )
    with pytest.raises(ConfigError, match="channels_last=true apply to runtime=torch"):
        predict(cfg, ckpt)


def test_a_checkpoint_of_five_outputs_is_refused(camvid_checkpoint, tmp_path) -> None:
    """A checkpoint whose head has 5 outputs under 8 class names is refused before anything is written,
    as for ONNX."""
    raw = torch.load(camvid_checkpoint, map_location="cpu", weights_only=True)
    state = {k: (v[:5].clone() if "segmentation_head.0." in k else v) for k, v in raw["state_dict"].items()}
    bad = tmp_path / "five_outputs.ckpt"
    torch.save({**raw, "state_dict": state}, bad)
    out = tmp_path / "out" / "m.xml"
    proc = run_segvn(
        "export", f"ckpt_path={bad}", "format=openvino", f"out={out}", f"hydra.run.dir={tmp_path / 'r'}"
    )
    assert proc.returncode == 1
    errors = error_lines(proc)
    assert (
        len(errors) == 1 and "5 channels" in errors[0] and "8 classes" in errors[0] and str(bad) in errors[0]
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not out.exists() and not out.with_suffix(".bin").exists()


def test_bad_ir_inputs_are_one_line_errors(irs, camvid_checkpoint, tmp_path) -> None:
    """An .xml without its .bin, and an IR whose network outputs another class count than its metadata
    names: one error line naming the file, exit 1."""
    lonely = tmp_path / "lonely.xml"
    shutil.copy(irs["fp32"][0], lonely)
    proc = run_segvn("evaluate", f"ckpt_path={lonely}", "split=val", f"hydra.run.dir={tmp_path / 'e'}")
    assert proc.returncode == 1
    errors = error_lines(proc)
    assert len(errors) == 1 and str(lonely) in errors[0] and "lonely.bin is missing" in errors[0], (
        proc.stdout + proc.stderr
    )
    with pytest.raises(ExportError, match="lonely.bin is missing"):
        read_metadata(lonely)

    from segvn.inference.openvino import export_ir
    from segvn.models.factory import build_network

    five = build_network(num_classes=5).eval()
    other = tmp_path / "five.xml"
    export_ir(five, other, read_metadata(irs["fp32"][0]))  # 8 class names, 5 outputs
    with pytest.raises(CheckpointError, match="5 channels"):
        ExportedCheckpoint.read(other)
    frame = tmp_path / "frames" / "f.png"
    frame.parent.mkdir()
    Image.fromarray(np.full((72, 100, 3), 90, np.uint8)).save(frame)
    proc = run_segvn(
        "predict", f"ckpt_path={camvid_checkpoint}", "runtime=openvino", f"model_file={other}",
        f"input={frame.parent}", f"hydra.run.dir={tmp_path / 'p'}",
    )  # fmt: skip
    assert proc.returncode == 1
    errors = error_lines(proc)
    assert len(errors) == 1 and str(other) in errors[0] and "5 channels" in errors[0], (
        proc.stdout + proc.stderr
    )
    with pytest.raises(ConfigError, match="an OpenVINO IR is a .xml file"):
        export_ir(five, tmp_path / "five.ir", {})
