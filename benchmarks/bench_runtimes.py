"""Benchmark the runtimes of ``predict``/``evaluate``: PyTorch eager vs onnxruntime vs TorchScript.

For each input size (default 368x480 and 720x1280), batch 1 (``--batch``), the same DeepLabV3+
ResNet-18 (8 classes; ``--ckpt`` for a trained one, else random weights: the speed is the same) is
timed through :class:`segvn.inference.export.RuntimeModel` (ONNX, TorchScript) and eagerly (torch),
all on normalised tensors with the stride padding included, after ``--warmup`` runs, as medians over
``--iters`` runs. In the same run a large fp32 GEMM (``--gemm`` square) measures the machine's GFLOP/s,
so results from different (or busy) machines compare as ratios: ms x GFLOP/s is roughly constant.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_runtimes.py [--sizes 368x480 720x1280]
        [--iters 10] [--threads N] [--out outputs/bench/runtimes.json]

Prints one line per runtime and size and writes the JSON (latency ms, frames/s, GEMM GFLOP/s,
versions, threads).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def gemm_gflops(n: int, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9


def timed(fn, x: torch.Tensor, warmup: int, iters: int) -> list[float]:
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["368x480", "720x1280"])
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnx", "torchscript"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads")
    parser.add_argument("--gemm", type=int, default=2048)
    parser.add_argument("--ckpt", type=Path, default=None)
    parser.add_argument("--out", "--json", type=Path, default=Path("outputs/bench/runtimes.json"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one iteration (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.iters, args.warmup, args.gemm = ["96x128"], 1, 0, 256

    from segvn.inference.export import RuntimeModel, export_network
    from segvn.models.factory import build_network

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if args.ckpt is not None:
        from segvn.inference.export import export_metadata
        from segvn.models.checkpoint import Checkpoint

        ckpt = Checkpoint.read(args.ckpt)
        module = ckpt.model()
        meta = lambda fmt: export_metadata(ckpt, module, fmt)  # noqa: E731
    else:
        torch.manual_seed(0)
        module = build_network(num_classes=8).eval()
        module.class_names = [f"c{i}" for i in range(8)]
        meta = lambda fmt: {  # noqa: E731
            "format": fmt, "class_names": module.class_names, "output_stride": 16, "training_image_size": None,
        }  # fmt: skip
    gflops_before = gemm_gflops(args.gemm)
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        for runtime in args.runtimes:
            if runtime == "torch":
                models[runtime] = module
            else:
                path = Path(tmp) / f"model.{'onnx' if runtime == 'onnx' else 'pt'}"
                export_network(module, runtime, path, meta(runtime))
                models[runtime] = RuntimeModel(path, threads=threads)
        results = []
        for size in args.sizes:
            h, w = (int(v) for v in size.split("x"))
            x = torch.randn(args.batch, 3, h, w)
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                module(x)
            flops = counter.get_total_flops()
            for runtime, model in models.items():
                times = timed(model, x, args.warmup, args.iters)
                ms = statistics.median(times) * 1000
                row = {
                    "runtime": runtime, "size": [h, w], "batch": args.batch, "median_ms": round(ms, 2),
                    "min_ms": round(min(times) * 1000, 2), "frames_per_s": round(args.batch * 1000 / ms, 3),
                    "gflop": round(flops / 1e9, 2), "gflop_per_s": round(flops / 1e9 / (ms / 1000), 2),
                }  # fmt: skip
                results.append(row)
                print(
                    f"{runtime:12s} {h}x{w} batch {args.batch}: {ms:8.1f} ms  {row['frames_per_s']:6.2f} fps"
                )
    gflops = (gflops_before + gemm_gflops(args.gemm)) / 2
    for row in results:
        row["fraction_of_gemm"] = round(row["gflop_per_s"] / gflops, 4)
    first = results[0]["size"]
    by = {r["runtime"]: r for r in results if r["size"] == first}
    headline = {"size": "x".join(map(str, first)), "gemm_gflops": round(gflops, 1)}
    if "torch" in by:
        headline.update(
            {f"{rt}_over_eager": round(by["torch"]["median_ms"] / r["median_ms"], 2) for rt, r in by.items()}
        )
    headline["best_fraction_of_gemm"] = max(r["fraction_of_gemm"] for r in by.values())
    import onnxruntime

    report = {
        "gemm": {"n": args.gemm, "gflops": round(gflops, 2), "before": round(gflops_before, 2)},
        "threads": threads,
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "iters": args.iters,
        "results": results,
        "headline": headline,
    }
    print(f"fp32 GEMM {args.gemm}^2: {gflops:.1f} GFLOP/s ({threads} threads)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
