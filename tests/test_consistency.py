"""Online self-training (``data.online`` + ``model.consistency``): views, CutMix, the loss, a real run."""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from segvn.data.consistency import UnlabelledViews, cutmix, online_settings
from segvn.errors import ConfigError
from segvn.models.module import SegModule

from .conftest import run_segvn


def test_settings_are_checked() -> None:
    assert online_settings(None) == {"batch_size": None}
    assert online_settings({"batch_size": 8}) == {"batch_size": 8}
    for bad in (1, "8", True, 2.5):
        with pytest.raises(ConfigError, match=r"data.online.batch_size="):
            online_settings({"batch_size": bad})
    with pytest.raises(ConfigError, match=r"data.online: unknown setting\(s\) \['size'\]"):
        online_settings({"size": 8})
    make = partial(SegModule, net=nn.Conv2d(3, 8, 1), optimizer=partial(torch.optim.SGD, lr=0.1))
    assert make(consistency={"threshold": 0.5}).consistency == {
        "weight": 1.0,
        "threshold": 0.5,
        "cutmix": 0.5,
    }
    with pytest.raises(ConfigError, match=r"model.consistency.threshold=1: out of range"):
        make(consistency={"threshold": 1.0})
    with pytest.raises(ConfigError, match=r"model.consistency: unknown setting\(s\) \['tau'\]"):
        make(consistency={"tau": 0.9})


def test_strong_view_keeps_the_weak_views_pixels_where_they_are(tmp_path: Path) -> None:
    """The strong view is the weak view recoloured, never moved: a flipped frame is flipped in both."""
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, 32:] = 255  # dark left half, bright right half
    Image.fromarray(frame).save(tmp_path / "f.png")
    views = UnlabelledViews([tmp_path / "f.png"], [48, 64], hflip=1.0, translate_px=0, color_jitter=0.3)
    for _ in range(20):
        item = views[0]
        weak, strong = item["weak"].float().mean(0), item["strong"].float().mean(0)
        assert item["weak"].dtype == item["strong"].dtype == torch.uint8 and item["weak"].shape == (3, 48, 64)
        assert weak[:, :32].mean() > weak[:, 32:].mean(), "flipped: the bright half is on the left"
        assert strong[:, :24].mean() > strong[:, 40:].mean(), "the strong view is flipped with it"
        assert torch.equal(item["weak"], torch.from_numpy(frame[:, ::-1].copy()).permute(2, 0, 1)), (
            "no colour"
        )


def test_cutmix_moves_a_box_of_pixels_and_labels_together() -> None:
    images = torch.arange(3).view(3, 1, 1, 1).expand(3, 3, 20, 30).to(torch.uint8).clone()
    targets = torch.arange(3).view(3, 1, 1).expand(3, 20, 30).clone()
    same = cutmix(images, targets, p=0.0)
    assert same[0] is images and same[1] is targets
    g = torch.Generator().manual_seed(0)
    mixed, mixed_t = cutmix(images, targets, p=1.0, generator=g)
    pasted = mixed[:, 0] != images[:, 0]
    assert pasted.any() and not pasted.all()
    assert torch.equal(mixed[:, 0], mixed_t.to(torch.uint8)), "each pixel keeps its own label"
    assert torch.equal(mixed[1][:, pasted[1]], images[0][:, pasted[1]]), "frame 1 gets frame 0's box"
    assert torch.equal(pasted[0], pasted[1]) and torch.equal(images, same[0]), "one box, inputs untouched"


class _Fixed(nn.Module):
    """A 'network' whose logits are given, whatever the image (a test stand-in for the teacher)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(images.shape[0], -1, -1, -1)


def test_consistency_loss_teaches_the_confident_labels_of_the_weak_view() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 6, 5) * 3
    module = SegModule(
        net=_Fixed(logits), optimizer=partial(torch.optim.SGD, lr=0.1), class_names=list("abcd"),
        consistency={"weight": 1.0, "threshold": 0.7, "cutmix": 0.0},
    )  # fmt: skip
    images = torch.zeros(2, 3, 6, 5, dtype=torch.uint8)
    loss, kept = module.consistency_loss(images, images)
    probs = logits.softmax(1).expand(2, -1, -1, -1)
    confident = probs.max(1).values >= 0.7
    target = probs.argmax(1).masked_fill(~confident, 255)
    expected = F.cross_entropy(logits.expand(2, -1, -1, -1), target, ignore_index=255, reduction="sum") / 60
    assert 0 < kept.item() < 1 and kept.item() == pytest.approx(confident.float().mean().item())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert module.net.logits.grad is not None and module.net.logits.grad.abs().sum() > 0
    module.consistency["threshold"] = 0.999999
    none, kept = module.consistency_loss(images, images)
    assert none.item() == 0.0 and kept.item() == 0.0, "nothing confident: nothing taught"
    module.consistency = None
    with pytest.raises(ConfigError, match="model.consistency is null"):
        module.consistency_loss(images, images)


ONLINE = (
    "+experiment=resnet18_online", "data=camvid_streets", "data.image_size=[64,96]", "data.num_workers=0",
    "data.online.batch_size=2", "data.unlabelled.streets=[0016E5]", "data.unlabelled.max_frames=6",
    "budget.validate_every=null", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2", "test=false", "logger=csv",
)  # fmt: skip


@pytest.mark.slow
def test_online_training_learns_from_the_unlabelled_set_and_guards_the_evaluated_street(
    camvid_root: Path, tmp_path: Path
) -> None:
    leak = run_segvn("train", *ONLINE, f"hydra.run.dir={tmp_path / 'leak'}", root=tmp_path)
    said = leak.stdout + leak.stderr
    assert leak.returncode == 1 and "Traceback" not in said, said[-3000:]
    assert "data.unlabelled: 6 unlabelled frame(s) are also validation/test frames" in said
    run = tmp_path / "run"
    proc = run_segvn(
        "train", *ONLINE, "data.unlabelled.transductive=true", "model.consistency.threshold=0.0",
        f"hydra.run.dir={run}", root=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "online self-training: 6 unlabelled frame(s), 2 per step" in (run / "train.log").read_text()
    rows = list(csv.DictReader(next((run / "csv").rglob("metrics.csv")).read_text().splitlines()))
    kept = [float(r["train/confident_step"]) for r in rows if r.get("train/confident_step")]
    losses = [float(r["train/loss_unlabelled_step"]) for r in rows if r.get("train/loss_unlabelled_step")]
    assert kept and all(k == 1.0 for k in kept), "threshold 0: every pixel of the weak view is a label"
    assert losses and all(v > 0 for v in losses)
    off = run_segvn(
        "train", *ONLINE, "data.unlabelled.transductive=true", "model.consistency=null",
        f"hydra.run.dir={tmp_path / 'off'}", root=tmp_path,
    )  # fmt: skip
    said = off.stdout + off.stderr
    assert off.returncode == 1 and "model.consistency is null" in said and "Traceback" not in said, said[
        -3000:
    ]
