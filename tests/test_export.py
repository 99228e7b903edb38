"""``segvn.export`` and the runtimes: ONNX / TorchScript round trips against PyTorch on real CamVid frames.

The checkpoint is the real one trained for two steps at 64x96 (``camvid_checkpoint``); frames are CamVid
val frames (360x480), also resized to 100x150 (not a multiple of the output stride 16).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from hydra.errors import ConfigCompositionException
from PIL import Image

from segvn.cli import composition_error_line
from segvn.errors import ConfigError, ExportError
from segvn.inference.formats import read_metadata
from segvn.inference.predictor import Predictor
from segvn.inference.runtimes import RuntimeModel
from segvn.inference.verify import as_batch, compare_models
from segvn.models.checkpoint import Checkpoint

FORMATS = (("onnx", ".onnx"), ("torchscript", ".pt"))


@pytest.fixture(scope="module")
def frames(camvid_root: Path) -> list[np.ndarray]:
    paths = sorted((camvid_root / "val").glob("*.png"))[:2]
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


@pytest.fixture(scope="module")
def exported(camvid_checkpoint, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """Both formats made by the command, as a user would (``run_segvn``)."""
    from .conftest import run_segvn

    out = tmp_path_factory.mktemp("export")
    files = {}
    for fmt, suffix in FORMATS:
        path = out / f"model{suffix}"
        proc = run_segvn(
            "export", f"ckpt_path={camvid_checkpoint}", f"format={fmt}", f"out={path}",
            "verify.frames=2", f"hydra.run.dir={out / fmt}",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "argmax agreement" in proc.stderr + proc.stdout
        files[fmt] = (path, json.loads(path.with_name(path.name + ".verify.json").read_text()))
    return files


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_writes_metadata_and_verification(exported, camvid_checkpoint, fmt) -> None:
    path, report = exported[fmt]
    check = report["verification"]
    assert check["argmax_agreement"] >= 0.999 and check["max_abs_logit_diff"] < 1e-3
    # the frames' own size (360x480, padded to 368x480 around the runtime) and the training scale
    assert [c["size"] for c in check["checks"]] == [[360, 480], [64, 80]]
    meta = read_metadata(path)
    ckpt = Checkpoint.read(camvid_checkpoint)
    assert meta["class_names"] == ckpt.class_names and meta["format"] == fmt
    assert meta["training_image_size"] == [64, 96] and meta["output_stride"] == 16
    if fmt == "onnx":
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert json.loads(props["segvn"])["class_names"] == ckpt.class_names


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_round_trip_at_two_frame_sizes(exported, camvid_checkpoint, frames, fmt) -> None:
    module = Checkpoint.read(camvid_checkpoint).model()
    runtime = RuntimeModel(exported[fmt][0])
    for h, w in ((100, 150), (368, 480)):  # 100x150 is no multiple of 16: padded and cropped back
        batch = as_batch([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])
        with torch.inference_mode():
            assert runtime(batch).shape == (2, len(runtime.class_names), h, w)  # dynamic batch
        result = compare_models(module, runtime, [batch])
        assert result["argmax_agreement"] >= 0.999, (fmt, h, w, result)


@pytest.mark.slow
def test_onnx_fixes_the_first_shapes_then_runs_dynamic(
    exported, camvid_checkpoint, frames, monkeypatch
) -> None:
    import segvn.inference.runtimes as runtimes_module

    monkeypatch.setattr(runtimes_module, "STATIC_SHAPES", 1)
    module = Checkpoint.read(camvid_checkpoint).model()
    runtime = RuntimeModel(exported["onnx"][0])
    batches = [
        as_batch([cv2.resize(f, (w, h)) for f in frames[:n]]) for n, h, w in ((1, 64, 96), (2, 100, 150))
    ]
    for batch in (*batches, batches[0]):
        assert compare_models(module, runtime, [batch])["argmax_agreement"] >= 0.999
    shapes = {key: session.get_inputs()[0].shape for key, session in runtime._sessions.items()}
    assert shapes == {(1, 3, 64, 96): [1, 3, 64, 96], None: ["batch", 3, "height", "width"]}
    runtime.set_threads(1)  # new sessions with the new thread count
    assert runtime._sessions == {}


@pytest.mark.slow
def test_every_runtime_gives_the_same_labels(exported, camvid_checkpoint, frames) -> None:
    module = Checkpoint.read(camvid_checkpoint).model()
    labels = {
        name: Predictor(model, "cpu", (100, 150), num_classes=8)(frames[:1]).labels
        for name, model in (
            ("torch", module),
            ("onnx", RuntimeModel(exported["onnx"][0])),
            ("torchscript", RuntimeModel(exported["torchscript"][0])),
        )
    }
    for name in ("onnx", "torchscript"):
        assert labels[name].shape == (1, 360, 480)
        assert (labels[name] == labels["torch"]).mean() >= 0.999, name


@pytest.mark.slow
def test_predict_takes_a_runtime(exported, camvid_checkpoint, compose_ckpt, tmp_path) -> None:
    from segvn.predict import predict

    frame = tmp_path / "f.png"
    Image.fromarray(np.full((72, 100, 3), 90, np.uint8)).save(frame)
    onnx_file = exported["onnx"][0]
    summaries = {}
    for runtime, extra in (("torch", []), ("onnx", [f"model_file={onnx_file}"]), ("torchscript", [])):
        cfg, ckpt = compose_ckpt(
            camvid_checkpoint,
            [f"input={frame}", f"runtime={runtime}", *extra, f"paths.output_dir={tmp_path / runtime}"],
            "predict",
        )
        summaries[runtime] = predict(cfg, ckpt)
        assert summaries[runtime]["runtime"] == runtime
    assert summaries["onnx"]["model_file"] == str(onnx_file)
    assert (tmp_path / "torchscript" / "model.pt").is_file()  # exported on the fly without model_file
    shares = {k: (tmp_path / k / "class_shares.csv").read_text().splitlines()[1] for k in summaries}
    assert shares["onnx"] == shares["torch"] == shares["torchscript"]

    with pytest.raises(ConfigError, match="runtime=onnx"):
        predict(*compose_ckpt(
            camvid_checkpoint,
            [f"input={frame}", "runtime=onnx", f"model_file={exported['torchscript'][0]}",
             f"paths.output_dir={tmp_path / 'bad'}"],
            "predict",
        ))  # fmt: skip
    # the schema's enum refuses it as the config composes
    with pytest.raises(ConfigCompositionException) as err:
        compose_ckpt(camvid_checkpoint, [f"input={frame}", "runtime=tensorrt"], "predict")
    line = composition_error_line(err.value)
    assert line.startswith("runtime='tensorrt': expected one of [auto, torch, onnx, torchscript"), line


def test_not_an_export_is_one_clear_error(tmp_path) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ExportError, match="not a segvn export"):
        read_metadata(bad)


@pytest.mark.slow
def test_an_exported_file_stands_in_for_its_checkpoint(
    exported, camvid_checkpoint, compose_cfg, tmp_path
) -> None:
    """``ckpt_path=model.onnx`` (or .pt) evaluates like the .ckpt it came from; visualize refuses it."""
    from segvn.cli import checkpoint_reader, register_checkpoint_configs
    from segvn.errors import CheckpointError
    from segvn.evaluate import evaluate
    from segvn.inference.exported import ExportedCheckpoint

    sources = {
        "ckpt": camvid_checkpoint,
        "onnx": exported["onnx"][0],
        "torchscript": exported["torchscript"][0],
    }
    results = {}
    for name, path in sources.items():
        ckpt = checkpoint_reader("evaluate", exports=True)(str(path))
        assert isinstance(ckpt, ExportedCheckpoint) == (name != "ckpt")
        register_checkpoint_configs(ckpt)
        overrides = [f"ckpt_path={path}", "split=val", "runtime=torch", f"paths.output_dir={tmp_path / name}"]
        results[name] = evaluate(compose_cfg(overrides, config_name="evaluate"), ckpt)
    assert results["ckpt"]["runtime"] == "torch"
    for name in ("onnx", "torchscript"):
        assert results[name]["runtime"] == name, "the file's format decides the runtime"
        assert results[name]["images"] == results["ckpt"]["images"] > 0
        assert results[name]["mean_iou"] == pytest.approx(results["ckpt"]["mean_iou"], abs=1e-3)
        assert results[name]["image_size"] == results["ckpt"]["image_size"], "the training scale travels"
    with pytest.raises(CheckpointError, match="needs the PyTorch checkpoint"):
        checkpoint_reader("visualize", exports=False)(str(exported["onnx"][0]))


def _export_as_main_did(module, ckpt: Checkpoint, fmt: str, out: Path) -> Path:
    """An export as segvn wrote them before the network normalised: the smp network alone, input
    ``image`` ImageNet-normalised, and metadata whose ``input`` says so (no ``rgb255``)."""
    import warnings

    from segvn.inference.export import OPSET, export_metadata, write_onnx_metadata
    from segvn.inference.formats import META_KEY

    meta = export_metadata(ckpt, module, fmt)
    meta["input"] = "RGB float (B, 3, H, W), ImageNet-normalised, H and W multiples of output_stride"
    inner = module.net.model.eval()
    sample = torch.zeros(1, 3, 64, 96)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            torch.onnx.export(
                inner, (sample,), str(out), dynamo=False, opset_version=OPSET,
                input_names=["image"], output_names=["logits"],
                dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                              "logits": {0: "batch", 2: "height", 3: "width"}},
            )  # fmt: skip
            write_onnx_metadata(out, meta)
        else:
            torch.jit.save(
                torch.jit.trace(inner, sample), str(out), _extra_files={f"{META_KEY}.json": json.dumps(meta)}
            )
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_old_exports_still_predict_like_new_ones(exported, camvid_checkpoint, frames, tmp_path, fmt) -> None:
    """A file exported before the graph carried the normalisation is normalised for by RuntimeModel: on real
    CamVid frames its labels are those of the new export and of the checkpoint."""
    ckpt = Checkpoint.read(camvid_checkpoint)
    module = ckpt.model()
    old = RuntimeModel(_export_as_main_did(module, ckpt, fmt, tmp_path / f"old{dict(FORMATS)[fmt]}"))
    new = RuntimeModel(exported[fmt][0])
    assert read_metadata(exported[fmt][0])["input"] == "rgb255" and old.meta["input"] != "rgb255"
    assert old.normalize is not None and new.normalize is None
    labels = {
        name: Predictor(model, "cpu", (100, 150), num_classes=8)(frames).labels
        for name, model in (("checkpoint", module), ("old", old), ("new", new))
    }
    assert len(np.unique(labels["checkpoint"])) > 1
    for name in ("old", "new"):
        assert labels[name].shape == (2, 360, 480)
        assert (labels[name] == labels["checkpoint"]).mean() >= 0.999, name
    assert (labels["old"] == labels["new"]).mean() >= 0.999
    # and the old file fed 0-255 without that normalisation would be wrong: the test can tell
    batch = as_batch([cv2.resize(f, (96, 64), interpolation=cv2.INTER_AREA) for f in frames])
    old.normalize = None
    assert compare_models(module, old, [batch])["argmax_agreement"] < 0.9


@pytest.mark.slow
def test_onnx_graph_normalises_rgb255(exported, camvid_checkpoint, frames) -> None:
    """The ONNX file alone (no segvn code around it) takes RGB 0-255 as ``images`` and gives the checkpoint's logits."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported["onnx"][0]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    batch = as_batch([cv2.resize(f, (96, 64), interpolation=cv2.INTER_AREA) for f in frames])
    logits = session.run(None, {"images": batch.numpy()})[0]
    with torch.inference_mode():
        expected = Checkpoint.read(camvid_checkpoint).model()(batch)
    assert np.abs(logits - expected.numpy()).max() < 1e-3
