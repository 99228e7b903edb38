"""How a checkpoint's held-out mIoU would move with gentler class weights, without retraining.

    .venv/bin/python benchmarks/logit_adjustment.py CKPT [--alphas 0 0.25 0.5 0.75 1]

Training with loss weights w shifts a calibrated model's logits by about log(w) (logit adjustment,
Menon et al. 2021), so subtracting ``alpha * log(w)`` from the logits approximates a model trained
with the weights ``w ** (1 - alpha)``: alpha 0 is the checkpoint as trained, 1 unweighted. Runs the
checkpoint's validation split (its stored data config) once, in bf16 channels_last, and prints the
mIoU and per-class IoU for each alpha.
"""

from __future__ import annotations

import argparse

import torch
from hydra.utils import instantiate

from segvn.metrics import confusion_matrices, metrics_from_confmat
from segvn.models.checkpoint import Checkpoint, model_from_checkpoint
from segvn.utils.config import register_resolvers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ckpt")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    args = p.parse_args()
    register_resolvers()
    ckpt = Checkpoint.read(args.ckpt)
    model = model_from_checkpoint(ckpt.raw, path=args.ckpt).to(memory_format=torch.channels_last)
    log_w = torch.log(model.class_weights.clamp_min(1e-6)).view(1, -1, 1, 1)
    dm = instantiate(ckpt.config.data, num_workers=1)
    dm.setup("validate")
    k = len(ckpt.class_names)
    confusion = {a: torch.zeros(k, k, dtype=torch.long) for a in args.alphas}
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for batch in dm.val_dataloader():
            logits = model.net(batch["image"].contiguous(memory_format=torch.channels_last)).float()
            for a, cm in confusion.items():
                cm += confusion_matrices(logits - a * log_w, batch["mask"], k).sum(0)
    print(
        "weights",
        ", ".join(
            f"{n}={w:.3f}" for n, w in zip(ckpt.class_names, model.class_weights.tolist(), strict=True)
        ),
    )
    for a, cm in confusion.items():
        summary = metrics_from_confmat(cm)
        iou = summary["class_iou"]
        per_class = " ".join(f"{n}={x:.3f}" for n, x in zip(ckpt.class_names, iou.tolist(), strict=True))
        print(f"alpha {a:.2f} (weights ** {1 - a:.2f}): mIoU {summary['mean_iou']:.4f}  {per_class}")


if __name__ == "__main__":
    main()
