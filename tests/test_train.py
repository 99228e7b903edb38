"""The main job end to end: ``python -m segvn.train`` as a user runs it, and learnability."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from segvn.train import train

from .conftest import TINY_TRAIN, run_segvn


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


# ------------------------------------------- model settings that moved to callbacks (old checkpoints)
OLD_MODEL_SETTINGS = {
    "compile": False,
    "channels_last": False,
    "encoder_norm_eval": False,
    "encoder_frozen_stages": 0,
}
"""The SegModule arguments that earlier versions wrote under ``model`` of every stored config (defaults)."""


def _as_written_before(config: dict, **old: object) -> dict:
    """A training config as earlier versions stored it: the moved settings under ``model``, no callbacks for them."""
    config = json.loads(json.dumps(config))
    config["model"].update({**OLD_MODEL_SETTINGS, **old})
    for name in ("freeze_encoder", "memory_format", "torch_compile"):
        (config.get("callbacks") or {}).pop(name, None)
    return config


@pytest.mark.slow
def test_a_checkpoint_with_the_old_model_settings_loads_evaluates_and_resumes(
    camvid_checkpoint, compose_cfg, tmp_path
) -> None:
    """A checkpoint whose stored config carries model.compile/channels_last/encoder_norm_eval/
    encoder_frozen_stages (as written before they moved to callbacks) loads into the same model,
    evaluates, and is accepted or refused for resuming as before."""
    from segvn.cli import frozen_stages, resumable_checkpoint
    from segvn.errors import CheckpointError
    from segvn.models.checkpoint import CONFIG_KEY, Checkpoint

    raw = torch.load(camvid_checkpoint, map_location="cpu", weights_only=True)
    raw[CONFIG_KEY] = _as_written_before(raw[CONFIG_KEY], channels_last=True)
    old = tmp_path / "old.ckpt"
    torch.save(raw, old)
    model, reference = Checkpoint.read(old).model(), Checkpoint.read(camvid_checkpoint).model()
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    assert "channels_last" not in Checkpoint.read(old).config.model

    out = tmp_path / "eval"
    proc = run_segvn(
        "evaluate", f"ckpt_path={old}", "split=val", "data.source.val=['0001TP']", "data.num_workers=0",
        f"hydra.run.dir={out}", root=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 0.0 < json.loads((out / "metrics.json").read_text())["mean_iou"] <= 1.0

    cfg = compose_cfg(["+experiment=resnet18", "data=camvid_streets", f"ckpt_path={old}"])
    assert resumable_checkpoint(old, cfg.model, frozen=frozen_stages(cfg)).path == old
    with pytest.raises(CheckpointError, match=r"trained with model\.encoder_lr_mult=1, .*encoder_lr_mult=1$"):
        resumable_checkpoint(old, compose_cfg(["+experiment=resnet18", "model.encoder_lr_mult=0.1"]).model)
    with pytest.raises(
        CheckpointError, match=r"frozen_stages=0, .*resume with callbacks\.freeze_encoder\.frozen_stages=0$"
    ):
        resumable_checkpoint(old, cfg.model, frozen=2)
    with pytest.raises(
        CheckpointError, match=r"model\.net\.encoder_name=mobilenet_v2 \(trained with resnet18\)"
    ) as err:
        resumable_checkpoint(
            old, compose_cfg(["+experiment=resnet18", "model.net.encoder_name=mobilenet_v2"]).model
        )
    assert "channels_last" not in str(err.value) and "compile" not in str(err.value)


@pytest.mark.slow
def test_resuming_a_run_written_with_the_old_settings_freezes_as_it_did(tmp_path) -> None:
    """resume=RUN_DIR of a run whose config.yaml and checkpoint say model.encoder_frozen_stages=2 and
    model.encoder_norm_eval=true: the settings move to callbacks.freeze_encoder, the resumed epoch keeps
    the frozen stages and the encoder's batch-norm statistics as they were, and the rest trains on."""
    from segvn.models.checkpoint import CONFIG_KEY

    run_dir = tmp_path / "run"
    small = ["+debug=limit", "logger=csv", "data.source.height=48", "data.source.width=64", "test=false"]
    proc = run_segvn(
        "train", *small, "trainer.max_epochs=1", "callbacks.freeze_encoder.frozen_stages=2",
        "callbacks.freeze_encoder.norm_eval=true", f"hydra.run.dir={run_dir}", root=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the run as an earlier version wrote it: the settings under model in config.yaml and the checkpoint
    old = {"encoder_frozen_stages": 2, "encoder_norm_eval": True}
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    (run_dir / "config.yaml").write_text(yaml.safe_dump(_as_written_before(config, **old)))
    last = run_dir / "checkpoints" / "last.ckpt"
    raw = torch.load(last, map_location="cpu", weights_only=True)
    raw[CONFIG_KEY] = _as_written_before(raw[CONFIG_KEY], **old)
    torch.save(raw, last)
    before = raw["state_dict"]

    proc = run_segvn("train", f"resume={run_dir}", "trainer.max_epochs=2", root=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "callbacks.freeze_encoder.frozen_stages=2" in proc.stderr + proc.stdout
    resumed = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resumed["callbacks"]["freeze_encoder"] == {
        "_target_": "segvn.callbacks.FreezeEncoder", "frozen_stages": 2, "norm_eval": True
    }  # fmt: skip
    assert not {"encoder_frozen_stages", "encoder_norm_eval", "channels_last", "compile"} & set(
        resumed["model"]
    )
    after = torch.load(last, map_location="cpu", weights_only=True)
    assert after["global_step"] > raw["global_step"]
    frozen = [
        k
        for k in before
        if k.startswith(("net.model.encoder.conv1.", "net.model.encoder.bn1.", "net.model.encoder.layer1."))
    ]
    stats = [
        k
        for k in before
        if k.startswith("net.model.encoder.") and k.endswith(("running_mean", "running_var"))
    ]
    assert frozen and stats
    assert all(torch.equal(before[k], after["state_dict"][k]) for k in frozen + stats)
    trained = [k for k in before if k.startswith("net.model.encoder.layer2.") and k.endswith("conv1.weight")]
    assert trained and not all(torch.equal(before[k], after["state_dict"][k]) for k in trained)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "new"),
    [
        ("model.encoder_frozen_stages=2", "callbacks.freeze_encoder.frozen_stages=2"),
        ("+model.encoder_norm_eval=true", "callbacks.freeze_encoder.norm_eval=true"),
        ("model.channels_last=eval", "callbacks.memory_format.channels_last=eval"),
        ("model.compile=true", "callbacks.torch_compile.enabled=true"),
    ],
)
def test_a_moved_model_setting_is_one_line_naming_the_new_one(override: str, new: str, tmp_path) -> None:
    proc = run_segvn("train", override, f"hydra.run.dir={tmp_path / 'run'}", root=tmp_path)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and errors[0].endswith(f"; set {new}"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


def test_a_moved_model_setting_in_a_config_file_is_refused_naming_the_new_one(compose_cfg) -> None:
    """A config of one's own (an experiment file) that still sets model.encoder_frozen_stages."""
    from omegaconf import open_dict

    from segvn.cli import check_settings
    from segvn.errors import ConfigError

    cfg = compose_cfg(["+experiment=mobilenetv2_fast"])
    assert cfg.callbacks.freeze_encoder.frozen_stages == 3 and "encoder_frozen_stages" not in cfg.model
    check_settings(cfg)
    with open_dict(cfg):
        cfg.model.encoder_frozen_stages = 3
    with pytest.raises(
        ConfigError,
        match=r"^model\.encoder_frozen_stages=3 was moved: .*; set callbacks\.freeze_encoder\.frozen_stages=3$",
    ):
        check_settings(cfg)


# ------------------------------------------------------------------ init_from: fine-tuning from weights
def _conv_weights(state: dict) -> dict[str, torch.Tensor]:
    """The network's convolution kernels (``net.*.weight`` of 4 dimensions) of a checkpoint's state dict."""
    return {k: v for k, v in state.items() if k.startswith("net.") and k.endswith(".weight") and v.ndim == 4}


@pytest.mark.slow
def test_init_from_starts_a_new_run_from_the_checkpoints_weights(camvid_checkpoint, tmp_path) -> None:
    """With ``model.optimizer.lr=0`` and one training batch nothing is learnt, so the run's checkpoint holds
    the weights it started from: the source's with ``init_from=CKPT``, its own random ones without."""
    source = _conv_weights(torch.load(camvid_checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    assert source
    still = [a for a in TINY_TRAIN if not a.startswith("trainer.limit_train_batches=")]
    still += ["trainer.limit_train_batches=1", "model.optimizer.lr=0"]
    runs = {}
    for name, extra in (("init", [f"init_from={camvid_checkpoint}"]), ("scratch", [])):
        run_dir = tmp_path / name
        proc = run_segvn("train", *still, *extra, f"hydra.run.dir={run_dir}", root=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        runs[name] = (_conv_weights(state["state_dict"]), json.loads((run_dir / "metrics.json").read_text()))

    weights, metrics = runs["init"]
    assert weights.keys() == source.keys()
    assert all(torch.equal(weights[k], source[k]) for k in source), "init_from: the source's weights"
    assert metrics["init_from"] == str(camvid_checkpoint) and metrics["global_step"] == 1
    assert metrics["resumed_from_step"] is None, "a new run, not a resume"
    weights, metrics = runs["scratch"]
    assert not any(torch.equal(weights[k], source[k]) for k in source), "without init_from: its own weights"
    assert metrics["init_from"] is None and metrics["global_step"] == 1
