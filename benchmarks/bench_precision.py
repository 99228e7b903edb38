"""Training-step and validation-forward time of DeepLabV3+ for fp32 vs bf16, NCHW vs channels_last.

    .venv/bin/python benchmarks/bench_precision.py [--encoder resnet18] [--size 176 240] [--batch 8]

One forward + weighted cross-entropy + backward + SGD step per iteration on a random batch, the
four settings interleaved over ``--rounds`` so machine noise hits them alike; the figure is each
setting's best ms/step and its speed-up over fp32 contiguous; then the same for a validation batch
(forward only, no gradients), which is what ``callbacks.memory_format.channels_last=eval`` runs in
NHWC. On CPUs with AVX512-BF16 (or AMX) oneDNN runs bf16 convolutions much faster than fp32, which is
why the fast recipes train with ``trainer.precision=bf16-mixed`` there (fp32 on CPUs without them, where
bf16 is emulated and slower) and
``callbacks.memory_format.channels_last=true`` (``eval`` for MobileNetV2, whose NHWC bf16 backward is
wrong on the CPU). ``--frozen-stages 2 3`` also times bf16 NCHW training steps with the encoder's
first N stages frozen (``callbacks.freeze_encoder.frozen_stages``: no backward through them), against
none frozen, interleaved the same way.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from segvn.models.factory import build_network, encoder_stages

SETTINGS = {
    "fp32": (False, False),
    "fp32_channels_last": (False, True),
    "bf16": (True, False),
    "bf16_channels_last": (True, True),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--size", type=int, nargs=2, default=[176, 240])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--frozen-stages", type=int, nargs="*", default=[], help="also time these N frozen")
    args = p.parse_args()
    torch.manual_seed(0)
    net = build_network(encoder_name=args.encoder)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(args.batch, 3, *args.size)
    y = torch.randint(0, 8, (args.batch, *args.size))

    def step(bf16: bool, channels_last: bool) -> None:
        xx = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(xx).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def forward(bf16: bool, channels_last: bool) -> None:
        xx = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            net(xx)

    def best_ms(fn, train: bool) -> dict[str, float]:
        """Each setting's best mean ms per call over the rounds, the settings interleaved."""
        net.train(train)
        times: dict[str, list[float]] = {k: [] for k in SETTINGS}
        for _ in range(args.rounds):
            for name, (bf16, channels_last) in SETTINGS.items():
                net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
                fn(bf16, channels_last)  # warm-up: oneDNN picks its kernels
                start = time.perf_counter()
                for _ in range(args.steps):
                    fn(bf16, channels_last)
                times[name].append((time.perf_counter() - start) / args.steps)
        return {k: min(v) * 1000 for k, v in times.items()}

    def frozen_ms() -> dict[int, float]:
        """bf16 NCHW ms per training step with the first N encoder stages frozen, N interleaved."""
        net.train(True)
        net.to(memory_format=torch.contiguous_format)
        stages = encoder_stages(net.model.encoder)
        times: dict[int, list[float]] = {n: [] for n in [0, *args.frozen_stages]}
        for _ in range(args.rounds):
            for n in times:
                for i, stage in enumerate(stages):
                    stage.requires_grad_(i >= n)
                step(True, False)
                start = time.perf_counter()
                for _ in range(args.steps):
                    step(True, False)
                times[n].append((time.perf_counter() - start) / args.steps)
        net.requires_grad_(True)
        return {n: min(v) * 1000 for n, v in times.items()}

    best, best_eval = best_ms(step, train=True), best_ms(forward, train=False)
    frozen = frozen_ms() if args.frozen_stages else {}
    speedup = {k: best["fp32"] / v for k, v in best.items()}
    speedup_eval = {k: best_eval["fp32"] / v for k, v in best_eval.items()}
    print(
        f"{args.encoder} {args.size[0]}x{args.size[1]}, batch {args.batch}, {torch.get_num_threads()} threads"
    )
    for k in SETTINGS:
        print(f"{k:20s} {best[k]:8.1f} ms/step  {speedup[k]:.2f}x fp32")
    for k in SETTINGS:
        print(f"{k:20s} {best_eval[k]:8.1f} ms/validation batch  {speedup_eval[k]:.2f}x fp32")
    for n, ms in frozen.items():
        print(f"bf16, {n} stages frozen {ms:8.1f} ms/step  {frozen[0] / ms:.2f}x none frozen")
    if args.json:
        doc = {
            "encoder": args.encoder,
            "size": args.size,
            "batch": args.batch,
            "ms_per_step": best,
            "speedup_over_fp32": speedup,
            "ms_per_validation_batch": best_eval,
            "validation_speedup_over_fp32": speedup_eval,
            "bf16_ms_per_step_by_frozen_stages": frozen,
            "headline": {"bf16_channels_last_over_fp32": speedup["bf16_channels_last"]},
        }
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
