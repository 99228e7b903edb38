"""A run you can trust: last.ckpt that is last, atomic and finite checkpoints, kill-and-resume, divergence,
and multi-process DDP whose metrics equal a single-process evaluation.

The trainings are real (``python -m segvn.train`` as a subprocess on downscaled CamVid), kept tiny.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from segvn.callbacks import AtomicCheckpointIO
from segvn.errors import NonFiniteWeightsError
from segvn.models.checkpoint import Checkpoint

from .conftest import REPO_ROOT, run_segvn, segvn_env

SMALL = ["+experiment=resnet18", "data=camvid_streets", "data.image_size=[48,64]", "data.num_workers=0"]


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def _wandb_ids(run_dir: Path) -> set[str]:
    return {p.name.rsplit("-", 1)[-1] for p in (run_dir / "wandb").glob("offline-run-*")}


# ------------------------------------------------------------------------------------- checkpoint IO
def test_atomic_checkpoint_io_keeps_the_old_file_and_refuses_nan(tmp_path: Path) -> None:
    io, path = AtomicCheckpointIO(), tmp_path / "ckpt" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    with pytest.raises(Exception):  # noqa: B017 - torch.save of an unpicklable object, half-way
        io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "bad": lambda: 0}, path)
    with pytest.raises(NonFiniteWeightsError, match="1 weights are NaN"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("nan")])}, "epoch": 2}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1, "the good checkpoint is untouched"
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"], "no temporary file left"


# ------------------------------------------------------------------------------------ kill and resume
@pytest.mark.slow
def test_kill_mid_epoch_then_resume_continues_one_run(camvid_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [
        *SMALL, "trainer.max_epochs=3", "trainer.limit_train_batches=8", "trainer.limit_val_batches=2",
        "test=false", "~callbacks.progress_bar", "callbacks.wandb_media.num_images=0",
    ]  # fmt: skip
    env = segvn_env(tmp_path, OMP_NUM_THREADS="1", WANDB_SILENT="true")
    cmd = [sys.executable, "-m", "segvn.train", *args, f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert last.exists(), proc.stderr.read().decode()[-3000:] if proc.poll() is not None else "no last.ckpt"
    time.sleep(1.0)  # into epoch 1: some of its steps are done, none is checkpointed
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert Checkpoint.read(last).raw["epoch"] == 0

    resumed = run_segvn("train", f"resume={run_dir}", root=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["resumed_from_step"] == 8
    assert metrics["last_model_path"] == str(last) and Path(metrics["best_model_path"]).is_file()
    assert [int(r["epoch"]) for r in _rows(run_dir / "epoch_metrics.csv")] == [0, 1, 2]
    steps = [int(r["step"]) for r in _rows(run_dir / "csv" / "metrics.csv") if r.get("train/loss_step")]
    assert steps == list(range(24)), "one continuous per-step log: no lost or repeated step"
    assert len(_wandb_ids(run_dir)) == 1, "both sessions logged to the same W&B run"
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        weights = Checkpoint.read(ckpt).model().state_dict()  # loadable, finite
        assert weights and all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    assert Checkpoint.read(last).raw["epoch"] == 2


@pytest.mark.slow
def test_resume_before_the_first_checkpoint_starts_cleanly(camvid_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = run_segvn(
        "train",
        *SMALL,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "test=false",
        "logger=csv",
        "train=false",
        f"hydra.run.dir={run_dir}",
        root=tmp_path,
    )  # fmt: skip  -- train=false: a run directory with its config and no checkpoint, as after an early kill
    assert first.returncode == 0, first.stderr[-3000:]
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()
    resumed = run_segvn("train", f"resume={run_dir}", "train=true", root=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "no checkpoints/last.ckpt yet" in resumed.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 1


@pytest.mark.slow
def test_resume_refuses_an_optimizer_of_other_parameter_groups(camvid_checkpoint: Path, caplog) -> None:
    """``model.encoder_lr_mult`` 1 vs not-1 changes the optimizer's groups: a clear error, not torch's."""
    import copy

    from omegaconf import OmegaConf

    from segvn.errors import CheckpointError
    from segvn.models.checkpoint import CONFIG_KEY

    ckpt = Checkpoint.read(camvid_checkpoint)  # trained with the default encoder_lr_mult=1
    ckpt.require_resumable(OmegaConf.create({"encoder_lr_mult": 1.0}))
    with pytest.raises(
        CheckpointError,
        match=r"trained with model\.encoder_lr_mult=1, .*resume with model\.encoder_lr_mult=1$",
    ):
        ckpt.require_resumable(OmegaConf.create({"encoder_lr_mult": 0.1}))
    raw = copy.deepcopy(ckpt.raw)
    raw[CONFIG_KEY]["model"]["encoder_lr_mult"] = 0.1
    with caplog.at_level("WARNING", logger="segvn.models.checkpoint"):
        Checkpoint(ckpt.path, raw).require_resumable(OmegaConf.create({"encoder_lr_mult": 0.2}))
    assert "has no effect" in caplog.text
    with pytest.raises(CheckpointError, match="encoder_lr_mult=0.1"):
        Checkpoint(ckpt.path, raw).require_resumable(OmegaConf.create({}))


# -------------------------------------------------------------------------------------- divergence
@pytest.mark.slow
def test_non_finite_loss_stops_training_and_no_nan_checkpoint_is_written(camvid_root: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = run_segvn(
        "train", *SMALL, "model.optimizer.lr=1e12", "model.scheduler=null", "trainer.max_epochs=3",
        "trainer.limit_train_batches=4", "trainer.limit_val_batches=1", "test=false", "logger=csv",
        f"hydra.run.dir={run_dir}", root=tmp_path,
    )  # fmt: skip
    said = proc.stdout + proc.stderr
    assert proc.returncode == 1, said[-3000:]
    assert "training diverged at epoch" in said and "model.optimizer.lr" in said and "Traceback" not in said
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        Checkpoint.read(ckpt).model()  # any checkpoint that was written holds finite weights


@pytest.mark.slow
def test_commands_refuse_a_checkpoint_with_non_finite_weights(camvid_checkpoint: Path, tmp_path: Path):
    state = torch.load(camvid_checkpoint, map_location="cpu", weights_only=True)
    key = next(k for k, v in state["state_dict"].items() if v.is_floating_point() and v.numel() > 3)
    state["state_dict"][key][:3] = float("nan")
    bad = tmp_path / "diverged.ckpt"
    torch.save(state, bad)
    for verb, extra in (
        ("evaluate", ["split=val"]),
        ("visualize", ["image=x.png"]),
        ("predict", ["input=x.png"]),
    ):
        proc = run_segvn(verb, f"ckpt_path={bad}", *extra, f"hydra.run.dir={tmp_path / verb}", timeout=300)
        said = proc.stdout + proc.stderr
        assert proc.returncode == 1, (verb, said[-2000:])
        assert str(bad) in said and "3 weights are NaN or infinite" in said and "Traceback" not in said, verb


# ----------------------------------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_ddp_sim_test_metrics_equal_a_single_process_evaluation(camvid_root: Path, tmp_path: Path) -> None:
    """Two gloo processes test the best checkpoint on a whole street (an odd number of frames, so a
    padding sampler would count some twice); segvn.evaluate in one process must agree exactly."""
    run_dir = tmp_path / "run"
    proc = run_segvn(
        "train", *SMALL, "trainer=ddp_sim", "data.image_size=[32,48]", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "data.source.train=[0001TP]",
        "data.source.val=[0006R0]", "data.source.test=['0016E5']", "logger=csv", "~callbacks.progress_bar", f"hydra.run.dir={run_dir}",
        root=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr
    train = json.loads((run_dir / "metrics.json").read_text())
    assert train["world_size"] == 2 and train["effective_batch_size"] == 8
    out = tmp_path / "eval"
    # the same engine as the DDP test (torch): ONNX Runtime's logits differ by ~1e-6, enough to flip a near-tie
    ev = run_segvn(
        "evaluate",
        f"ckpt_path={train['best_model_path']}",
        "split=test",
        "runtime=torch",
        f"hydra.run.dir={out}",
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    single = json.loads((out / "metrics.json").read_text())
    assert single["images"] % 2 == 1, "an odd number of frames: a padding sampler would repeat one"
    assert train["test_confusion_matrix"] == single["confusion_matrix"]
    m = train["metrics"]
    for ddp_key, key in (("test/mean_bf_score", "mean_bf_score"), ("test/miou", "mean_iou"),
                         ("test/global_acc", "global_accuracy")):  # fmt: skip
        assert m[ddp_key] == pytest.approx(single[key], abs=1e-6), key
