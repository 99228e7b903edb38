"""``segvn.predict``: overlay videos/PNGs, class shares, summary, TC, smoothing, truncated input, errors.

Real data: the dash-cam video (960x540, 25 fps, 221 frames) and a checkpoint trained for two steps on
CamVid (``camvid_checkpoint`` in conftest). The model runs at a small input size (``image_size``) and on
the first frames only, so the in-process tests take seconds; the whole video runs in a ``slow`` test.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from segvn.data.classes import CLASS_NAMES, PALETTE
from segvn.data.video import open_video
from segvn.data.video_writer import VideoWriter
from segvn.data.yuv import I420Frame, image_size
from segvn.errors import ConfigError
from segvn.inference.device import pick_device
from segvn.inference.options import (
    PredictConfig,
    TemporalOptions,
    batch_size_for,
    model_workers_for,
    preset_for,
)
from segvn.inference.outputs import SharesCSV
from segvn.inference.predictor import BatchPrediction, Predictor
from segvn.inference.smoothing import TemporalEMA
from segvn.inference.streaming import Item, run_stream
from segvn.inference.upsample import upsampled_labels
from segvn.inference.video import collect_inputs, predict_video, run_prediction
from segvn.models.checkpoint import load_checkpoint, model_from_checkpoint
from segvn.utils.cpu import native_bf16_cpu
from segvn.viz.overlay import overlay

from .conftest import run_segvn

SMALL = (64, 96)  # model input size for the tests (the checkpoint was trained at 64x96)


# ------------------------------------------------------------------------------------------ helpers
def _compose(compose_ckpt, ckpt: Path, *overrides: str):
    """``(cfg, checkpoint)`` as ``python -m segvn.predict ckpt_path=CKPT OVERRIDES`` would run them."""
    return compose_ckpt(ckpt, overrides, config_name="predict")


def _video_facts(path: Path) -> tuple[int, float, int, int, list[np.ndarray]]:
    """(decoded frames, average rate, width, height, first two frames) of an mp4, decoded with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        rate, width, height = float(stream.average_rate), stream.width, stream.height
        first, count = [], 0
        for frame in container.decode(stream):
            if count < 2:
                first.append(frame.to_ndarray(format="rgb24"))
            count += 1
    return count, rate, width, height, first


