"""Where ONNX Runtime spends its time on the exported network: share per operator and the slowest nodes.

Answers whether anything outside the convolution kernels (resizes, concatenations, layout reorders)
is worth optimising in the export. The same DeepLabV3+ ResNet-18 as ``bench_runtimes.py`` (8 classes,
random weights: the speed is the same), exported by ``segvn.inference.export``, profiled with
``SessionOptions.enable_profiling`` over ``--iters`` runs after ``--warmup``, with the session options
:class:`segvn.inference.runtimes.RuntimeModel` uses (the input shape fixed, no spinning).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/profile_onnx.py [--size 368x480] [--threads 2]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="368x480")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()

    import onnxruntime as ort

    from segvn.inference.export import export_network
    from segvn.models.factory import build_network

    h, w = (int(v) for v in args.size.split("x"))
    torch.manual_seed(0)
    module = build_network(num_classes=8).eval()
    names = [f"c{i}" for i in range(8)]
    meta = {"format": "onnx", "class_names": names, "output_stride": 16, "training_image_size": None}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_network(module, "onnx", path, meta)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        for name, size in (("batch", 1), ("height", h), ("width", w)):
            options.add_free_dimension_override_by_name(name, size)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"images": torch.rand(1, 3, h, w).mul(255).numpy()}
        for _ in range(args.warmup):
            session.run(None, feed)
        start = time.perf_counter()
        for _ in range(args.iters):
            session.run(None, feed)
        ms = (time.perf_counter() - start) * 1000 / args.iters
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = args.warmup + args.iters
    by_op, by_node = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"].get("op_name", "?")] += event["dur"]
            by_node[event["name"].removesuffix("_kernel_time")] += event["dur"]
    total = sum(by_op.values())
    print(f"{h}x{w}, {args.threads} threads: {ms:.1f} ms per run")
    for op, us in by_op.most_common():
        print(f"  {op:24s} {us / total:6.1%}  {us / runs / 1000:7.2f} ms/run")
    print("slowest nodes:")
    for node, us in by_node.most_common(args.top):
        print(f"  {node:64s} {us / runs / 1000:7.2f} ms/run")


if __name__ == "__main__":
    main()
