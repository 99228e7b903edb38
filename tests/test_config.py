"""Every config group and experiment composes and instantiates."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import yaml
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from segvn.data.datamodule import SegDataModule
from segvn.models.module import SegModule
from segvn.utils import CONF_DIR, instantiate_dict

CONF = Path(CONF_DIR)


def _options(group: str) -> list[str]:
    """The options of a config group (``base``: what a group's options extend, not one itself)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if p.stem != "base")


def test_default_config_composes(compose_cfg):
    cfg = compose_cfg()
    assert cfg.data.source._target_.endswith("SyntheticStreets")
    assert cfg.model.net.encoder_name == "resnet18"
    assert "experiment" not in cfg


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_experiments_compose_and_instantiate(compose_cfg, experiment):
    cfg = compose_cfg([f"+experiment={experiment}"])
    weights = cfg.model.net.get("encoder_weights")
    if weights and weights != "imagenet" and not Path(weights).exists():
        pytest.skip(f"{experiment}: its local encoder weights {weights} are missing; set SEGVN_SHARED")
    model = instantiate(cfg.model)
    assert isinstance(model, SegModule)
    if "budget" in cfg:  # time-budgeted recipes: the clock ends training, not an epoch count
        assert cfg.trainer.max_epochs == -1 and cfg.trainer.max_time.minutes == cfg.budget.minutes
        assert cfg.model.optimizer.lr > 1e-3
    else:  # the thesis recipes, unchanged
        assert cfg.trainer.max_epochs == 10 and cfg.data.batch_size == 4
        assert cfg.model.optimizer.lr == pytest.approx(1e-3) and cfg.model.optimizer.momentum == 0.9
        assert cfg.model.scheduler.step_size == 10 and cfg.model.scheduler.gamma == pytest.approx(0.3)


def test_resnet18_recipe_matches_thesis(compose_cfg):
    cfg = compose_cfg(["+experiment=resnet18"])
    model = instantiate(cfg.model)
    opt = model.optimizer_factory(params=model.parameters())
    assert opt.defaults["weight_decay"] == pytest.approx(0.005)
    assert model.net.stride == 16
    assert cfg.data.augment.translate_px == 10 and cfg.data.augment.hflip == 0.5


@pytest.mark.parametrize("data", _options("data"))
def test_data_configs_instantiate(compose_cfg, data):
    cfg = compose_cfg([f"data={data}"])
    dm = instantiate(cfg.data)
    assert isinstance(dm, SegDataModule)
    assert dm.sampler["name"] == "uniform", "the default draws training frames uniformly"
    rare = instantiate(compose_cfg([f"data={data}", "data.sampler.name=rare_class"]).data)
    assert rare.sampler == {**dm.sampler, "name": "rare_class"}


EXPECTED_DATA = yaml.safe_load((Path(__file__).parent / "expected_data_configs.yaml").read_text())


def _flat(node: object, prefix: str = "") -> dict[str, object]:
    """``{"source.train": [...], ...}``: a nested config as dotted keys, so a difference names its key."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    return {
        k: v for key, sub in node.items() for k, v in _flat(sub, f"{prefix}.{key}" if prefix else key).items()
    }


def test_every_data_option_has_its_expected_config() -> None:
    assert _options("data") == sorted(EXPECTED_DATA)


@pytest.mark.parametrize("data", sorted(EXPECTED_DATA))
def test_data_options_compose_to_the_settings_they_always_had(compose_cfg, data):
    """Each data option (extending conf/data/base.yaml) composes to the settings it had before, key by
    key: checkpoints store this config, and what they store must keep its meaning."""
    got = OmegaConf.to_container(compose_cfg([f"data={data}"]).data, resolve=False)
    assert _flat(got) == _flat(EXPECTED_DATA[data])


@pytest.mark.parametrize("logger", _options("logger"))
def test_logger_configs_instantiate(compose_cfg, logger):
    cfg = compose_cfg([f"logger={logger}"])
    loggers = instantiate_dict(cfg.get("logger"))
    assert (len(loggers) == 0) == (logger == "none")


@pytest.mark.parametrize("trainer", ["default", "cpu"])
def test_trainer_configs_instantiate(compose_cfg, trainer):
    cfg = compose_cfg([f"trainer={trainer}"])
    callbacks = instantiate_dict(cfg.callbacks)
    assert any(isinstance(cb, ModelCheckpoint) and cb.monitor for cb in callbacks)
    assert isinstance(instantiate(cfg.trainer, callbacks=callbacks, logger=False), L.Trainer)


def test_gpu_trainer_config_composes(compose_cfg):
    cfg = compose_cfg(["trainer=gpu"])
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "16-mixed"


@pytest.mark.parametrize("debug", _options("debug"))
def test_debug_configs_compose(compose_cfg, debug):
    cfg = compose_cfg([f"+debug={debug}"])
    assert cfg.task_name == "debug"
    instantiate(cfg.trainer, callbacks=instantiate_dict(cfg.get("callbacks")), logger=False)


def test_hparams_search_composes(compose_cfg):
    cfg = compose_cfg(["+hparams_search=lr_sweep"])
    assert cfg.optimized_metric == "val/miou_best"
    assert "model.optimizer.lr" in cfg.hydra.sweeper.params


def test_overrides_reach_the_objects(compose_cfg):
    cfg = compose_cfg(["model.optimizer.lr=0.05", "data.batch_size=2", "model.class_weighting=none"])
    model = instantiate(cfg.model)
    assert model.optimizer_factory(params=model.parameters()).defaults["lr"] == 0.05
    assert model.class_weighting == "none"
    assert instantiate(cfg.data).batch_size == 2
