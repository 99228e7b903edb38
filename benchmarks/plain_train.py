"""A plain PyTorch training loop: the baseline the time-budgeted recipes of issue 13 must beat.

What a careful user writes by hand around the same smp model, without segvn's trainer: SGD
(momentum 0.9, weight decay 1e-4 as in torchvision's segmentation reference) at lr 0.01 with poly
decay (power 0.9) over the wall-clock budget, batch 8, random horizontal flips only,
median-frequency class weights, no validation while training. Data, model and metrics are
segvn's own (the same frames, labels, class mapping, network and MATLAB-parity metric code), so
the comparison isolates the training recipe.

    .venv/bin/python benchmarks/plain_train.py --minutes 45 --size 176 240 \
        --out benchmarks/results/budget45/plain_resnet18.json
    .venv/bin/python benchmarks/plain_train.py --minutes 45 --size 352 480 --encoder mobilenet_v2 \
        --weights ../shared/weights/mobilenet_v2_imagenet.pth --out .../plain_mobilenetv2.json

After the budget the final weights are evaluated on the validation street (``data=camvid_streets``:
0016E5, a street training never saw; with ``--tta`` also with flip test-time augmentation, as
``val_tta``), and on the splits named by ``--also`` (e.g. ``train``);
the report is JSON with mIoU, per-class IoU, BF score, minutes, epochs and steps.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from segvn.metrics import SegmentationMetrics
from segvn.models.tta import predict_logits
from segvn.utils import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGVN_SHARED", ROOT.parent / "shared"))


def build(args: argparse.Namespace):
    """segvn's data module (flips only) and network, composed from the same configs as the recipes."""
    overrides = [
        f"data={args.data}",
        f"data.image_size=[{args.size[0]},{args.size[1]}]",
        f"data.batch_size={args.batch}",
        f"data.num_workers={args.workers}",
        "data.augment.hflip=0.5",
        "data.augment.translate_px=0",
        f"model.net.encoder_name={args.encoder}",
        f"model.net.encoder_weights={args.weights or 'null'}",
        f"paths.shared_dir={SHARED}",
        *args.override,
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    return dm, instantiate(cfg.model.net)


@torch.no_grad()
def evaluate(net: torch.nn.Module, loader, num_classes: int, names: list[str], flip: bool = False) -> dict:
    """mIoU, per-class IoU, global accuracy and BF score of ``net`` over ``loader`` (``flip``: with flip TTA)."""
    net.eval()
    metrics = SegmentationMetrics(num_classes, class_names=names, bf_score=True, validate_args=False)
    for batch in loader:
        metrics.update(predict_logits(net, batch["image"], flip).argmax(1), batch["mask"])
    s = metrics.compute()
    return {
        "miou": float(s["mean_iou"]),
        "global_acc": float(s["global_accuracy"]),
        "mean_acc": float(s["mean_accuracy"]),
        "mean_bf_score": float(s["mean_bf_score"]),
        "class_iou": {n: float(v) for n, v in zip(names, s["class_iou"], strict=True)},
    }


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    dm, net = build(args)
    weights = dm.class_weights("median_frequency")
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    budget = args.minutes * 60.0
    start = time.monotonic()
    steps = 0
    done = False
    net.train()
    while not done:
        for batch in dm.train_dataloader():
            fraction = (time.monotonic() - start) / budget
            if fraction >= 1.0:
                done = True
                break
            for group in opt.param_groups:
                group["lr"] = args.lr * (1.0 - fraction) ** 0.9
            logits = net(batch["image"])
            loss = F.cross_entropy(logits, batch["mask"], weight=weights, ignore_index=255)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            if steps % 50 == 0:
                print(f"step {steps} loss {loss.item():.3f} {fraction:.0%} of budget", flush=True)
    minutes = (time.monotonic() - start) / 60.0
    names = list(dm.class_names)
    report = {
        "recipe": "plain loop",
        "encoder": args.encoder,
        "size": list(args.size),
        "batch": args.batch,
        "lr": args.lr,
        "budget_minutes": args.minutes,
        "minutes": minutes,
        "epochs": steps / max(len(dm.train_dataloader()), 1),
        "steps": steps,
        "threads": torch.get_num_threads(),
        "val": evaluate(net, dm.val_dataloader(), dm.num_classes, names),
    }
    if args.tta:
        report["val_tta"] = evaluate(net, dm.val_dataloader(), dm.num_classes, names, flip=True)
    for split in args.also:
        report[split] = evaluate(net, dm.eval_dataloader(split), dm.num_classes, names)
    if args.save:
        torch.save(net.state_dict(), args.save)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=45.0)
    p.add_argument("--size", type=int, nargs=2, default=[176, 240])
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--weights", default=None, help="local ImageNet encoder weights (default: from scratch)")
    p.add_argument("--data", default="camvid_streets")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--also", nargs="*", default=[], help="also evaluate these splits (e.g. train)")
    p.add_argument("--tta", action="store_true", help="also evaluate val with flip TTA (as val_tta)")
    p.add_argument("--save", type=Path, default=None, help="save the final state dict here")
    p.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    p.add_argument("override", nargs="*", help="extra Hydra overrides of the data/model configs")
    args = p.parse_args()
    report = train(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
