"""Benchmark ``segvn.predict`` on the dash-cam video: pipeline speed, and TC/speed of temporal smoothing.

``speed`` mode compares, on the same first ``--frames`` frames, the same model, input size and batch:

* **end-to-end**: :func:`segvn.inference.video.run_prediction`, as ``python -m segvn.predict`` runs it
  (decode thread -> batched model -> writer thread with overlay, legend, H.264; TC thread), timed from
  opening the file to the closed mp4;
* **model-only**: :class:`segvn.inference.predictor.Predictor` alone on the frames already decoded in memory
  (resize, network with its normalisation, upsampling, argmax, class shares), the pipeline's ceiling;
* **naive**: one frame at a time in one thread: read, infer (batch 1), blend + legend, encode, TC.

Model-only is the faster of two ways to run the model alone: one caller with every core, and
``model_workers`` callers at once (predict's default on a CPU: two ONNX Runtime sessions' worth of one
thread each) on consecutive batches.

The goal is end-to-end >= 0.9x model-only: decoding, drawing, encoding and TC hidden behind the model.

``labels`` mode times the labels at the frame size from real scores of the model (at ``--size``, batch
2): :func:`segvn.inference.upsample.upsampled_labels` against resizing every class map
(``F.interpolate``) and the argmax, at 540x960, 720x1280 and 1080x1920, and counts the pixels where
they differ.

``temporal`` mode runs the pipeline with ``temporal.ema`` in {0, 0.5, 0.8} and ``flow_aligned`` off/on
and reports TC (Liu et al. 2020; higher = more stable) and speed; ``--agree`` also reports how many
pixels keep the unsmoothed (ema=0) label. TC of a barely trained model says little about a good one, so
pass ``--ckpt`` for a real model; without it a model is trained briefly on CamVid (``--train-batches``)
and cached under ``outputs/bench/predict_ckpt``.

    .venv/bin/python benchmarks/bench_predict.py [speed|labels|temporal|all] [--ckpt PATH] [--frames 100]
        [--size 270 480] [--batch 0] [--runtime auto] [--device auto]

The model runs as ``segvn.predict`` runs it by default: ``--runtime auto`` (onnx, an export made in a
temporary folder, or torch bf16 + channels_last where a CPU with native bf16 runs it faster) and ``--batch 0`` = predict's default for the device (2 on the CPU). Default video:
``$SEGVN_SHARED/videos/solidWhiteRight.mp4`` (960x540, 25 fps, 221 frames); ``--frames 0`` takes all.

``speed`` also prints the bound threads can reach on this machine: the CPU time of everything but the
model (the naive loop's seconds outside the Predictor, per frame) spread over the cores beside a model
that keeps them all busy.

Results on 2 CPU cores (ResNet-18 DeepLabV3+ at 270x480, quiet machine, medians of 3):

* ``speed --frames 0 --repeats 3`` (onnx, batch 2; make bench 2026-11-25 04:33): model-only 21.96 fps,
  end-to-end 19.23 fps (0.876x), naive 17.46 fps (end-to-end 1.10x naive); the rest of the pipeline
  takes 10.1 ms of CPU per frame, so the 2-core bound is 19.77 fps (0.90x), reached at 0.973.
  Before TC's cv2 warp, the writer's cv2 colour conversion and x264 ultrafast: 0.81-0.83x, ~21 ms.
* ``temporal --frames 100 --agree``: TC 0.695 without smoothing; ema 0.5: 0.729 (flow-aligned 0.745);
  ema 0.8: 0.792 (flow-aligned 0.817); 1.1% (0.5) and 2.3-2.5% (0.8) of the pixels change label;
  end-to-end fps 7.02 / 6.35 / 5.63 / 6.24 / 5.78 in that order.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from segvn.data.video import open_video
from segvn.data.video_writer import VideoWriter
from segvn.inference.consistency import TemporalTracker
from segvn.inference.device import pick_device
from segvn.inference.options import (
    PredictConfig,
    available_cores,
    batch_size_for,
    model_threads_for,
    model_workers_for,
    preset_for,
)
from segvn.inference.precision import choose_precision, with_precision
from segvn.inference.predictor import Predictor
from segvn.inference.runtime_choice import choose_runtime, faster_runtime, runtime_model
from segvn.inference.runtimes import RuntimeModel
from segvn.inference.smoothing import TemporalEMA
from segvn.inference.upsample import upsampled_labels
from segvn.inference.video import run_prediction
from segvn.metrics import class_indices
from segvn.models.checkpoint import Checkpoint, load_checkpoint, model_from_checkpoint
from segvn.viz.overlay import OverlayDrawer

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGVN_SHARED", REPO_ROOT.parent / "shared"))
DEFAULT_VIDEO = SHARED / "videos" / "solidWhiteRight.mp4"
CKPT_DIR = REPO_ROOT / "outputs" / "bench" / "predict_ckpt"


def train_checkpoint(batches: int, size: tuple[int, int]) -> Path:
    """A ResNet-18 DeepLabV3+ trained for ``batches`` steps on CamVid (cached)."""
    run_dir = CKPT_DIR / f"{batches}b_{size[0]}x{size[1]}"  # one cached checkpoint per recipe
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if ckpt.exists():
        print(f"using the cached checkpoint {ckpt}")
        return ckpt
    cmd = [
        sys.executable, "-m", "segvn.train", "+experiment=resnet18", "data=camvid",
        f"data.image_size=[{size[0]},{size[1]}]", "data.num_workers=0", "trainer.max_epochs=1",
        f"trainer.limit_train_batches={batches}", "trainer.limit_val_batches=2", "test=false",
        "logger=csv", "model.optimizer.lr=0.01", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    print(f"training a checkpoint on CamVid ({batches} batches at {size[0]}x{size[1]}) ...", flush=True)
    start = time.perf_counter()
    env = {**os.environ, "SEGVN_SHARED": str(SHARED), "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"training failed:\n{proc.stderr[-3000:]}")
    print(f"  trained in {time.perf_counter() - start:.0f} s -> {ckpt}")
    return ckpt


def first_frames(video: Path, n: int | None, i420: bool = True) -> list:
    """The first ``n`` frames as segvn.predict's decode thread hands them on (I420 where the video is BT.601)."""
    frames = []
    for frame in open_video(video, "pyav", i420=i420):
        frames.append(frame.image)
        if n and len(frames) == n:
            break
    return frames


