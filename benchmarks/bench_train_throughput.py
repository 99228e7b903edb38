"""Training throughput of segvn (Lightning Trainer + SegModule + SegDataModule, as configured by
``+experiment=resnet18 data=camvid``) against a plain PyTorch loop with the same smp model, batch,
resolution, data pipeline, optimiser and weighted loss.

    .venv/bin/python benchmarks/bench_train_throughput.py [--steps 20] [--size 180 240] [--rounds 2]

Both run in this process, alternating, so the machine's noise hits both alike; the report is
images per second of each (median over rounds) and their ratio (goal: segvn >= 0.95 x plain).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

from segvn.utils import CONF_DIR, instantiate_dict

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGVN_SHARED", ROOT.parent / "shared"))


class StepTimer(L.Callback):
    """Wall time from the end of the warm-up steps to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.images = warmup, None, None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.warmup - 1:
            self.start = time.perf_counter()
        elif batch_idx >= self.warmup:
            self.images += batch["image"].shape[0]
            self.end = time.perf_counter()


def compose_cfg(args, out: Path):
    overrides = [
        "+experiment=resnet18",
        "data=camvid",
        f"data.image_size=[{args.size[0]},{args.size[1]}]",
        f"data.num_workers={args.workers}",
        "logger=csv",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={args.steps + args.warmup}",
        "trainer.limit_val_batches=0",
        "trainer.enable_checkpointing=false",
        "test=false",
        f"paths.shared_dir={SHARED}",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.runtime.cwd = str(ROOT)
        cfg.paths.log_dir = str(out)
        cfg.callbacks.pop("model_checkpoint")
        cfg.callbacks.pop("last_checkpoint")
    HydraConfig().set_config(cfg)
    return cfg


def run_segvn(cfg, args) -> float:
    torch.manual_seed(0)
    dm = instantiate(cfg.data)
    model = instantiate(cfg.model)
    timer = StepTimer(args.warmup)
    callbacks = [*instantiate_dict(cfg.callbacks), timer]
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=instantiate_dict(cfg.logger), num_sanity_val_steps=0
    )
    trainer.fit(model, datamodule=dm)
    return timer.images / (timer.end - timer.start)


def run_plain(cfg, args) -> float:
    torch.manual_seed(0)
    dm = instantiate(cfg.data)  # the same dataset, transforms and loader settings
    dm.setup("fit")
    weights = dm.class_weights("median_frequency")
    net = instantiate(cfg.model.net)
    opt = instantiate(cfg.model.optimizer)(params=net.parameters())
    net.train()
    start, images = None, 0
    for i, batch in enumerate(dm.train_dataloader()):
        if i == args.warmup + args.steps:
            break
        logits = net(batch["image"])
        loss = F.cross_entropy(logits, batch["mask"], weight=weights, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i == args.warmup - 1:
            start = time.perf_counter()
        elif i >= args.warmup:
            images += batch["image"].shape[0]
    return images / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--size", type=int, nargs=2, default=[180, 240])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default=str(ROOT / "outputs" / "bench_train"))
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = compose_cfg(args, Path(args.out))
    segvn, plain = [], []
    for r in range(args.rounds):
        plain.append(run_plain(cfg, args))
        segvn.append(run_segvn(cfg, args))
        print(f"round {r + 1}: plain {plain[-1]:.2f} img/s, segvn {segvn[-1]:.2f} img/s")
    s, q = statistics.median(segvn), statistics.median(plain)
    print(
        f"CamVid {args.size[0]}x{args.size[1]}, batch {cfg.data.batch_size}, {args.steps} timed steps, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"segvn {s:.2f} img/s | plain loop {q:.2f} img/s | ratio segvn/plain = {s / q:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "size": list(args.size),
            "batch": cfg.data.batch_size,
            "steps": args.steps,
            "rounds": args.rounds,
        }
        args.json.write_text(
            json.dumps({**doc, "segvn_img_s": s, "plain_img_s": q, "ratio": s / q}, indent=2)
        )


if __name__ == "__main__":
    main()
