"""Benchmark segvn's torch BF score against a straightforward scipy distance-transform reference.

Masks are realistic rather than noise: the truth is the argmax of smooth random class fields,
the prediction the argmax of the same fields shifted by a few pixels plus a finer smooth
perturbation (so prediction ~ truth with boundary errors); the bottom rows are ignored like an
ego-vehicle hood. Prints both timings (best of ``--repeats`` interleaved rounds), the speed-up
and the largest absolute difference of the per-class scores.

    .venv/bin/python benchmarks/bench_bfscore.py [--height 1080 --width 1920 --classes 8 --repeats 3]

The reference is single-threaded (scipy); ``--threads 1`` gives a per-core comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt

from segvn.metrics import bf_score_per_class


def smooth_fields(gen: torch.Generator, classes: int, height: int, width: int, cell: int) -> torch.Tensor:
    """``(classes, height, width)`` random fields, smooth at a scale of ``cell`` pixels."""
    coarse = torch.randn(1, classes, height // cell + 2, width // cell + 2, generator=gen)
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0]


def make_pair(
    seed: int, classes: int, height: int, width: int, ignore_index: int = 255
) -> tuple[np.ndarray, np.ndarray]:
    """A (prediction, truth) pair of uint8 label maps with smooth regions and boundary errors."""
    gen = torch.Generator().manual_seed(seed)
    fields = smooth_fields(gen, classes, height, width, cell=max(8, height // 12))
    truth = fields.argmax(0)
    shifted = torch.roll(fields, shifts=(3, -5), dims=(1, 2))
    pred = (shifted + 0.3 * smooth_fields(gen, classes, height, width, cell=max(4, height // 40))).argmax(0)
    truth[int(height * 0.9) :] = ignore_index
    return pred.to(torch.uint8).numpy(), truth.to(torch.uint8).numpy()


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask; the image border counts as outside."""
    p = np.pad(mask, 1)
    interior = mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~interior


def reference_bf(
    pred: np.ndarray, truth: np.ndarray, classes: int, ignore_index: int = 255, tolerance: float = 0.0075
) -> np.ndarray:
    """Per-class BF scores from one Euclidean distance transform per boundary map (scipy)."""
    valid = truth != ignore_index
    theta = tolerance * math.hypot(*truth.shape)
    theta_sq = theta * theta
    scores = np.full(classes, np.nan)
    for c in range(classes):
        true_b = _boundary(truth == c)
        pred_b = _boundary((pred == c) & valid)
        if not true_b.any() or not pred_b.any():
            continue
        dist_sq_to_true = np.rint(distance_transform_edt(~true_b) ** 2)
        dist_sq_to_pred = np.rint(distance_transform_edt(~pred_b) ** 2)
        precision = np.mean(dist_sq_to_true[pred_b] < theta_sq)
        recall = np.mean(dist_sq_to_pred[true_b] < theta_sq)
        total = precision + recall
        scores[c] = 0.0 if total == 0 else 2 * precision * recall / total
    return scores


def best_times(fns: list, repeats: int) -> tuple[list[float], list]:
    """Smallest wall time of each function over ``repeats`` interleaved rounds, and the last results.

    Interleaving keeps a load change on a shared machine from favouring one side.
    """
    best, results = [math.inf] * len(fns), [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            results[i] = fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--images", type=int, default=2, help="distinct image pairs, timed one at a time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    pairs = [make_pair(seed, args.classes, args.height, args.width) for seed in range(args.images)]
    device = torch.device(args.device)
    tensors = [(torch.from_numpy(p).to(device)[None], torch.from_numpy(t).to(device)[None]) for p, t in pairs]

    def run_torch() -> list[np.ndarray]:
        out = [bf_score_per_class(p, t, args.classes)[0] for p, t in tensors]
        if device.type == "cuda":
            torch.cuda.synchronize()
        return [s.cpu().numpy() for s in out]

    def run_reference() -> list[np.ndarray]:
        return [reference_bf(p, t, args.classes) for p, t in pairs]

    run_torch()  # warm-up
    (t_torch, t_ref), (ours, ref) = best_times([run_torch, run_reference], args.repeats)
    ours, ref = np.stack(ours), np.stack(ref)
    if not np.array_equal(np.isnan(ours), np.isnan(ref)):
        raise SystemExit("NaN pattern differs between torch and reference")
    max_diff = float(np.nanmax(np.abs(ours - ref))) if np.isfinite(ref).any() else 0.0
    per = f"per image, {args.height}x{args.width}, {args.classes} classes"
    print(f"torch threads: {torch.get_num_threads()}, device: {device}")
    print(f"scipy reference: {1e3 * t_ref / args.images:8.1f} ms {per}")
    print(f"segvn torch:     {1e3 * t_torch / args.images:8.1f} ms {per}")
    print(f"speed-up:        {t_ref / t_torch:8.1f}x")
    print(f"max |delta|:     {max_diff:.3e}")
    print(f"mean BF (torch): {np.nanmean(ours):.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "size": [args.height, args.width], "classes": args.classes, "threads": torch.get_num_threads(),
            "ms_reference": 1e3 * t_ref / args.images, "ms_segvn": 1e3 * t_torch / args.images,
            "speedup": t_ref / t_torch, "max_abs_delta": max_diff,
        }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