def options(args, **kwargs) -> PredictConfig:
    """segvn.predict's defaults, with ``--preset`` for the overlay video's encoder when given."""
    config = PredictConfig(**kwargs)
    if args.preset:
        config.output.preset = args.preset
    if args.decode_threads is not None:
        config.video.threads = args.decode_threads
    if args.encoder_threads is not None:
        config.output.encoder_threads = args.encoder_threads
    return config


def model_only(module, frames, args, workers: int = 1) -> float:
    """The Predictor alone on decoded frames, called from ``workers`` threads on consecutive batches."""
    predictor = Predictor(module, args.device, args.size)
    predictor(frames[: args.batch])  # warm-up
    predictor.reset_timing()
    batches = [frames[i : i + args.batch] for i in range(0, len(frames), args.batch)]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(predictor, batches))
    return predictor.fps


def worker_model(module, workers: int):
    """The model ``workers`` threads share in segvn.predict: an ONNX session of cores / workers threads."""
    if workers > 1 and isinstance(module, RuntimeModel):
        return RuntimeModel(module.path, threads=model_threads_for(workers))
    return module


def end_to_end(module, video, args, out: Path, ema=0.0, flow_aligned=False) -> dict:
    """``run_prediction`` as segvn.predict runs it: ``args.workers`` model threads when ``ema == 0``."""
    workers = args.workers if not ema else 1
    predictor = Predictor(
        worker_model(module, workers), args.device, args.size, TemporalEMA(ema, flow_aligned)
    )
    predictor.workers = workers
    predictor(first_frames(video, args.batch))  # warm-up, like model_only
    predictor.reset()
    predictor.reset_timing()
    config = options(args, batch_size=args.batch, max_frames=args.frames or None, save_labels=args.agree)
    return run_prediction(predictor, out, args.class_names, config, videos=[video])


