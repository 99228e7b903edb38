"""The main job end to end: ``python -m segvn.train`` as a user runs it, and learnability."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from segvn.train import train

from .conftest import run_segvn


@pytest.mark.slow
def test_train_command_writes_a_complete_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_segvn(
        "train",
        "+experiment=resnet18",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        f"hydra.run.dir={run_dir}",
        root=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (
        config["model"]["net"]["encoder_name"] == "resnet18"
        and "${" not in (run_dir / "config.yaml").read_text()
    )
    best = sorted((run_dir / "checkpoints").glob("epoch_*.ckpt"))
    assert best and (run_dir / "checkpoints" / "last.ckpt").exists()
    for ckpt in [*best, run_dir / "checkpoints" / "last.ckpt"]:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        assert state["segvn_config"] == config, "the resolved config is stored in every checkpoint"
    epochs = (run_dir / "epoch_metrics.csv").read_text().splitlines()
    assert epochs[0].startswith("epoch,step") and "val/miou" in epochs[0] and len(epochs) == 2
    assert (run_dir / "csv" / "metrics.csv").exists()
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb")), "an offline W&B run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("train/loss", "val/loss", "val/miou", "val/global_acc", "val/miou_best", "test/miou"):
        assert np.isfinite(metrics["metrics"][key]), key
    assert metrics["best_model_path"] == str(best[0])
    # the synthetic data was generated and cached under the project's outputs/
    assert (tmp_path / "outputs" / "cache" / "synthetic" / "synthetic.json").exists()


@pytest.mark.slow
def test_bad_data_root_is_one_clear_error(tmp_path):
    proc = run_segvn(
        "train",
        "data=vietnam",
        f"data.root={tmp_path / 'missing'}",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert f"data root {tmp_path / 'missing'} does not exist" in out and "Traceback" not in out


@pytest.mark.slow
def test_synthetic_scenes_are_learnable(compose_cfg):
    """A short run on the synthetic streets clearly beats chance on a held-out street."""
    cfg = compose_cfg(
        [
            "logger=none",
            "callbacks=none",
            "trainer.max_epochs=6",
            "trainer.enable_progress_bar=false",
            "data.source.height=48",
            "data.source.width=64",
            "data.source.frames=8",
            "model.optimizer.lr=0.01",
            "test=false",
            "trainer.enable_checkpointing=false",
        ]
    )
    summary = train(cfg)
    m = summary["metrics"]
    # chance: always answering the most common class of the val street
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    stats = dm.label_stats("val")
    majority = stats.pixel_count.max() / stats.pixel_count.sum()
    print(f"val global acc {m['val/global_acc']:.3f} (majority {majority:.3f}), mIoU {m['val/miou']:.3f}")
    assert m["val/global_acc"] > majority + 0.15, (m["val/global_acc"], majority)
    assert m["val/miou"] > 2 / 8, m["val/miou"]


@pytest.mark.slow
def test_ddp_training_on_two_cpu_processes(tmp_path):
    """Real multi-process DDP (gloo): two ranks train, rank 0 alone writes the run directory.

    Training frames are drawn by rare-class sampling, which Lightning splits across the ranks.
    """
    run_dir = tmp_path / "run"
    proc = run_segvn(
        "train",
        "trainer=ddp_sim",
        "+debug=limit",
        "logger=csv",
        "data.sampler.name=rare_class",
        "data.source.height=48",
        "data.source.width=64",
        "trainer.max_epochs=1",
        f"hydra.run.dir={run_dir}",
        root=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in out and "distributed_backend=gloo" in out
    assert out.count("rare-class sampling (T=0.1)") == 2, "each rank builds the weighted sampler"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert np.isfinite(metrics["metrics"]["val/miou"]) and np.isfinite(metrics["metrics"]["test/miou"])
    assert len((run_dir / "epoch_metrics.csv").read_text().splitlines()) == 2  # one row, from rank 0 only
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert "segvn_config" in state


@pytest.mark.slow
def test_hydra_sweep_runs_one_job_per_value(tmp_path):
    proc = run_segvn(
        "train",
        "-m",
        "model.optimizer.lr=0.01,0.02",
        "+debug=limit",
        "trainer.max_epochs=1",
        "logger=csv",
        "data.source.height=48",
        "data.source.width=64",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        root=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, lr in (("0", 0.01), ("1", 0.02)):
        config = yaml.safe_load((tmp_path / "sweep" / job / "config.yaml").read_text())
        assert config["model"]["optimizer"]["lr"] == lr
        metrics = json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())
        assert np.isfinite(metrics["metrics"]["val/miou_best"])