def _shares(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _check_shares(rows: list[dict], class_names=CLASS_NAMES) -> np.ndarray:
    values = np.array([[float(r[c]) for c in class_names] for r in rows])
    assert np.isfinite(values).all()
    assert (values >= 0).all() and (values <= 1).all()
    np.testing.assert_allclose(values.sum(1), 1.0, atol=1e-4)
    return values


def _truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _first_frames(video: Path, n: int) -> list[np.ndarray]:
    frames = []
    for frame in open_video(video, "pyav"):
        frames.append(frame.rgb)
        if len(frames) == n:
            break
    return frames


@pytest.fixture(scope="session")
def module(camvid_checkpoint):
    return model_from_checkpoint(load_checkpoint(camvid_checkpoint))


# --------------------------------------------------------------------------------------- the video
@pytest.mark.slow
def test_video_outputs(module, video_path: Path, tmp_path: Path) -> None:
    options = PredictConfig(batch_size=4, max_frames=30, save_labels=True, legend=False)
    predictor = Predictor(module, "cpu", SMALL)
    summary = run_prediction(predictor, tmp_path, CLASS_NAMES, options, videos=[video_path])

    out = tmp_path / "solidWhiteRight_overlay.mp4"
    count, rate, width, height, first = _video_facts(out)
    assert (count, rate, width, height) == (30, 25.0, 960, 540)

    rows = _shares(tmp_path / "class_shares.csv")
    assert len(rows) == 30 and [int(r["frame"]) for r in rows] == list(range(30))
    np.testing.assert_allclose([float(r["timestamp"]) for r in rows], np.arange(30) / 25, atol=1e-6)
    assert {r["source"] for r in rows} == {str(video_path)}
    shares = _check_shares(rows)

    labels = sorted((tmp_path / "labels" / "solidWhiteRight").glob("*.png"))
    assert [p.name for p in labels[:2]] == ["solidWhiteRight_000000.png", "solidWhiteRight_000001.png"]
    assert len(labels) == 30
    label0 = Image.open(labels[0])
    assert label0.mode == "P" and label0.size == (960, 540)
    index0 = np.asarray(label0)
    assert index0.max() < len(CLASS_NAMES)
    assert np.asarray(label0.convert("RGB"))[0, 0].tolist() == PALETTE[index0[0, 0]].tolist()
    # the CSV's shares are those of the label maps
    np.testing.assert_allclose(np.bincount(index0.ravel(), minlength=8) / index0.size, shares[0], atol=1e-6)
    # the video shows the frame blended with its labels (alpha 0.4), frame 0 with labels 0
    frame0 = _first_frames(video_path, 1)[0]
    expected = overlay(frame0, index0, 0.4).astype(np.float32)
    assert np.abs(first[0].astype(np.float32) - expected).mean() < 4.0  # H.264 (crf 20) error only
    assert np.abs(first[0].astype(np.float32) - frame0).mean() > 8.0

    assert summary["status"] == "complete" and summary["errors"] == []
    assert summary["frames"] == 30 and summary["seconds"] > 0
    assert summary["fps"] > 0 and summary["model_fps"] >= summary["fps"] * 0.5
    assert 0.0 <= summary["tc"] <= 1.0 and summary["tc_pairs"] == 29
    (entry,) = summary["inputs"]
    assert entry["output"] == str(out) and entry["input"] == str(video_path)
    assert (entry["width"], entry["height"], entry["video_fps"], entry["frames"]) == (960, 540, 25.0, 30)
    assert entry["partial"] is False and entry["tc"] == summary["tc"]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert sum(summary["mean_class_shares"].values()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_checkpoint_predicts_as_with_normalisation_outside(
    module, camvid_checkpoint, camvid_root: Path
) -> None:
    """The network normalises inside now: a checkpoint gives the labels it gave when callers normalised
    (ImageNet mean/std on 0-1 frames) and fed the smp model, on real CamVid frames, I420 as well."""
    ckpt = load_checkpoint(camvid_checkpoint)
    assert not any("normalize" in key for key in ckpt["state_dict"])  # the file did not change
    frames = [
        np.asarray(Image.open(p).convert("RGB")) for p in sorted((camvid_root / "val").glob("*.png"))[:3]
    ]
    got = Predictor(module, "cpu", SMALL, num_classes=8)(frames).labels
    small = np.stack([cv2.resize(f, SMALL[::-1], interpolation=cv2.INTER_AREA) for f in frames])
    x = torch.from_numpy(small).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        before = module.net.model((x - mean) / std)  # SMALL is a multiple of the stride: no padding
        assert torch.allclose(module(torch.from_numpy(small).permute(0, 3, 1, 2)), before, atol=1e-4)
    expected = upsampled_labels(before, frames[0].shape[:2]).numpy()
    assert got.shape == (3, 360, 480) and (got == expected).mean() >= 0.9999
    assert len(np.unique(expected)) > 1  # a real prediction, not one class everywhere


@pytest.mark.slow
def test_cli_whole_video(camvid_checkpoint, video_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_segvn(
        "predict",
        f"ckpt_path={camvid_checkpoint}", f"input={video_path}", f"image_size=[{SMALL[0]},{SMALL[1]}]",
        "batch_size=8", f"hydra.run.dir={out}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    count, rate, width, height, _ = _video_facts(out / "solidWhiteRight_overlay.mp4")
    assert (count, rate, width, height) == (221, 25.0, 960, 540)
    rows = _shares(out / "class_shares.csv")
    assert len(rows) == 221
    _check_shares(rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["frames"] == 221 and summary["tc_pairs"] == 220
    assert summary["image_size"] == list(SMALL) and summary["device"] == "cpu"
    # runtime=auto: the fastest of onnx (two model workers on 2+ cores) and openvino fp32, and on a CPU with
    # native bf16 torch bf16 and openvino bf16, on this network, timed at start and logged
    allowed = {("onnx", "fp32"), ("openvino", "fp32")}
    if native_bf16_cpu():
        allowed |= {("torch", "bf16"), ("openvino", "bf16")}
    assert (summary["runtime"], summary["precision"]) in allowed
    assert summary["model_workers"] == model_workers_for(None, "cpu", summary["runtime"], 0.0)
    for key in ("seconds", "fps", "model_fps", "tc"):
        assert summary[key] > 0, key
    log = (out / "predict.log").read_text()
    assert "221 frames" in log and "fps end-to-end" in log and "TC " in log
    assert "openvino fp32" in log and "ms per" in log  # the race
    assert ("torch bf16" in log) == native_bf16_cpu()
    assert (out / "config.yaml").exists()


@pytest.mark.slow
def test_truncated_video_keeps_partial_outputs(camvid_checkpoint, video_path: Path, tmp_path: Path) -> None:
    broken = _truncate(video_path, tmp_path / "cut.mp4", 0.2)
    out = tmp_path / "run"
    proc = run_segvn(
        "predict",
        f"ckpt_path={camvid_checkpoint}", f"input={broken}", f"image_size=[{SMALL[0]},{SMALL[1]}]",
        "legend=false", f"hydra.run.dir={out}",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    said = proc.stdout + proc.stderr
    assert "Traceback" not in said
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "partial"
    (entry,) = summary["inputs"]
    assert entry["partial"] is True
    frames = entry["frames"]
    assert 0 < frames < 221
    assert str(broken) in entry["error"] and f"frame {frames}" in entry["error"]
    assert summary["errors"] == [entry["error"]]
    # the error message names the file and the frame, and says the outputs are kept
    assert str(broken) in said and f"frame {frames}" in said and "kept" in said
    # a playable video with every frame before the damage, and their CSV rows
    count, rate, width, height, _ = _video_facts(out / "cut_overlay.mp4")
    assert (count, rate, width, height) == (frames, 25.0, 960, 540)
    rows = _shares(out / "class_shares.csv")
    assert [int(r["frame"]) for r in rows] == list(range(frames))
    _check_shares(rows)


# ----------------------------------------------------------------------------- images and folders
def _write_clip(frames: list[np.ndarray], path: Path, size=(160, 96)) -> Path:
    with VideoWriter(path, 25, *size) as writer:
        for f in frames:
            writer.write(cv2.resize(f, size, interpolation=cv2.INTER_AREA))
    return path


@pytest.mark.slow
def test_image_and_folder_inputs(camvid_checkpoint, compose_ckpt, video_path: Path, tmp_path: Path) -> None:
    from segvn.predict import predict

    frames = _first_frames(video_path, 12)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(cv2.resize(frames[0], (160, 90))).save(folder / "a.png")
    Image.fromarray(cv2.resize(frames[5], (160, 90))).save(folder / "b.jpg")
    Image.fromarray(cv2.resize(frames[9], (120, 75))).save(folder / "c.png")
    (folder / "notes.txt").write_text("not an image")
    _write_clip(frames, folder / "clip.mp4")

    # one image
    out = tmp_path / "one"
    cfg, ckpt = _compose(
        compose_ckpt,
        camvid_checkpoint,
        f"input={folder / 'c.png'}",
        "save_labels=true",
        f"paths.output_dir={out}",
    )
    summary = predict(cfg, ckpt)
    assert Image.open(out / "overlays" / "c.png").size == (120, 75)
    assert Image.open(out / "labels" / "c.png").mode == "P"
    assert summary["frames"] == 1 and summary["tc"] is None and summary["inputs"][0]["kind"] == "images"
    # the training scale (trained at 64x96): 75x120 -> short side 64, 102.4 rounded to 16 -> 64x96
    assert summary["image_size"] == [64, 96] and summary["image_size_rule"] == "training-scale"
    assert summary["batch_size"] == 2, "batch_size=null: the CPU's measured default"
    assert summary["video_preset"] == preset_for(None), "output.preset=null: resolved for this machine"
    assert len(_shares(out / "class_shares.csv")) == 1

    # a folder: images of two sizes, and a video that gets its own overlay video
    out = tmp_path / "folder"
    cfg, ckpt = _compose(
        compose_ckpt, camvid_checkpoint, f"input={folder}", "save_labels=true", f"paths.output_dir={out}"
    )
    summary = predict(cfg, ckpt)
    assert sorted(p.name for p in (out / "overlays").glob("*.png")) == ["a.png", "b.png", "c.png"]
    assert Image.open(out / "overlays" / "b.png").size == (160, 90)
    count, rate, width, height, _ = _video_facts(out / "clip_overlay.mp4")
    assert (count, rate, width, height) == (12, 25.0, 160, 96)
    assert len(list((out / "labels" / "clip").glob("clip_*.png"))) == 12
    rows = _shares(out / "class_shares.csv")
    assert len(rows) == 15
    assert [r["source"] for r in rows[-3:]] == [str(folder / n) for n in ("a.png", "b.jpg", "c.png")]
    assert all(r["timestamp"] == "" for r in rows[-3:])
    _check_shares(rows)
    kinds = [(e["kind"], e["frames"]) for e in summary["inputs"]]
    assert kinds == [("video", 12), ("images", 3)]
    assert summary["tc_pairs"] == 11 and summary["frames"] == 15


def test_collect_inputs_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="input not found"):
        collect_inputs(tmp_path / "missing.mp4")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="has no videos or images"):
        collect_inputs(tmp_path)


@pytest.mark.slow
def test_prediction_set_of_the_data_module(
    camvid_checkpoint, compose_ckpt, video_path: Path, tmp_path: Path
) -> None:
    from segvn.predict import predict

    root = tmp_path / "hcmc"
    frames = _first_frames(video_path, 5)
    for street, picks in (("ly_thuong_kiet", (0, 1, 2)), ("bac_hai", (3, 4)), ("ha_huy_giap", (0,))):
        (root / street / "frames").mkdir(parents=True)
        for i in picks:
            small = cv2.resize(frames[i], (160, 90), interpolation=cv2.INTER_AREA)
            Image.fromarray(small).save(root / street / "frames" / f"VID0001_{i:06d}.png")
    cfg, ckpt = _compose(
        compose_ckpt, camvid_checkpoint, "data=vietnam", f"data.root={root}",
        "data.source.predict=[ly_thuong_kiet,bac_hai]", "data.image_size=[64,96]", "save_labels=true",
    )  # fmt: skip
    summary = predict(cfg, ckpt)
    out = Path(cfg.paths.output_dir)
    assert summary["image_size"] == [64, 96]  # the data config's image_size
    assert "ly_thuong_kiet" in summary["input"] and "bac_hai" in summary["input"]
    overlays = sorted(str(p.relative_to(out / "overlays")) for p in (out / "overlays").rglob("*.png"))
    assert overlays == [
        "bac_hai/VID0001_000003.png",
        "bac_hai/VID0001_000004.png",
        "ly_thuong_kiet/VID0001_000000.png",
        "ly_thuong_kiet/VID0001_000001.png",
        "ly_thuong_kiet/VID0001_000002.png",
    ]
    label = Image.open(out / "labels" / "bac_hai" / "VID0001_000003.png")
    assert label.mode == "P" and label.size == (160, 90)  # native size, not the model's input size
    assert [e["input"] for e in summary["inputs"]] == ["ly_thuong_kiet", "bac_hai"]
    assert len(_shares(out / "class_shares.csv")) == 5 == summary["frames"]


# ------------------------------------------------------------------------------------- smoothing
@pytest.mark.slow
def test_ema_zero_equals_no_smoothing(module, video_path: Path, tmp_path: Path) -> None:
    frames = _first_frames(video_path, 8)
    plain = Predictor(module, "cpu", SMALL)
    zero = Predictor(module, "cpu", SMALL, TemporalEMA(0.0, flow_aligned=True))
    smooth = Predictor(module, "cpu", SMALL, TemporalEMA(0.8, flow_aligned=True))
    for i in (0, 4):
        a, b, c = plain(frames[i : i + 4]), zero(frames[i : i + 4]), smooth(frames[i : i + 4])
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.shares, b.shares)
        if i == 0:  # the first frame of a stream has no history (probabilities instead of logits upsampled)
            assert (a.labels[0] == c.labels[0]).mean() > 0.999
    assert (a.labels != c.labels).any(), "ema=0.8 should change some pixels of later frames"

    # the whole pipeline with ema=0 writes exactly the unsmoothed shares
    options = PredictConfig(max_frames=8, legend=False, temporal=TemporalOptions(tc=False))
    for name, predictor in (("plain", Predictor(module, "cpu", SMALL)), ("zero", zero)):
        run_prediction(predictor, tmp_path / name, CLASS_NAMES, options, videos=[video_path])
    assert _shares(tmp_path / "plain" / "class_shares.csv") == _shares(tmp_path / "zero" / "class_shares.csv")


@pytest.mark.slow
@pytest.mark.parametrize("flow_aligned", [False, True])
def test_smoothing_in_the_pipeline(module, video_path: Path, tmp_path: Path, flow_aligned: bool) -> None:
    options = PredictConfig(max_frames=10, batch_size=3)
    predictor = Predictor(module, "cpu", SMALL, TemporalEMA(0.5, flow_aligned))
    summary = run_prediction(predictor, tmp_path, CLASS_NAMES, options, videos=[video_path])
    assert summary["frames"] == 10 and 0 <= summary["tc"] <= 1
    _check_shares(_shares(tmp_path / "class_shares.csv"))


# ------------------------------------------------------------------------- streaming and errors
class _FakePredictor:
    """Labels = a class per frame, optionally slow or failing; counts frames like Predictor."""

    smoother = None
    device = torch.device("cpu")

    def __init__(self, delay: float = 0.0, fail_at: int | None = None):
        self.delay, self.fail_at, self.frames, self.seconds = delay, fail_at, 0, 0.0

    def reset(self) -> None:
        pass

    def __call__(self, frames):
        if self.fail_at is not None and self.frames + len(frames) > self.fail_at:
            raise RuntimeError("model exploded")
        time.sleep(self.delay)
        self.frames += len(frames)
        self.seconds += self.delay + 1e-6
        h, w = image_size(frames[0])
        labels = np.stack([np.full((h, w), i % 8, np.uint8) for i in range(len(frames))])
        shares = np.eye(8)[np.arange(len(frames)) % 8]
        return BatchPrediction(labels, shares)


@pytest.mark.parametrize("workers", [1, 2])
def test_stream_memory_is_bounded(workers: int) -> None:
    """However long the input, at most a few batches are between decoding and writing."""
    produced, written, in_flight = [0], [0], []
    lock = threading.Lock()

    def items():
        for i in range(200):
            with lock:
                produced[0] += 1
                in_flight.append(produced[0] - written[0])
            yield Item(i, i / 25, np.zeros((8, 8, 3), np.uint8), "x", "x")

    def slow_writer(batch, prediction):
        time.sleep(0.002)
        with lock:
            written[0] += len(batch)

    predictor = _FakePredictor() if workers == 1 else _JitteryPredictor()
    error = run_stream(items(), predictor, [("write", slow_writer, lambda: None)], 4, 2, None, workers)
    assert error is None and written[0] == 200
    # producer queue (2) + predictor (1) + writer queue (2) + writer (1) batches, + the one being filled;
    # with workers: taken and not yet handed on (workers + 2) instead of the predictor's one
    assert max(in_flight) <= (7 if workers == 1 else 7 - 1 + workers + 2) * 4


class _JitteryPredictor:
    """Labels = the frames' first pixel; each call sleeps a random time, so calls from two threads finish
    out of order. Safe to call from several threads."""

    smoother = None
    device = torch.device("cpu")

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at, self.calls, self.lock = fail_at, 0, threading.Lock()
        self.rng = np.random.default_rng(0)

    def __call__(self, frames):
        with self.lock:
            self.calls += 1
            call, delay = self.calls, float(self.rng.uniform(0, 0.01))
        if self.fail_at is not None and call == self.fail_at:
            raise RuntimeError("model exploded")
        time.sleep(delay)
        labels = np.stack([np.full((2, 2), f[0, 0, 0], np.uint8) for f in frames])
        return BatchPrediction(labels, np.ones((len(frames), 8)) / 8)


def _numbered(count: int, fail_after: int | None = None):
    for i in range(count):
        if i == fail_after:
            raise OSError("damaged input")
        yield Item(i, None, np.full((2, 2, 3), i % 256, np.uint8), str(i), "x")


@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_model_workers_keep_the_order(workers: int) -> None:
    seen: list[tuple[int, int]] = []

    def consume(batch, prediction):
        seen.extend(
            (item.index, int(labels[0, 0])) for item, labels in zip(batch, prediction.labels, strict=True)
        )

    error = run_stream(
        _numbered(101), _JitteryPredictor(), [("c", consume, lambda: None)], 3, workers=workers
    )
    assert error is None
    assert seen == [(i, i % 256) for i in range(101)]  # every frame once, in order, with its own labels

    seen.clear()  # the input fails part-way: every frame before it is handed on, the error returned
    error = run_stream(
        _numbered(50, fail_after=20), _JitteryPredictor(), [("c", consume, lambda: None)], 3, 2, None, workers
    )
    assert isinstance(error, OSError) and [i for i, _ in seen] == list(range(20))

    closed = []  # the model fails: raised, and the consumer is closed all the same
    with pytest.raises(RuntimeError, match="model exploded"):
        run_stream(
            _numbered(50),
            _JitteryPredictor(fail_at=4),
            [("c", consume, lambda: closed.append(1))],
            3,
            workers=workers,
        )
    assert closed == [1]


@pytest.mark.slow
def test_model_workers_give_the_labels_of_one(module, video_path: Path, tmp_path: Path) -> None:
    """Two threads on one predictor: the same label maps and shares; the model seconds are wall time."""
    options = PredictConfig(max_frames=12, batch_size=2, legend=False, save_labels=True)
    for workers in (1, 2):
        predictor = Predictor(module, "cpu", SMALL)
        predictor.workers = workers
        start = time.perf_counter()
        summary = run_prediction(
            predictor, tmp_path / str(workers), CLASS_NAMES, options, videos=[video_path]
        )
        assert summary["frames"] == 12 and predictor.frames == 12
        assert 0 < predictor.seconds <= time.perf_counter() - start
    assert _shares(tmp_path / "1" / "class_shares.csv") == _shares(tmp_path / "2" / "class_shares.csv")
    for one in sorted((tmp_path / "1" / "labels").rglob("*.png")):
        two = tmp_path / "2" / one.relative_to(tmp_path / "1")
        np.testing.assert_array_equal(np.asarray(Image.open(one)), np.asarray(Image.open(two)))
    assert len(list((tmp_path / "1" / "labels").rglob("*.png"))) == 12


def test_model_workers_default_and_limits() -> None:
    cpu = torch.device("cpu")
    assert model_workers_for(None, cpu, "onnx", 0.0, cores=2) == 2
    assert model_workers_for(None, cpu, "onnx", 0.5, cores=2) == 1  # smoothing needs the batches in order
    assert model_workers_for(None, cpu, "onnx", 0.0, cores=1) == 1
    assert model_workers_for(None, cpu, "torch", 0.0, cores=2) == 1
    assert model_workers_for(None, torch.device("cuda", 0), "torch", 0.0, cores=16) == 1
    assert model_workers_for(3, cpu, "torch", 0.0) == 3
    with pytest.raises(ValueError, match="temporal smoothing"):
        run_stream(
            _numbered(4), Predictor(torch.nn.Identity(), "cpu", smoother=TemporalEMA(0.5)), [], 2, workers=2
        )


def test_model_error_still_finalises_the_video(video_path: Path, tmp_path: Path) -> None:
    shares = SharesCSV(tmp_path / "class_shares.csv", CLASS_NAMES)
    with pytest.raises(RuntimeError, match="model exploded"):
        predict_video(
            video_path, _FakePredictor(fail_at=10), tmp_path, CLASS_NAMES, shares,
            PredictConfig(batch_size=4, max_frames=20, legend=False),
        )  # fmt: skip
    shares.close()
    count, *_ = _video_facts(tmp_path / "solidWhiteRight_overlay.mp4")
    assert count == 8  # two whole batches made it before the failing one
    assert len(_shares(tmp_path / "class_shares.csv")) == 8


@pytest.mark.slow
def test_bad_settings(module, compose_ckpt, camvid_checkpoint, video_path: Path) -> None:
    from segvn.predict import predict

    for override, message in (
        ("batch_size=0", "batch_size"),
        ("temporal.ema=0.99", "ema"),
        ("temporal.tc_scale=0", "tc_scale"),
        ("image_size=[64]", "image_size"),
        ("model_workers=0", "model_workers"),
        ("model_workers=2,temporal.ema=0.5", "out of order"),
    ):
        cfg, ckpt = _compose(compose_ckpt, camvid_checkpoint, f"input={video_path}", *override.split(","))
        with pytest.raises(ConfigError, match=message):
            predict(cfg, ckpt)
    cfg, ckpt = _compose(compose_ckpt, camvid_checkpoint, "input=/no/such/video.mp4")
    with pytest.raises(FileNotFoundError, match="/no/such/video.mp4"):
        predict(cfg, ckpt)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda")
    assert pick_device("auto").type in ("cpu", "cuda")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_bad_checkpoint_is_a_clear_error(
    camvid_checkpoint, video_path: Path, tmp_path: Path, kind: str
) -> None:
    bad = tmp_path / "model.ckpt"
    if kind == "truncated":  # an interrupted copy
        data = camvid_checkpoint.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad.write_bytes(b"this is not a checkpoint" * 10)
    proc = run_segvn(
        "predict", f"ckpt_path={bad}", f"input={video_path}", f"hydra.run.dir={tmp_path / 'run'}", timeout=300
    )
    said = proc.stdout + proc.stderr
    assert proc.returncode == 1, said[-3000:]
    assert "Traceback" not in said
    assert str(bad) in said and "truncated or corrupt" in said


@pytest.mark.slow
def test_a_folder_with_bad_inputs_predicts_every_good_one(
    camvid_checkpoint, video_path: Path, tmp_path: Path
):
    frames = _first_frames(video_path, 6)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a_empty.mp4").write_bytes(b"")
    (folder / "b_garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    _write_clip(frames, folder / "c_good.mp4")
    _write_clip(frames[:4], folder / "d_good.mp4")
    Image.fromarray(cv2.resize(frames[0], (96, 64))).save(folder / "e.png")
    (folder / "f_broken.png").write_bytes((folder / "e.png").read_bytes()[:60])
    out = tmp_path / "run"
    proc = run_segvn(
        "predict",
        f"ckpt_path={camvid_checkpoint}", f"input={folder}", f"image_size=[{SMALL[0]},{SMALL[1]}]",
        f"hydra.run.dir={out}", timeout=300,
    )  # fmt: skip
    said = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in said, said[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "partial" and summary["frames"] == 6 + 4 + 1
    by_input = {Path(e["input"]).name: e for e in summary["inputs"]}
    assert by_input["c_good.mp4"]["frames"] == 6 and by_input["d_good.mp4"]["frames"] == 4
    assert by_input["a_empty.mp4"]["partial"] and by_input["b_garbage.mp4"]["partial"]
    assert len(summary["errors"]) == 3 and "f_broken.png" in summary["errors"][-1]
    assert (out / "c_good_overlay.mp4").exists() and (out / "d_good_overlay.mp4").exists()
    assert (out / "overlays" / "e.png").exists()
    last = [line for line in said.splitlines() if "ERROR" in line][-1]
    assert "a_empty.mp4" in last and "b_garbage.mp4" in last and "f_broken.png" in last

    stop = tmp_path / "stop"
    proc = run_segvn(
        "predict",
        f"ckpt_path={camvid_checkpoint}", f"input={folder}", f"image_size=[{SMALL[0]},{SMALL[1]}]",
        "on_error=stop", f"hydra.run.dir={stop}", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    summary = json.loads((stop / "summary.json").read_text())
    assert [Path(e["input"]).name for e in summary["inputs"]] == ["a_empty.mp4"], (
        "stopped at the first failure"
    )


@pytest.mark.slow
def test_a_rerun_into_the_same_folder_continues(camvid_checkpoint, video_path: Path, tmp_path: Path) -> None:
    frames = _first_frames(video_path, 6)
    folder = tmp_path / "in"
    folder.mkdir()
    _write_clip(frames, folder / "a.mp4")
    (folder / "b.mp4").write_bytes(b"still copying")
    out = tmp_path / "run"
    args = (f"ckpt_path={camvid_checkpoint}", f"input={folder}", f"image_size=[{SMALL[0]},{SMALL[1]}]",
            f"hydra.run.dir={out}")  # fmt: skip
    assert run_segvn("predict", *args, timeout=300).returncode == 1
    first = json.loads((out / "summary.json").read_text())
    assert first["status"] == "partial" and first["frames"] == 6
    stamp = (out / "a_overlay.mp4").stat().st_mtime_ns
    _write_clip(frames[:3], folder / "b.mp4")  # the copy is complete now
    proc = run_segvn("predict", *args, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 input(s) done by an earlier run are kept" in proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["frames"] == 9 and summary["tc_pairs"] == 5 + 2
    assert (out / "a_overlay.mp4").stat().st_mtime_ns == stamp, "a.mp4 was not predicted again"
    rows = _shares(out / "class_shares.csv")
    assert [(Path(r["source"]).name, int(r["frame"])) for r in rows] == [("a.mp4", i) for i in range(6)] + [
        ("b.mp4", i) for i in range(3)
    ]
    assert sum(summary["mean_class_shares"].values()) == pytest.approx(1.0, abs=1e-4)
    assert summary["inputs"][0]["tc"] == first["inputs"][0]["tc"]


def test_batch_size_default_follows_the_device():
    assert batch_size_for(None, torch.device("cpu")) == 2
    assert batch_size_for(None, torch.device("cuda", 0)) == 8
    assert batch_size_for(5, torch.device("cpu")) == 5


def test_video_preset_default_follows_the_core_count():
    assert preset_for(None, cores=2) == "ultrafast"  # the encoder would take the model's cores
    assert preset_for(None, cores=16) == "superfast"
    assert preset_for("medium", cores=2) == "medium"  # an explicit preset wins


# ------------------------------------------------------------------------------ labels at frame size
def _reference_labels(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    resized = torch.nn.functional.interpolate(scores, size=size, mode="bilinear", align_corners=False)
    return resized.argmax(dim=1).to(torch.uint8)


def _assert_argmax_of_the_resize(labels: torch.Tensor, scores: torch.Tensor, size: tuple[int, int]) -> None:
    """Every label is a best class of the bilinear resize; only float-rounding ties may pick another one.

    Exact equality with ``F.interpolate`` is too strict for a real model: where two classes score within
    rounding of each other, the argmax depends on the order of the float operations (which differs between
    kernels and threads). A label is accepted if its resized score is within 1e-5 (relative) of the best.
    """
    resized = torch.nn.functional.interpolate(
        scores.double(), size=size, mode="bilinear", align_corners=False
    )
    best = resized.max(dim=1).values
    chosen = resized.gather(1, labels.long()[:, None])[:, 0]
    tolerance = 1e-5 * resized.abs().amax().item()
    worst = (best - chosen).max().item()
    assert worst <= tolerance, f"a label scores {worst:.3g} below the best class (tolerance {tolerance:.3g})"
    differs = (labels != _reference_labels(scores, size)).float().mean().item()
    assert differs < 1e-4, f"{differs:.2%} of the labels differ from the reference: more than rounding ties"


@pytest.mark.parametrize(
    ("low", "size"),
    [
        ((17, 30), (68, 120)),
        ((45, 80), (540, 960)),
        ((33, 47), (100, 131)),
        ((60, 80), (37, 53)),
        ((9, 9), (9, 9)),
    ],
)
def test_upsampled_labels_are_the_argmax_of_the_bilinear_resize(low, size) -> None:
    """Up, down, odd and integer scales: only the 2x2 source blocks of two classes are interpolated."""
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.randn(2, 8, 6, 7), size=low, mode="bilinear")
    for scores in (smooth, torch.randn(2, 8, *low)):  # large regions, and a class change at every pixel
        labels = upsampled_labels(scores, size)
        assert labels.dtype == torch.uint8 and labels.shape == (2, *size)
        assert torch.equal(labels, _reference_labels(scores, size))


@pytest.mark.slow
def test_i420_frames_give_the_labels_of_rgb_frames(module, video_path: Path) -> None:
    """segvn.predict's video path (decoder planes resized, then converted) labels frames as RGB input does."""
    rgb = _first_frames(video_path, 2)
    yuv = [f.image for f, _ in zip(open_video(video_path, "pyav", i420=True), range(2), strict=False)]
    assert all(isinstance(f, I420Frame) for f in yuv)
    predictor = Predictor(module, "cpu", SMALL)
    a, b = predictor(rgb), predictor(yuv)
    assert a.labels.shape == b.labels.shape == (2, 540, 960)
    assert (a.labels == b.labels).mean() > 0.98
    np.testing.assert_allclose(a.shares, b.shares, atol=0.02)
    with pytest.raises(ValueError, match="one size"):
        predictor([yuv[0], I420Frame.from_rgb(rgb[0][:100, :100])])


@pytest.mark.slow
def test_upsampled_labels_of_a_real_model_on_a_real_frame(module, video_path: Path) -> None:
    frame = _first_frames(video_path, 1)[0]
    predictor = Predictor(module, "cpu", SMALL)
    small = torch.from_numpy(cv2.resize(frame, SMALL[::-1], interpolation=cv2.INTER_AREA)).permute(2, 0, 1)
    with torch.inference_mode():
        scores = module(small[None])  # RGB uint8: the network normalises
    size = frame.shape[:2]
    expected = _reference_labels(scores, size)
    assert len(expected.unique()) >= 2  # classes meet: there are blocks to interpolate
    _assert_argmax_of_the_resize(upsampled_labels(scores, size), scores, size)
    result = predictor([frame])
    labels = torch.from_numpy(np.ascontiguousarray(result.labels[0]))[None]
    _assert_argmax_of_the_resize(labels, scores, size)
    np.testing.assert_allclose(result.shares[0], np.bincount(labels.flatten(), minlength=8) / labels.numel())
