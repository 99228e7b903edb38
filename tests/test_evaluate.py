"""``python -m segvn.evaluate`` on a real checkpoint trained on CamVid, and bad checkpoints."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from segvn.data.classes import CLASS_NAMES, camvid_lut, index_to_rgb
from segvn.errors import CheckpointError
from segvn.models.checkpoint import load_checkpoint

from .conftest import run_segvn


def _evaluate(*args: str):
    return run_segvn("evaluate", *args)


@pytest.mark.slow
def test_evaluate_writes_every_report(camvid_checkpoint, tmp_path):
    out = tmp_path / "eval"
    # the checkpoint's data config is camvid_streets at 64x96; only the split and limits change here
    proc = _evaluate(
        f"ckpt_path={camvid_checkpoint}",
        "split=val",
        "data.source.val=['0001TP']",
        "save_images=true",
        "max_images=2",
        f"hydra.run.dir={out}",
        "logger=wandb",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["images"] == 62
    assert metrics["checkpoint"] == str(camvid_checkpoint.resolve())
    for key in ("global_accuracy", "mean_accuracy", "mean_iou", "weighted_iou", "mean_bf_score"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert list(metrics["classes"]) == list(CLASS_NAMES)
    assert all(set(v) == {"accuracy", "iou", "bf_score"} for v in metrics["classes"].values())

    md = (out / "metrics.md").read_text()
    assert "| GlobalAccuracy | MeanAccuracy | MeanIoU | WeightedIoU | MeanBFScore |" in md
    assert f"{metrics['mean_iou']:.4f}" in md
    rows = list(csv.DictReader((out / "class_metrics.csv").read_text().splitlines()))
    assert [r["class"] for r in rows][:2] == ["building", "car"] and len(rows) == 8
    images = list(csv.DictReader((out / "image_metrics.csv").read_text().splitlines()))
    assert len(images) == 62 and images[0]["image"].endswith(".png")
    # the dataset global accuracy is the pixel-weighted mean of the per-image ones (all images same size here)
    per_image = [float(r["global_accuracy"]) for r in images]
    assert min(per_image) <= metrics["global_accuracy"] <= max(per_image)
    for png in ("confusion_matrix.png", "class_metrics.png"):
        assert Image.open(out / png).size[0] > 200
    pictures = sorted((out / "images").glob("*.png"))
    assert len(pictures) == 4 and {p.name.rsplit("_", 1)[1] for p in pictures} == {
        "overlay.png",
        "compare.png",
    }
    assert Image.open(pictures[0]).size == (96, 64)
    assert not (out / "images.partial").exists()
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb")), "tables went to an offline W&B run"


def _street_without_fence(camvid_root, root):
    """Two real CamVid frames as a vietnam-layout street whose labels have no fence or person."""
    lut = camvid_lut()
    (root / "s1" / "frames").mkdir(parents=True)
    (root / "s1" / "labels").mkdir(parents=True)
    for path in sorted((camvid_root / "val").glob("*.png"))[:2]:
        shutil.copy(path, root / "s1" / "frames" / path.name)
        label = lut[np.asarray(Image.open(camvid_root / "valannot" / path.name))]
        label[(label == 2) | (label == 3)] = 255
        Image.fromarray(index_to_rgb(label)).save(root / "s1" / "labels" / path.name)


@pytest.mark.slow
def test_other_data_and_absent_classes(camvid_checkpoint, camvid_root, tmp_path):
    _street_without_fence(camvid_root, tmp_path / "data")
    for mode in ("omit", "nan"):
        out = tmp_path / mode
        proc = _evaluate(
            f"ckpt_path={camvid_checkpoint}",
            "data=vietnam",
            f"data.root={tmp_path / 'data'}",
            "split=val",
            "data.source.val=[s1]",
            f"metrics.absent={mode}",
            f"hydra.run.dir={out}",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        m = json.loads((out / "metrics.json").read_text())
        assert m["images"] == 2 and m["absent_classes"] == ["fence", "person"]
        assert m["classes"]["fence"]["iou"] is None and m["classes"]["person"]["accuracy"] is None
        if mode == "omit":
            ious = [c["iou"] for c in m["classes"].values() if c["iou"] is not None]
            assert m["mean_iou"] == pytest.approx(sum(ious) / 6)
            assert "absent from the ground truth: fence, person" in proc.stderr + proc.stdout
        else:
            assert m["mean_iou"] is None and m["mean_accuracy"] is None
    assert (
        "segvn.data.sources.StreetFolders" in (tmp_path / "nan" / "config.yaml").read_text()
    )  # the command line beat the stored data


@pytest.mark.slow
def test_split_without_labels_is_refused(camvid_checkpoint, tmp_path):
    proc = _evaluate(f"ckpt_path={camvid_checkpoint}", "split=test", f"hydra.run.dir={tmp_path / 'e'}")
    assert proc.returncode == 1
    assert "test split is empty" in proc.stdout + proc.stderr
    assert not (tmp_path / "e" / "metrics.json").exists()


@pytest.mark.slow
def test_class_mismatch_is_refused(camvid_checkpoint, tmp_path):
    proc = _evaluate(
        f"ckpt_path={camvid_checkpoint}",
        "split=val",
        "+data.class_names=[road,sky]",
        f"hydra.run.dir={tmp_path / 'e'}",
    )
    assert proc.returncode == 1
    assert "the model predicts 8 classes" in proc.stdout + proc.stderr


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['SEGVN_EVIL_MARK']}",))


@pytest.mark.slow
def test_malicious_checkpoint_is_refused(tmp_path, monkeypatch):
    mark = tmp_path / "pwned"
    monkeypatch.setenv("SEGVN_EVIL_MARK", str(mark))
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "segvn_config": {}, "payload": _Evil()}, evil)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(evil)
    proc = _evaluate(f"ckpt_path={evil}", f"hydra.run.dir={tmp_path / 'e'}")
    assert proc.returncode == 1 and "refused to load" in proc.stderr + proc.stdout
    assert not mark.exists(), "the pickled payload must never run"


@pytest.mark.slow
def test_missing_truncated_and_foreign_checkpoints(camvid_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.ckpt")
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(camvid_checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(cut)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(CheckpointError, match="not a segvn checkpoint"):
        load_checkpoint(foreign)
    plain = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        load_checkpoint(plain)
    proc = _evaluate(f"ckpt_path={cut}", f"hydra.run.dir={tmp_path / 'e'}")
    assert proc.returncode == 1 and "truncated or corrupt" in proc.stderr + proc.stdout
