"""Benchmark the runtimes of ``predict``/``evaluate``: PyTorch eager vs onnxruntime vs TorchScript vs OpenVINO.

For each input size (default 368x480, 720x1280 and 1088x1920), batch 1 (``--batch``), the same
DeepLabV3+ ResNet-18 (8 classes; ``--ckpt`` for a trained one, else random weights: the speed is the
same) is timed through :class:`segvn.inference.runtimes.RuntimeModel` (``onnx``, ``torchscript``) and
in PyTorch: eager as ``runtime=torch`` runs it with ``precision=fp32 channels_last=false`` (``torch``),
with channels_last weights and inputs (``torch_cl``), with bf16 autocast as well (``torch_bf16``), and
``torch.compile`` with Inductor's weight freezing (``torch_compile``), and the int8 ONNX network of
``segvn.export quantize=int8`` (``onnx_int8``), and OpenVINO (``runtime=openvino``) on the IR of
``segvn.export format=openvino``: fp32 (``openvino``), the bf16 precision hint (``openvino_bf16``; fp32
where the CPU has no native bf16) and NNCF int8 (``openvino_int8``, ``quantize=int8``). All run on RGB
0-255 tensors (the network normalises) with the
stride padding included, after ``--warmup`` runs, as medians over ``--iters`` runs taken in
``--rounds`` interleaved rounds (each round times every runtime in turn, every other round in reverse
order, so a drift of the shared machine's speed reaches them all alike).

In the same run a large fp32 GEMM (``--gemm`` square) measures the machine's GFLOP/s, twice (before
and after) with two libraries: MKL through ``torch.mm`` and MLAS through a one-node onnxruntime
MatMul. On AMD CPUs MKL takes a slower code path than MLAS, so the reference is the faster of the two
(both are in the JSON). Results from different or busy machines compare as ratios: ms x GFLOP/s is
roughly constant. The int8 and bf16 matrix rates are measured the same way (before and after), as an
n x n MatMul in OpenVINO, int8 (NNCF-quantized) and with the bf16 hint, with the kernels that ran them:
the ceiling of the int8 and bf16 runtimes on this CPU.

``--profile`` adds OpenVINO's per-layer profile (``PERF_COUNT``: time per layer type and the slowest
layers) of the fastest OpenVINO variant at 720x1280 (else the first size) to the JSON.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_runtimes.py [--sizes 368x480 720x1280]
        [--runtimes torch onnx openvino ...] [--iters 10] [--threads N] [--profile]
        [--out outputs/bench/runtimes.json]

Prints one line per runtime and size and writes the JSON (latency ms, frames/s, GFLOP/s and its
fraction of the GEMM rate, versions, threads). The headline gives each runtime's speed-up over eager
at the first size and the best runtime's fraction of the GEMM rate at 720x1280 (else the first size).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def _best_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_gflops(n: int, threads: int, repeats: int = 5) -> dict[str, float]:
    """fp32 GFLOP/s of an n x n GEMM in MKL (torch.mm) and in MLAS (an onnxruntime MatMul)."""
    import onnxruntime
    from onnx import TensorProto, helper

    a, b = torch.randn(n, n), torch.randn(n, n)
    spec = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "abc"]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", spec[:2], spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feed = {"a": a.numpy(), "b": b.numpy()}
    flop = 2 * n**3 / 1e9
    return {
        "mkl": round(flop / _best_seconds(lambda: torch.mm(a, b), repeats), 2),
        "mlas": round(flop / _best_seconds(lambda: session.run(None, feed), repeats), 2),
    }


def matrix_rates(n: int, threads: int, repeats: int = 5) -> dict[str, dict[str, Any]]:
    """GOP/s and kernel of an n x n MatMul in OpenVINO: fp32, the bf16 hint, and int8 (NNCF)."""
    import nncf
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops

    from segvn.inference.openvino import core

    rng = np.random.default_rng(0)
    x = ops.parameter([n, n], np.float32, name="x")
    weights = ops.constant((rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32))
    fp32 = ov.Model([ops.matmul(x, weights, False, True)], [x], "gemm")
    feed = rng.standard_normal((n, n)).astype(np.float32)
    int8 = nncf.quantize(fp32, nncf.Dataset([feed]), subset_size=1)
    rates = {}
    for name, model, hint in (("fp32", fp32, "f32"), ("bf16", fp32, "bf16"), ("int8", int8, "f32")):
        config = {
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads,
        }
        compiled = core().compile_model(model, "CPU", config | {"PERF_COUNT": True})
        request = compiled.create_infer_request()
        seconds = _best_seconds(lambda request=request: request.infer({0: feed}), repeats)
        kernels = sorted(
            {i.exec_type for i in request.get_profiling_info() if "FullyConnected" in i.node_type}
        )
        rates[name] = {"gops": round(2 * n**3 / 1e9 / seconds, 2), "kernel": ", ".join(kernels)}
    return rates


def torch_variant(module: torch.nn.Module, runtime: str):
    """The PyTorch ways to run ``module``: eager as ``runtime=torch`` runs it (``torch``: fp32 NCHW,
    ``torch_cl``: channels_last, ``torch_bf16``: bf16 autocast + channels_last, via
    :class:`segvn.inference.precision.PrecisionModel`), or compiled with frozen weights."""
    from segvn.inference.precision import InferencePrecision, with_precision

    eager = {
        "torch": InferencePrecision(),
        "torch_cl": InferencePrecision(channels_last=True),
        "torch_bf16": InferencePrecision(bf16=True, channels_last=True),
    }
    if runtime in eager:
        return with_precision(copy.deepcopy(module) if runtime != "torch" else module, eager[runtime])
    if runtime != "torch_compile":
        raise SystemExit(f"unknown runtime {runtime!r}")
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # weights become constants: folded BN, prepacked oneDNN kernels
    return torch.compile(copy.deepcopy(module))


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
    parser.add_argument("--sizes", nargs="+", default=["368x480", "720x1280", "1088x1920"])
    parser.add_argument(
        "--runtimes",
        nargs="+",
        default=[
            "torch", "torch_cl", "torch_bf16", "torch_compile", "onnx", "onnx_int8", "torchscript",
            "openvino", "openvino_bf16", "openvino_int8",
        ],
    )  # fmt: skip
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over the runtimes")
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads")
    parser.add_argument("--gemm", type=int, default=2048)
    parser.add_argument("--ckpt", type=Path, default=None)
    parser.add_argument("--out", "--json", type=Path, default=Path("outputs/bench/runtimes.json"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one iteration (a smoke run)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="OpenVINO's per-layer profile of its fastest variant at 720x1280",
    )
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.iters, args.warmup, args.rounds, args.gemm = ["96x128"], 1, 0, 1, 256

    from segvn.inference.export import export_network, write_onnx_metadata
    from segvn.inference.runtimes import RuntimeModel
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
    gemm_before = gemm_gflops(args.gemm, threads)
    matrix_before = matrix_rates(args.gemm, threads)
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        for runtime in args.runtimes:
            if runtime.startswith("torch_") or runtime == "torch":
                models[runtime] = torch_variant(module, runtime)
            elif runtime.startswith("openvino"):  # int8 calibrated on noise, as onnx_int8
                from segvn.inference.openvino import OpenVINOModel, export_ir

                path = Path(tmp) / f"{runtime}.xml"
                h, w = (int(v) for v in args.sizes[0].split("x"))
                noise = (
                    [torch.rand(1, 3, h, w).mul(255).numpy() for _ in range(2)]
                    if runtime.endswith("int8")
                    else ()
                )
                export_ir(module, path, meta("openvino"), calibration=noise)
                precision = "bf16" if runtime.endswith("bf16") else "fp32"
                models[runtime] = OpenVINOModel(path, threads=threads, precision=precision)
            elif runtime == "onnx_int8":  # calibrated on noise: the ranges differ, the speed does not
                from segvn.inference.quantize import quantize_onnx

                fp32 = export_network(module, "onnx", Path(tmp) / "fp32.onnx", meta("onnx"))
                h, w = (int(v) for v in args.sizes[0].split("x"))
                path = Path(tmp) / "model.int8.onnx"
                quantize_onnx(fp32, path, [torch.rand(1, 3, h, w).mul(255).numpy() for _ in range(2)])
                write_onnx_metadata(path, {**meta("onnx"), "precision": "int8"})
                models[runtime] = RuntimeModel(path, threads=threads)
            else:
                path = Path(tmp) / f"model.{'onnx' if runtime == 'onnx' else 'pt'}"
                export_network(module, runtime, path, meta(runtime))
                models[runtime] = RuntimeModel(path, threads=threads)
        results = []
        for size in args.sizes:
            h, w = (int(v) for v in size.split("x"))
            x = torch.rand(args.batch, 3, h, w).mul(255)
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                module(x)
            flops = counter.get_total_flops()
            # interleaved rounds: on a shared host the speed drifts within minutes, and timing each
            # runtime in one block would credit that drift to whichever ran in the faster minute
            times = {runtime: timed(model, x, args.warmup, 0) for runtime, model in models.items()}
            per_round = max(1, args.iters // args.rounds)
            for r in range(args.rounds):  # every other round in reverse: no runtime always follows one
                for runtime in list(models)[:: 1 if r % 2 == 0 else -1]:
                    times[runtime] += timed(models[runtime], x, 0, per_round)
            for runtime in models:
                ms = statistics.median(times[runtime]) * 1000
                row = {
                    "runtime": runtime, "size": [h, w], "batch": args.batch, "median_ms": round(ms, 2),
                    "min_ms": round(min(times[runtime]) * 1000, 2), "frames_per_s": round(args.batch * 1000 / ms, 3),
                    "gflop": round(flops / 1e9, 2), "gflop_per_s": round(flops / 1e9 / (ms / 1000), 2),
                }  # fmt: skip
                results.append(row)
                print(
                    f"{runtime:12s} {h}x{w} batch {args.batch}: {ms:8.1f} ms  {row['frames_per_s']:6.2f} fps"
                )
        profile = None
        if args.profile and any(r.startswith("openvino") for r in models):
            from segvn.inference.openvino import layer_profile

            at = [720, 1280] if any(r["size"] == [720, 1280] for r in results) else results[0]["size"]
            rows = [r for r in results if r["size"] == at and r["runtime"].startswith("openvino")]
            fastest = min(rows, key=lambda r: r["median_ms"])["runtime"]
            profile = {
                "runtime": fastest,
                **layer_profile(models[fastest], torch.rand(args.batch, 3, *at).mul(255).numpy()),
            }
            print(f"profile of {fastest} at {at[0]}x{at[1]}: " + ", ".join(
                f"{t['type']} {t['ms']:.1f} ms" for t in profile["by_type"][:5]
            ))  # fmt: skip
    gemm_after = gemm_gflops(args.gemm, threads)
    matrix_after = matrix_rates(args.gemm, threads)
    matrix = {
        name: {
            **matrix_after[name],
            "gops": round((matrix_before[name]["gops"] + matrix_after[name]["gops"]) / 2, 2),
        }
        for name in matrix_before
    }
    gemm = {lib: (gemm_before[lib] + gemm_after[lib]) / 2 for lib in gemm_before}
    gflops = max(gemm.values())
    for row in results:
        row["fraction_of_gemm"] = round(row["gflop_per_s"] / gflops, 4)
        kind = (
            "int8" if row["runtime"].endswith("int8") else "bf16" if row["runtime"].endswith("bf16") else None
        )
        if kind:  # against the matrix rate of its own number format
            row[f"fraction_of_{kind}_matmul"] = round(row["gflop_per_s"] / matrix[kind]["gops"], 4)
    first = results[0]["size"]
    by = {r["runtime"]: r for r in results if r["size"] == first}
    headline = {"size": "x".join(map(str, first)), "gemm_gflops": round(gflops, 1)}
    if "torch" in by:
        headline.update(
            {f"{rt}_over_eager": round(by["torch"]["median_ms"] / r["median_ms"], 2) for rt, r in by.items()}
        )
    for size in sorted({tuple(r["size"]) for r in results} - {tuple(first)}):  # ONNX Runtime, other sizes
        at = {r["runtime"]: r["median_ms"] for r in results if tuple(r["size"]) == size}
        if "torch" in at and "onnx" in at:
            headline[f"onnx_over_eager_{size[0]}x{size[1]}"] = round(at["torch"] / at["onnx"], 2)
    goal_size = [720, 1280] if any(r["size"] == [720, 1280] for r in results) else first
    goal_rows = [r for r in results if r["size"] == goal_size]
    best = min(goal_rows, key=lambda r: r["median_ms"])
    headline[f"best_at_{goal_size[0]}x{goal_size[1]}"] = best["runtime"]
    headline["best_fraction_of_gemm"] = best["fraction_of_gemm"]
    for kind in ("int8", "bf16"):
        if f"fraction_of_{kind}_matmul" in best:
            headline[f"best_fraction_of_{kind}_matmul"] = best[f"fraction_of_{kind}_matmul"]
    if "onnx_int8" in {r["runtime"] for r in goal_rows}:
        int8_ms = next(r["median_ms"] for r in goal_rows if r["runtime"] == "onnx_int8")
        headline["best_over_onnx_int8"] = round(int8_ms / best["median_ms"], 2)
    import onnxruntime
    import openvino

    report = {
        "gemm": {"n": args.gemm, "gflops": round(gflops, 2), **{k: round(v, 2) for k, v in gemm.items()}},
        "gemm_runs": {"before": gemm_before, "after": gemm_after},
        "threads": threads,
        "matrix": {"n": args.gemm, "library": "openvino", **matrix},
        "matrix_runs": {"before": matrix_before, "after": matrix_after},
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.__version__,
        },  # fmt: skip
        "iters": args.iters,
        "rounds": args.rounds,
        "results": results,
        "headline": headline,
        "profile": profile,
    }
    print(
        f"fp32 GEMM {args.gemm}^2: MKL {gemm['mkl']:.1f}, MLAS {gemm['mlas']:.1f} GFLOP/s ({threads} threads); "
        + ", ".join(f"OpenVINO {k} {v['gops']:.1f} GOP/s ({v['kernel']})" for k, v in matrix.items())
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
