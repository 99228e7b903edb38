"""``precision`` and ``channels_last`` of predict/evaluate: the per-device choice and the labels it gives.

The labels are checked on a real CamVid frame with the real checkpoint trained for two steps; bf16 runs
on the CPU here (torch's CPU autocast), the same code path a GPU takes with ``device=cuda``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segvn.errors import ConfigError
from segvn.inference.precision import (
    CPU_CHANNELS_LAST,
    InferencePrecision,
    PrecisionModel,
    choose_precision,
    with_precision,
)
from segvn.inference.predictor import Predictor
from segvn.inference.runtime_choice import choose_runtime, faster_runtime, latency_ms
from segvn.models.checkpoint import Checkpoint
from segvn.models.factory import Normalize
from segvn.utils.cpu import bf16_if_native, native_bf16_cpu


def test_auto_is_bf16_channels_last_on_a_gpu_and_fp32_on_the_cpu() -> None:
    assert choose_precision("auto", None, torch.device("cuda")) == InferencePrecision(True, True)
    assert choose_precision("auto", None, "cpu") == InferencePrecision(False, CPU_CHANNELS_LAST)
    assert choose_precision("bf16", False, "cpu") == InferencePrecision(True, False)
    assert choose_precision("fp32", None, "cuda:1") == InferencePrecision(False, True)
    # exports run as exported: auto is fp32 NCHW, and asking for bf16 names the way out
    assert choose_precision("auto", None, "cuda", runtime="onnx") == InferencePrecision()
    with pytest.raises(ConfigError, match="runtime=torch"):
        choose_precision("bf16", None, "cpu", runtime="onnx")
    with pytest.raises(ConfigError, match="precision must be one of"):
        choose_precision("fp16", None, "cpu")


def test_runtime_auto_is_the_fastest_measured(monkeypatch, tmp_path: Path) -> None:
    """auto: onnx (fp32) on the CPU, raced against OpenVINO (and torch bf16 where the CPU has native bf16:
    inference_model); torch on a GPU and for precision=bf16; an exported model_file its own format; other
    runtimes are kept."""
    import segvn.inference.runtime_choice as choice_module

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile\n")
    assert native_bf16_cpu(cpuinfo) and not native_bf16_cpu(tmp_path / "absent")
    cpuinfo.write_text("flags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    assert not native_bf16_cpu(cpuinfo)
    assert bf16_if_native("cpu", cpuinfo) == "32-true" and bf16_if_native("gpu", cpuinfo) == "bf16-mixed"
    cpuinfo.write_text("flags\t\t: fpu sse avx2 avx512f amx_bf16 amx_tile\n")
    assert bf16_if_native("cpu", cpuinfo) == "bf16-mixed"
    for native in (True, False):
        monkeypatch.setattr(choice_module, "native_bf16_cpu", lambda native=native: native)
        assert choose_runtime("auto", "auto", torch.device("cpu")) == ("onnx", True)
        assert choose_runtime("auto", "fp32", "cpu") == ("onnx", True)
        assert choose_runtime("auto", "bf16", "cpu") == ("torch", False)
        assert choose_runtime("auto", "auto", "cuda") == ("torch", False)
        assert choose_runtime("torchscript", "auto", "cpu") == ("torchscript", False)
    monkeypatch.setattr(choice_module, "read_metadata", lambda path: {"format": "torchscript"})
    assert choose_runtime("auto", "auto", "cpu", model_file="m.pt") == ("torchscript", False)


def test_the_race_keeps_the_faster_runtime(monkeypatch) -> None:
    """torch bf16 wins only when faster by the margin; otherwise the network is left as it was (NCHW)."""
    import segvn.inference.runtime_choice as choice_module

    exported = torch.nn.Conv2d(3, 2, 1)
    network = torch.nn.Sequential(Normalize(), torch.nn.Conv2d(3, 2, 1))  # takes RGB 0-255 frames
    assert 0 < latency_ms(network, (32, 48)) < 1e4  # a real timing
    times = {"onnx": 100.0, "bf16": 60.0}
    monkeypatch.setattr(
        choice_module,
        "latency_ms",
        lambda model, size: times["bf16" if isinstance(model, PrecisionModel) else "onnx"],
    )
    net = torch.nn.Conv2d(3, 2, 1)
    model, runtime, precision = faster_runtime(exported, net, (32, 48))
    assert (model, runtime, precision) == (net, "torch", InferencePrecision(True, True))
    times["bf16"] = 95.0  # faster, but within RACE_MARGIN
    other = torch.nn.Conv2d(3, 2, 1)
    model, runtime, precision = faster_runtime(exported, other, (32, 48))
    assert (model, runtime, precision) == (exported, "onnx", InferencePrecision())
    assert other.weight.is_contiguous()


def test_fp32_nchw_leaves_the_model_alone() -> None:
    net = torch.nn.Conv2d(3, 2, 1)
    assert with_precision(net, InferencePrecision()) is net
    conv = torch.nn.Conv2d(3, 2, 1)
    x = torch.randn(1, 3, 8, 8)
    want = conv(x)
    wrapped = with_precision(conv, InferencePrecision(bf16=True, channels_last=True))
    assert isinstance(wrapped, PrecisionModel) and wrapped.model is conv
    assert not hasattr(wrapped, "out_channels")  # no pass-through: the wrapped model is read as wrapped.model
    out = wrapped(x)
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # it really ran in bf16: rounded (8 bits of mantissa), not the fp32 result
    assert 0 < (out - want).abs().max() < 0.05


@pytest.fixture(scope="module")
def frame(camvid_root: Path) -> np.ndarray:
    return np.asarray(Image.open(sorted((camvid_root / "val").glob("*.png"))[0]).convert("RGB"))


@pytest.mark.slow
@pytest.mark.parametrize("precision", [InferencePrecision(False, True), InferencePrecision(True, True)])
def test_labels_match_fp32_on_a_real_frame(camvid_checkpoint, frame, precision) -> None:
    reference = Predictor(Checkpoint.read(camvid_checkpoint).model(), "cpu", (96, 128), num_classes=8)
    other = Predictor(
        with_precision(Checkpoint.read(camvid_checkpoint).model(), precision), "cpu", (96, 128), num_classes=8
    )
    want, got = reference([frame]).labels, other([frame]).labels
    assert got.shape == want.shape == (1, 360, 480)
    # channels_last is the same arithmetic in another order; bf16 moves near-ties only
    assert (got == want).mean() >= (0.999 if not precision.bf16 else 0.98), precision


@pytest.mark.slow
def test_predict_records_the_precision(camvid_checkpoint, compose_ckpt, tmp_path) -> None:
    from segvn.predict import predict

    image = tmp_path / "f.png"
    Image.fromarray(np.full((72, 100, 3), 90, np.uint8)).save(image)
    cfg, ckpt = compose_ckpt(
        camvid_checkpoint,
        [f"input={image}", "runtime=torch", "precision=bf16", f"paths.output_dir={tmp_path / 'p'}"],
    )
    summary = predict(cfg, ckpt)
    assert summary["precision"] == "bf16" and summary["channels_last"] is CPU_CHANNELS_LAST
    on_disk = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert on_disk["precision"] == "bf16"
    with pytest.raises(ConfigError, match="runtime=torch"):
        predict(*compose_ckpt(camvid_checkpoint, [f"input={image}", "runtime=onnx", "precision=bf16"]))
    # runtime=auto (the default) takes precision=bf16 as a request for torch
    auto = predict(
        *compose_ckpt(
            camvid_checkpoint, [f"input={image}", "precision=bf16", f"paths.output_dir={tmp_path / 'a'}"]
        )
    )
    assert (auto["runtime"], auto["precision"]) == ("torch", "bf16")


@pytest.mark.slow
def test_evaluate_records_the_precision(camvid_checkpoint, compose_cfg, tmp_path) -> None:
    from segvn.cli import checkpoint_reader, register_checkpoint_configs
    from segvn.evaluate import evaluate

    ckpt = checkpoint_reader("evaluate", exports=True)(str(camvid_checkpoint))
    register_checkpoint_configs(ckpt)
    results = {}
    for precision in ("fp32", "bf16"):
        overrides = [
            f"ckpt_path={camvid_checkpoint}", "split=val", "data.source.val=['0001TP']", "runtime=torch",
            f"precision={precision}", f"paths.output_dir={tmp_path / precision}",
        ]  # fmt: skip
        results[precision] = evaluate(compose_cfg(overrides, config_name="evaluate"), ckpt)
        assert results[precision]["precision"] == precision
        assert json.loads((tmp_path / precision / "metrics.json").read_text())["precision"] == precision
    assert results["bf16"]["mean_iou"] == pytest.approx(results["fp32"]["mean_iou"], abs=0.01)
