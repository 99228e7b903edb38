"""Every config group and experiment composes and instantiates; every command has a typed schema."""

from __future__ import annotations

import doctest
from pathlib import Path

import lightning as L
import pytest
import yaml
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

import segvn
import segvn.inference.options  # noqa: F401 - registers the predict/evaluate/export schemas
import segvn.inference.pseudolabel  # noqa: F401 - registers the pseudolabel schema
import segvn.utils.schema
from segvn.cli import check_settings, composition_error_line
from segvn.data.datamodule import SegDataModule
from segvn.data.labelformats import EXPORT_FORMATS, IMPORT_FORMATS
from segvn.errors import ConfigError
from segvn.inference.prelabel import PRELABEL_FORMATS
from segvn.labels import ACTIONS
from segvn.models.module import SegModule
from segvn.utils import CONF_DIR, instantiate_dict
from segvn.utils.command_configs import LABEL_ACTION_NEEDS, LabelFormat

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
        assert cfg.trainer.max_epochs == -1 and cfg.trainer.max_time["minutes"] == cfg.budget.minutes
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


# -- every command's typed schema ------------------------------------------------------------------
COMMAND_CASES = {
    # verb: (overrides that compose it without a checkpoint, a value its schema refuses as the config
    # composes (enum, type or key), a value out of the range its schema declares (None: it has no number))
    "predict": (["data=synthetic", "model=deeplabv3plus"], "runtime=tensorrt", "batch_size=0"),
    "evaluate": (["data=synthetic", "model=deeplabv3plus"], "split=dev", "max_images=-1"),
    "export": (["model=deeplabv3plus"], "format=tflite", "verify.min_agreement=1.5"),
    "pseudolabel": (["data=camvid"], "flip=maybe", "keep=0"),
    "serve": ([], "port=http", "batch_size=0"),
    "analyze": ([], "splits=[train,dev]", "grid.ncols=0"),
    "check": ([], "level=deep", "limit=-1"),
    "curves": (["run_dir=run"], "per_class=maybe", "smoothing=1"),
    "extract": ([], "image_format=gif", "fps=0"),
    "labels": ([], "format=voc", "batch_size=0"),
    "merge": ([], "sweepdir=x", None),
    "visualize": (
        ["data=synthetic", "model=deeplabv3plus"],
        "activations.normalize=layer",
        "class_vis.steps=0",
    ),
}
"""Every command but segvn.train (whose config instantiates its objects)."""


NOT_COMMANDS = {"__init__", "api", "cli", "cvat_function", "errors", "train"}


def test_every_command_has_a_case() -> None:
    verbs = {p.stem for p in (Path(segvn.__file__).parent).glob("*.py")} - NOT_COMMANDS
    assert verbs == set(COMMAND_CASES)


@pytest.mark.parametrize("verb", sorted(COMMAND_CASES))
def test_every_command_has_a_typed_schema(compose_cfg, verb) -> None:
    """Each command's config is one dataclass: composed with no values, its settings are the schema's defaults."""
    base, _, _ = COMMAND_CASES[verb]
    cfg = compose_cfg(base, config_name=verb)
    schema = OmegaConf.get_type(cfg)
    assert schema.__name__.endswith("Config"), schema
    text = (CONF / f"{verb}.yaml").read_text()
    assert f"- {verb}_schema" in text
    for line in text.splitlines():  # the YAML composes; the values live in the dataclass
        assert line.startswith(("#", " ", "-", "defaults:", "hydra:")) or not line.strip(), line


@pytest.mark.parametrize("verb", sorted(COMMAND_CASES))
def test_a_bad_value_is_one_line_naming_the_setting(compose_cfg, verb) -> None:
    base, bad, out_of_range = COMMAND_CASES[verb]
    key, value = bad.split("=", 1)
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg([*base, bad], config_name=verb)
    line = composition_error_line(err.value)
    assert "\n" not in line and (f"{key}='{value}'" in line or f"'{key}'" in line), line
    if out_of_range is None:
        return
    cfg = compose_cfg([*base, out_of_range], config_name=verb)  # a number of the right type composes...
    with pytest.raises(ConfigError) as err:  # ...and its range is checked before any work
        check_settings(cfg)
    key, value = out_of_range.split("=", 1)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{key}=") and "out of range; give" in line, line
    assert float(line.split(":")[0].split("=")[1]) == float(value)


def test_enum_errors_list_the_allowed_values(compose_cfg) -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(["level=deep"], config_name="check")
    assert composition_error_line(err.value) == "level='deep': expected one of [cheap, full]"
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(["video.backend=decrod", "input=v.mp4", "street=s"], config_name="extract")
    assert composition_error_line(err.value) == "video.backend='decrod': expected one of [decord, pyav]"


def test_existing_spellings_still_compose(compose_cfg) -> None:
    """Values written as before (hyphens, Python keywords, null) still compose, and compare as text."""
    cfg = compose_cfg(
        [
            "data=synthetic",
            "model=deeplabv3plus",
            "legend_corner=top-left",
            "output.preset=fast",
            "runtime=onnx",
        ],
        config_name="predict",
    )
    assert cfg.legend_corner == "top-left" and f"{cfg.output.preset}" == "fast" and cfg.runtime == "onnx"
    assert compose_cfg(["action=import"], config_name="labels").action == "import"  # a Python keyword
    views = compose_cfg(
        ["data=synthetic", "model=deeplabv3plus", "activations.normalize=global"], "visualize"
    )
    assert views.activations.normalize == "global"
    assert compose_cfg(["model=deeplabv3plus", "quantize=null"], config_name="export").quantize is None


def test_label_formats_cover_every_action() -> None:
    assert {f.value for f in LabelFormat} == {*IMPORT_FORMATS, *EXPORT_FORMATS, *PRELABEL_FORMATS}
    assert set(LABEL_ACTION_NEEDS) == set(ACTIONS)


@pytest.mark.parametrize("recipe", ["resnet18_fast", "mobilenetv2_fast"])
def test_fast_recipes_train_in_bf16_only_where_it_is_native(compose_cfg, recipe) -> None:
    """On a CPU without native bf16 the fast recipes train in fp32 (emulated bf16 is slower); on a GPU in bf16."""
    from segvn.utils.cpu import native_bf16_cpu

    cpu = compose_cfg([f"+experiment={recipe}"])
    assert cpu.trainer.precision == ("bf16-mixed" if native_bf16_cpu() else "32-true")
    gpu = compose_cfg(["trainer=gpu", f"+experiment={recipe}"])
    assert gpu.trainer.precision == "bf16-mixed"
    explicit = compose_cfg([f"+experiment={recipe}", "trainer.precision=16-mixed"])
    assert explicit.trainer.precision == "16-mixed"


def test_schema_examples_hold() -> None:
    """The doctest examples of segvn.utils.schema (``switch``: on/off settings are true or false only)."""
    assert doctest.testmod(segvn.utils.schema).failed == 0
