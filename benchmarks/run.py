"""Run every benchmark and write one JSON and one Markdown table: ``make bench`` (``make bench QUICK=1``).

Each benchmark runs as its own process (so one cannot skew the next through threads or caches) with
``--json``; the figures are ratios measured within one run, next to a description of the machine.
``--quick`` uses tiny sizes and few iterations: it proves every benchmark still runs (CI does this),
its figures mean little. Results go to ``benchmarks/results/latest.{json,md}`` (``quick.*`` with
``--quick``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent

BENCHES: dict[str, tuple[list[str], list[str]]] = {
    # name: (full arguments, quick arguments)
    "train_throughput": (
        ["bench_train_throughput.py", "--steps", "20", "--rounds", "3"],
        [
            "bench_train_throughput.py",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--rounds",
            "1",
            "--size",
            "64",
            "96",
            "--workers",
            "0",
        ],
    ),  # fmt: skip
    "bfscore": (
        ["bench_bfscore.py", "--threads", "1"],
        ["bench_bfscore.py", "--height", "180", "--width", "240", "--images", "1", "--repeats", "1"],
    ),
    "decode": (["bench_decode.py", "--repeats", "5"], ["bench_decode.py", "--repeats", "1"]),
    "predict": (
        ["bench_predict.py", "speed", "--frames", "0", "--repeats", "3"],
        [
            "bench_predict.py",
            "speed",
            "--frames",
            "8",
            "--repeats",
            "1",
            "--size",
            "64",
            "96",
            "--train-batches",
            "2",
            "--train-size",
            "64",
            "96",
        ],
    ),  # fmt: skip
    "runtimes": (["bench_runtimes.py"], ["bench_runtimes.py", "--quick"]),
    "precision": (
        ["bench_precision.py"],
        ["bench_precision.py", "--size", "64", "96", "--batch", "2", "--steps", "1", "--rounds", "1"],
    ),
}


def machine() -> dict:
    cpu = platform.processor()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def headline(name: str, r: dict) -> str:
    """The one figure of each benchmark that the results table (results/latest.md) shows."""
    if name == "train_throughput":
        return (
            f"segvn / plain loop = {r['ratio']:.3f} ({r['segvn_img_s']:.2f} vs {r['plain_img_s']:.2f} img/s)"
        )
    if name == "bfscore":
        return f"{r['speedup']:.1f}x the scipy reference, max abs delta {r['max_abs_delta']:.1e}"
    if name == "decode":
        return f"decord / PyAV = {r['decord_over_pyav']:.2f} ({r['best_fps']['decord']:.0f} vs {r['best_fps']['pyav']:.0f} fps)"
    if name == "predict":
        s = r["speed"]
        return (
            f"end-to-end / model-only = {s['end_to_end_over_model_only']:.3f}, "
            f"end-to-end / naive = {s['end_to_end_over_naive']:.3f}, "
            f"end-to-end / {s.get('cores', '?')}-core bound = {s['end_to_end_over_bound']:.3f} "
            f"({r.get('runtime', 'torch')}{' ' + r['precision'] if r.get('precision') else ''}, batch "
            f"{r['batch']}, {r.get('model_workers', 1)} model worker(s); "
            f"{s['fps_median']['end_to_end']:.1f} fps end to end)"
        )
    return ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.get("headline", {}).items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that every benchmark runs")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--only", nargs="*", default=None, help="run these benchmarks only")
    args = parser.parse_args()
    stem = "quick" if args.quick else "latest"
    args.out.mkdir(parents=True, exist_ok=True)
    doc: dict = {"machine": machine(), "quick": args.quick, "benchmarks": {}}
    for name, (full, quick) in BENCHES.items():
        if args.only and name not in args.only:
            continue
        script = HERE / (quick if args.quick else full)[0]
        if not script.exists():
            doc["benchmarks"][name] = {"status": "missing", "error": f"{script.name} not found"}
            continue
        out = args.out / f"{stem}_{name}.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, str(script), *(quick if args.quick else full)[1:], "--json", str(out)]
        start = time.perf_counter()
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"}
        )
        entry: dict = {"seconds": round(time.perf_counter() - start, 1), "command": " ".join(cmd[1:])}
        if proc.returncode == 0 and out.exists():
            entry.update(status="ok", result=json.loads(out.read_text()))
            entry["headline"] = headline(name, entry["result"])
        else:
            entry.update(status="failed", error=(proc.stderr or proc.stdout).strip().splitlines()[-1:])
        doc["benchmarks"][name] = entry
        print(
            f"{name}: {entry['status']} ({entry['seconds']} s) {entry.get('headline', entry.get('error', ''))}"
        )
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=2))
    m = doc["machine"]
    lines = [
        f"Benchmarks ({'quick' if args.quick else 'full'}), {m['date']}: {m['cpu']}, {m['cores']} cores, "
        f"torch {m['torch']} ({m['torch_threads']} threads), GPU: {m['cuda'] or 'none'}",
        "",
        "| benchmark | result | seconds |",
        "| --- | --- | --- |",
    ]
    for name, e in doc["benchmarks"].items():
        lines.append(f"| {name} | {e.get('headline') or e['status']} | {e.get('seconds', '')} |")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    failed = [n for n, e in doc["benchmarks"].items() if e["status"] == "failed"]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
