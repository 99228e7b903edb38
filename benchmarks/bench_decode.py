"""Benchmark full decoding to RGB numpy with segvn's two video backends, decord and PyAV.

Each repeat streams every frame of the video through :func:`segvn.data.video.open_video` (what extraction
and prediction use, including the probe pass and the conversion to RGB ``uint8``) and counts frames per
second. Prints the best and median of ``--repeats`` runs per backend and the decord / PyAV ratio; the
backends alternate so that machine load affects both alike. The faster one is ``conf/video/default.yaml``'s
``backend``.

    .venv/bin/python benchmarks/bench_decode.py [--video PATH] [--repeats 5] [--threads 0]

Default video: ``$SEGVN_SHARED/videos/solidWhiteRight.mp4`` (960x540, 25 fps, 221 frames).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from segvn.data.video import BACKENDS, open_video

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = (
    Path(os.environ.get("SEGVN_SHARED", REPO_ROOT.parent / "shared")) / "videos" / "solidWhiteRight.mp4"
)


def decode_fps(path: Path, backend: str, threads: int) -> tuple[float, int]:
    """Frames per second of one full decode to RGB numpy, and the number of frames."""
    start = time.perf_counter()
    frames = 0
    for _, _, rgb in open_video(path, backend, threads=threads):
        frames += rgb.shape[0] > 0
    return frames / (time.perf_counter() - start), frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="decoder threads (0 = FFmpeg's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if not args.video.exists():
        raise SystemExit(f"video not found: {args.video} (set SEGVN_SHARED or pass --video)")

    info = open_video(args.video, "pyav").info
    print(
        f"{args.video.name}: {info.width}x{info.height}, {info.fps:g} fps, {info.reported_frames} frames, {info.codec}"
    )
    for backend in BACKENDS:  # warm-up: imports, file cache
        decode_fps(args.video, backend, args.threads)
    results: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for _ in range(args.repeats):
        for backend in BACKENDS:
            fps, frames = decode_fps(args.video, backend, args.threads)
            results[backend].append(fps)
    for backend, runs in results.items():
        print(
            f"{backend:>7}: best {max(runs):7.1f} fps, median {statistics.median(runs):7.1f} fps "
            f"({frames} frames x {args.repeats} repeats, threads={args.threads})"
        )
    best = {b: max(r) for b, r in results.items()}
    median = {b: statistics.median(r) for b, r in results.items()}
    print(
        f"decord / pyav: {best['decord'] / best['pyav']:.2f}x (best), {median['decord'] / median['pyav']:.2f}x (median); "
        f"faster: {max(best, key=best.get)}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"video": args.video.name, "frames": frames, "best_fps": best, "median_fps": median}
        args.json.write_text(json.dumps({**doc, "decord_over_pyav": best["decord"] / best["pyav"]}, indent=2))


if __name__ == "__main__":
    main()