def naive(module, video, args, out: Path) -> tuple[float, float]:
    """Read, infer (batch 1), blend + legend, encode, TC: one frame at a time, one thread.

    Returns its frames per second and the seconds per frame spent outside the model.
    """
    predictor = Predictor(module, args.device, args.size)
    predictor(first_frames(video, 1))
    predictor.reset_timing()
    names = args.class_names
    defaults = options(args)
    drawer = OverlayDrawer(names, defaults.alpha, defaults.legend, defaults.legend_corner)
    tracker = TemporalTracker(len(names))
    start = time.perf_counter()
    # the backend and thread counts segvn.predict uses
    reader = open_video(video, str(defaults.video.backend), threads=defaults.video.threads)
    info, count = reader.info, 0
    video = VideoWriter(
        out / "naive.mp4",
        info.rate,
        info.width,
        info.height,
        crf=defaults.output.crf,
        preset=preset_for(defaults.output.preset),
        threads=defaults.output.encoder_threads,
    )
    with video as writer:
        for frame in reader:
            labels = predictor([frame.rgb]).labels[0]
            writer.write(drawer(frame.rgb, labels))
            tracker.add(frame.rgb, labels)
            count += 1
            if args.frames and count == args.frames:
                break
    seconds = time.perf_counter() - start
    return count / seconds, (seconds - predictor.seconds) / count


def speed(module, video, args, work: Path) -> dict:
    frames = first_frames(video, args.frames or None)
    n = len(frames)
    print(
        f"\nspeed: {n} frames of {video.name}, model input {args.size[0]}x{args.size[1]}, batch {args.batch}"
    )
    runs: dict[str, list[float]] = {"model_only": [], "end_to_end": [], "naive": []}
    pooled = worker_model(module, args.workers)
    for r in range(args.repeats):  # interleaved, so changes of machine load hit all three alike
        # model-only: the faster of one caller (all the cores) and the pipeline's workers (cores shared out)
        single = model_only(module, frames, args)
        workers = model_only(pooled, frames, args, args.workers) if args.workers > 1 else single
        runs.setdefault("model_only_one_worker", []).append(single)
        runs.setdefault("model_only_workers", []).append(workers)
        runs["model_only"].append(max(single, workers))
        summary = end_to_end(module, video, args, work / f"e2e_{r}")
        runs["end_to_end"].append(summary["fps"])
        runs.setdefault("end_to_end_model", []).append(summary["model_fps"])
        fps, other = naive(module, video, args, work)
        runs["naive"].append(fps)
        runs.setdefault("other_ms", []).append(other * 1e3)
        print(
            f"  repeat {r + 1}: model-only {runs['model_only'][-1]:.2f} fps (1 worker {single:.2f}, "
            f"{args.workers} workers {workers:.2f}), end-to-end {runs['end_to_end'][-1]:.2f} "
            f"fps (its model part {summary['model_fps']:.2f}), naive {runs['naive'][-1]:.2f} fps",
            flush=True,
        )
    med = {k: float(np.median(v)) for k, v in runs.items()}
    best = {k: float(np.max(v)) for k, v in runs.items()}
    result = {
        "frames": n,
        "fps_median": med,
        "fps_best": best,
        "end_to_end_over_model_only": med["end_to_end"] / med["model_only"],
        "end_to_end_over_model_only_best": best["end_to_end"] / best["model_only"],
        "end_to_end_over_naive": med["end_to_end"] / med["naive"],
        "runs": runs,
    }
    # What the threads can reach at best: the CPU time of everything but the model (the naive loop's
    # seconds outside the Predictor, per frame) spread over every core while the model keeps them busy.
    cores = available_cores()
    other = med["other_ms"] / 1e3
    bound = 1.0 / (1.0 / med["model_only"] + other / cores)
    result.update(cores=cores, other_ms_per_frame=other * 1e3, bound_fps=bound)
    result["bound_over_model_only"] = bound / med["model_only"]
    result["end_to_end_over_bound"] = med["end_to_end"] / bound
    print("| pipeline | fps (median) | fps (best) |\n| --- | --- | --- |")
    for key in ("model_only", "end_to_end", "naive"):
        print(f"| {key.replace('_', '-')} | {med[key]:.2f} | {best[key]:.2f} |")
    print(
        f"end-to-end / model-only = {result['end_to_end_over_model_only']:.3f} (medians), "
        f"{result['end_to_end_over_model_only_best']:.3f} (bests); goal >= 0.9. "
        f"end-to-end / naive = {result['end_to_end_over_naive']:.2f}x"
    )
    print(
        f"the rest of the pipeline takes {other * 1e3:.1f} ms of CPU per frame (the naive loop outside the model); spread "
        f"over {cores} cores beside a model that keeps them busy, end-to-end can reach {bound:.2f} fps "
        f"({result['bound_over_model_only']:.3f}x model-only); measured {result['end_to_end_over_bound']:.3f} of that"
    )
    return result


def labels(module, video, args) -> list[dict]:
    """upsampled_labels vs interpolate + argmax on the model's scores of two real frames."""
    frames = first_frames(video, 2)
    predictor = Predictor(module, args.device, args.size)
    small = torch.from_numpy(predictor.resizer(frames)).permute(
        0, 3, 1, 2
    )  # RGB uint8: the network normalises
    with torch.inference_mode():
        scores = module(small)

    def timed(fn, repeats: int = 20) -> float:
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats * 1e3

    rows = []
    print(f"\nlabels: scores of 2 frames at {args.size[0]}x{args.size[1]} to the frame size")
    print("| frame size | upsampled_labels ms | interpolate + argmax ms | speed-up | pixels that differ |")
    print("| --- | --- | --- | --- | --- |")
    with torch.inference_mode():
        for size in ((540, 960), (720, 1280), (1080, 1920)):

            def plain(size=size):
                resized = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
                return class_indices(resized).to(torch.uint8)

            fast, slow = timed(lambda size=size: upsampled_labels(scores, size)), timed(plain)
            differ = int((upsampled_labels(scores, size) != plain()).sum())
            rows.append({"size": list(size), "upsampled_ms": fast, "interpolate_ms": slow, "differ": differ})
            print(f"| {size[0]}x{size[1]} | {fast:.1f} | {slow:.1f} | {slow / fast:.1f}x | {differ} |")
    return rows


def temporal(module, video, args, work: Path) -> list[dict]:
    print(f"\ntemporal: first {args.frames or 'all'} frames, model input {args.size[0]}x{args.size[1]}")
    settings = [(0.0, False), (0.5, False), (0.5, True), (0.8, False), (0.8, True)]
    rows, reference = [], None
    for ema, aligned in settings:
        out = work / f"ema{ema}_{'flow' if aligned else 'plain'}"
        summary = end_to_end(module, video, args, out, ema, aligned)
        row = {
            "ema": ema,
            "flow_aligned": aligned,
            "tc": summary["tc"],
            "fps": summary["fps"],
            "model_fps": summary["model_fps"],
        }
        if args.agree:
            labels = sorted((out / "labels").rglob("*.png"))
            stack = np.stack([np.asarray(Image.open(p)) for p in labels])
            reference = stack if reference is None else reference
            row["same_label_as_ema0"] = float((stack == reference).mean())
        rows.append(row)
        print(f"  {row}", flush=True)
    print("| ema | flow-aligned | TC | end-to-end fps | model fps |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        aligned = "-" if r["ema"] == 0 else ("on" if r["flow_aligned"] else "off")
        print(f"| {r['ema']} | {aligned} | {r['tc']:.4f} | {r['fps']:.2f} | {r['model_fps']:.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", choices=("speed", "labels", "temporal", "all"), default="all")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--ckpt", type=Path, default=None, help="a segvn checkpoint (default: train one)")
    parser.add_argument("--frames", type=int, default=100, help="first N frames (0 = all)")
    parser.add_argument("--size", type=int, nargs=2, default=[270, 480], help="model input height width")
    parser.add_argument("--batch", type=int, default=0, help="0 = segvn.predict's default for the device")
    parser.add_argument("--runtime", default="auto", choices=("auto", "torch", "onnx", "torchscript"))
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--preset", default=None, help="libx264 preset of the overlay video (default: predict's)"
    )
    parser.add_argument("--decode-threads", type=int, default=None, help="default: predict's")
    parser.add_argument("--encoder-threads", type=int, default=None, help="default: predict's")
    parser.add_argument("--workers", type=int, default=0, help="model workers; 0 = segvn.predict's default")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--train-batches", type=int, default=40)
    parser.add_argument("--train-size", type=int, nargs=2, default=[180, 240])
    parser.add_argument("--agree", action="store_true", help="temporal: share of pixels equal to ema=0's")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "outputs" / "bench" / "bench_predict.json")
    args = parser.parse_args()
    args.size = tuple(args.size)
    if not args.video.exists():
        raise SystemExit(f"video not found: {args.video} (set SEGVN_SHARED or pass --video)")
    ckpt = args.ckpt or train_checkpoint(args.train_batches, tuple(args.train_size))
    module = model_from_checkpoint(load_checkpoint(ckpt)).eval()
    args.class_names = list(module.class_names)  # the model run may be wrapped (PrecisionModel)
    device = pick_device(args.device)
    args.batch = batch_size_for(args.batch or None, device)
    info = open_video(args.video).info
    results: dict = {"video": str(args.video), "checkpoint": str(ckpt), "size": list(args.size)}
    with tempfile.TemporaryDirectory(prefix="segvn_bench_predict_") as tmp:
        # the model segvn.predict runs with this runtime (an export made in tmp for onnx/torchscript);
        # auto on a CPU races openvino (and on a CPU with native bf16 torch and openvino bf16) against onnx at
        # --size, as predict does
        args.runtime, race = choose_runtime(args.runtime, "auto", device)
        network = module
        module = runtime_model(args.runtime, Checkpoint.read(ckpt), network, None, Path(tmp), device)
        precision = choose_precision("auto", None, device, args.runtime)
        if race:
            from segvn.inference.openvino import OpenVINOModel
            from segvn.utils.cpu import native_bf16_cpu

            twin = OpenVINOModel(module.path)
            module, args.runtime, precision = faster_runtime(
                module, network, tuple(args.size), None, twin, native_bf16_cpu()
            )
        if args.runtime != "openvino":  # openvino's precision is its compile hint, set by the race
            module = with_precision(module, precision)
        args.workers = model_workers_for(args.workers or None, device, args.runtime, 0.0)
        print(
            f"{args.video.name}: {info.width}x{info.height}, {info.fps:g} fps; checkpoint {ckpt}; runtime "
            f"{args.runtime} ({precision.describe()}), batch {args.batch}, {args.workers} model worker(s)"
        )
        results.update(
            batch=args.batch, runtime=args.runtime, precision=precision.describe(), model_workers=args.workers
        )
        if args.mode in ("speed", "all"):
            results["speed"] = speed(module, args.video, args, Path(tmp))
        if args.mode in ("labels", "all"):
            results["labels"] = labels(module, args.video, args)
        if args.mode in ("temporal", "all"):
            results["temporal"] = temporal(module, args.video, args, Path(tmp))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nresults -> {args.json}")


if __name__ == "__main__":
    main()
