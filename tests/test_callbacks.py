"""TrainingProgressPlot and WandbMedia: what a real short training run leaves in its run directory
and in its offline W&B run (read back from the ``.wandb`` record file and the media files)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from segvn.callbacks import TrainingProgressPlot, WandbMedia, validation_confmat
from segvn.data.classes import CLASS_NAMES, IGNORE_INDEX
from segvn.metrics import SegmentationMetrics

from .fixtures_ckpt import IMAGE_SIZE, VAL_STREET, make_trained_run


@pytest.fixture(scope="session")
def trained_run(camvid_root, tmp_path_factory, request) -> Path:
    return make_trained_run(tmp_path_factory, request.config)


# ------------------------------------------------------------------------ reading an offline W&B run
_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> list:
    """Every protobuf ``Record`` of a ``run-*.wandb`` file (W&B's LevelDB-style log: 32 KiB blocks,
    7-byte record headers ``<crc32 u32, length u16, type u8>``, records split FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:_HEADER])
    assert ident == b":W&B" and magic == 0xBEE1 and version == 0, (ident, magic, version)
    records, pos, buf = [], _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer: zero padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        pos += _HEADER
        chunk, pos = data[pos : pos + length], pos + length
        if kind == 0 and length == 0:
            continue
        if kind in (_FULL, _FIRST):
            buf = chunk
        elif kind in (_MIDDLE, _LAST):
            buf += chunk
        else:
            raise ValueError(f"{path}: unknown record type {kind} at byte {pos}")
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
    return records


def _items(update) -> dict[str, object]:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in update}


def read_offline_run(run_dir: Path) -> dict:
    """Config, history rows, final summary and artifacts of the (single) offline W&B run under ``run_dir/wandb``."""
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    (wandb_file,) = runs[0].glob("run-*.wandb")
    config: dict[str, object] = {}
    history: list[dict] = []
    summary: dict[str, object] = {}
    artifacts: list = []
    for record in wandb_records(wandb_file):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config.update(_items(record.config.update))
        elif kind == "history":
            history.append(_items(record.history.item))
        elif kind == "summary":
            summary.update(_items(record.summary.update))
        elif kind == "artifact":
            artifacts.append(record.artifact)
    return {
        "dir": runs[0],
        "files": runs[0] / "files",
        "config": config,
        "history": history,
        "summary": summary,
        "artifacts": artifacts,
    }


# ---------------------------------------------------------------------------- end to end (real run)
@pytest.mark.slow
@pytest.mark.xdist_group("trained_run")
def test_training_writes_a_progress_plot_from_its_csv_log(trained_run):
    png = trained_run / "training_progress.png"
    csv = trained_run / "csv" / "metrics.csv"
    assert csv.is_file() and png.is_file()
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] >= 800 and im.size[1] >= 600
        picture = np.asarray(im.convert("RGB"))
    assert picture.std() > 10, "a real figure, not a blank canvas"
    assert png.stat().st_mtime >= csv.stat().st_mtime - 5


@pytest.mark.slow
@pytest.mark.xdist_group("trained_run")
def test_wandb_offline_run_holds_config_metrics_tables_and_masked_images(trained_run):
    run = read_offline_run(trained_run)
    files = run["files"]

    # the resolved training config (the same as config.yaml) is the run's config
    import yaml

    resolved = yaml.safe_load((trained_run / "config.yaml").read_text())
    for key in ("data", "model", "trainer", "callbacks", "seed"):
        assert run["config"][key] == resolved[key], key
    assert run["config"]["model"]["net"]["encoder_name"] == "resnet18"

    # per-epoch metrics flow through the logger; the summary keeps the last values
    for key in ("val/miou", "val/loss", "val/global_acc", "train/loss", "val/miou_best", "lr-SGD"):
        assert isinstance(run["summary"][key], float), key
    assert any(k.startswith("val/iou/") for k in run["summary"])

    media = [row for row in run["history"] if "val/examples/_type" in row]
    assert len(media) == 2, "one media row per validation epoch (2 epochs)"
    for row in media:
        assert row["val/class_iou/_type"] == "table-file"
        assert row["val/confusion_matrix_table/_type"] == "table-file"
        assert row["val/confusion_matrix_image/_type"] == "image-file"
        assert row["val/examples/_type"] == "images/separated" and row["val/examples/count"] == 4
        assert (row["val/examples/height"], row["val/examples/width"]) == IMAGE_SIZE
        assert isinstance(row["trainer/global_step"], int)
    # W&B's confusion-matrix chart is registered as a custom panel
    panels = [v for v in run["config"].values() if isinstance(v, dict) and v.get("panel_type") == "Vega2"]
    assert any(p["panel_config"]["panelDefId"] == "wandb/confusion_matrix/v1" for p in panels)

    last = media[-1]
    # the per-class IoU table: one row per class, in class order, IoU agreeing with the logged metric
    table = json.loads((files / last["val/class_iou/path"]).read_text())
    assert table["columns"][:3] == ["class", "iou", "accuracy"]
    assert [r[0] for r in table["data"]] == list(CLASS_NAMES)
    for name, iou, *_ in table["data"]:
        logged = run["summary"].get(f"val/iou/{name}")
        if iou is None:
            assert logged is None, name
        else:
            assert logged == pytest.approx(iou, abs=1e-5), name
    cm = json.loads((files / last["val/confusion_matrix_table/path"]).read_text())
    assert (
        cm["columns"] == ["Actual", "Predicted", "nPredictions"] and len(cm["data"]) == len(CLASS_NAMES) ** 2
    )
    pixels = {r[0]: r[3] for r in table["data"]}
    for name in CLASS_NAMES:
        assert sum(r[2] for r in cm["data"] if r[0] == name) == pixels[name]
    with Image.open(files / last["val/confusion_matrix_image/path"]) as im:
        assert im.size[0] > 300 and im.size[1] > 300

    # the fixed validation frames, with prediction and ground truth as W&B masks
    frames = last["val/examples/filenames"]
    masks = last["val/examples/all_masks"]
    assert len(frames) == len(masks) == 4
    for name in frames:
        with Image.open(files / name) as im:
            assert im.mode == "RGB" and im.size == (IMAGE_SIZE[1], IMAGE_SIZE[0])
    for entry in masks:
        assert set(entry) == {"prediction", "ground_truth"}
        for kind in ("prediction", "ground_truth"):
            with Image.open(files / entry[kind]["path"]) as im:
                values = set(np.unique(np.asarray(im)).tolist())
            assert values <= set(range(len(CLASS_NAMES))) | {IGNORE_INDEX}, values
    # the class labels of both masks (255 = unlabelled) are in the run config, as W&B keeps them
    labels = run["config"]["_wandb"]["mask/class_labels"]
    expected_labels = {str(i): n for i, n in enumerate(CLASS_NAMES)} | {str(IGNORE_INDEX): "unlabelled"}
    for kind in ("prediction", "ground_truth"):
        assert labels[f"val/examples_wandb_delimeter_{kind}"]["value"] == expected_labels
    # ground truth of the first fixed frame is the first val frame's label map at the training size
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    data_cfg = OmegaConf.create(resolved["data"])
    dm = instantiate(data_cfg)
    expected = dm.dataset("val")[0]["mask"].numpy().astype(np.uint8)
    with Image.open(files / masks[0]["ground_truth"]["path"]) as im:
        np.testing.assert_array_equal(np.asarray(im), expected)
    assert Path(dm.dataset("val").samples[0].image).stem.startswith(VAL_STREET)

    # the best checkpoint as a model artifact (callbacks.wandb_media.log_checkpoint=true), offline too
    (model,) = [a for a in run["artifacts"] if a.type == "model"]
    (best,) = (trained_run / "checkpoints").glob("epoch_*.ckpt")
    assert {"best", "latest"} <= set(model.aliases)
    assert json.loads(model.metadata)["monitor"] == "val/miou"
    (entry,) = model.manifest.contents
    assert entry.path == best.name and entry.size == best.stat().st_size


# -------------------------------------------------------------------------------------- unit tests
class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.val_metrics = SegmentationMetrics(3, IGNORE_INDEX, validate_args=False)


def test_validation_confmat_reads_the_modules_accumulated_matrix():
    module = _Tiny()
    preds = torch.tensor([[[0, 1], [2, 2]]])
    target = torch.tensor([[[0, 1], [1, IGNORE_INDEX]]])
    module.val_metrics.update(preds, target)
    cm = validation_confmat(module)
    np.testing.assert_array_equal(cm.numpy(), [[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    assert validation_confmat(L.LightningModule()) is None


def test_wandb_media_and_progress_plot_are_no_ops_without_their_loggers(tmp_path):
    trainer = SimpleNamespace(
        loggers=[], callbacks=[], sanity_checking=False, is_global_zero=True, global_step=0, current_epoch=0
    )
    media = WandbMedia()
    media.on_fit_start(trainer, _Tiny())
    media.on_validation_epoch_end(trainer, _Tiny())
    assert media._frames is None, "no frames were even loaded"
    plot = TrainingProgressPlot(tmp_path / "training_progress.png")
    assert plot.plot(trainer) is None
    assert not (tmp_path / "training_progress.png").exists()


def test_epoch_csv_writes_validation_metrics_only_for_epochs_that_validated(tmp_path: Path) -> None:
    """Under a time-based validation cadence (``+budget``) an epoch without validation gets no stale val/*."""
    from segvn.callbacks import EpochMetricsCSV

    cb = EpochMetricsCSV(tmp_path / "epoch_metrics.csv")
    trainer = SimpleNamespace(
        sanity_checking=False, is_global_zero=True, current_epoch=0, global_step=5, optimizers=[],
        callback_metrics={"train/loss": torch.tensor(1.0), "val/miou": torch.tensor(0.3)},
    )  # fmt: skip
    cb.on_validation_end(trainer, None)
    cb.on_train_epoch_end(trainer, None)
    trainer.current_epoch, trainer.global_step = 1, 10
    trainer.callback_metrics["train/loss"] = torch.tensor(0.5)  # val/miou is still the old value
    cb.on_train_epoch_end(trainer, None)
    rows = (tmp_path / "epoch_metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == ["epoch", "step", "train/loss", "val/miou"]
    assert rows[1].split(",")[3] == "0.30000001192092896" and rows[2].endswith(","), rows


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (float("nan"), "gradient in 1 parameter(s): 1.weight"),
        (3e20, "exploding gradients: |grad| up to 3e+20 in 1.weight"),
    ],
)
def test_non_finite_guard_names_the_gradient(value: float, said: str) -> None:
    """A NaN gradient is named; finite gradients whose norm overflows are reported as exploding."""
    from segvn.callbacks import NonFiniteGuard
    from segvn.errors import TrainingDivergedError

    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    net[1].weight.grad[0, 0] = value
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    trainer = SimpleNamespace(
        callback_metrics={"train/loss_step": torch.tensor(0.5)},
        precision="bf16-mixed",
        current_epoch=2,
        global_step=7,
    )
    with pytest.raises(TrainingDivergedError, match="epoch 2, step 7") as err:
        NonFiniteGuard().on_before_optimizer_step(trainer, net, opt)
    assert said in str(err.value)
    net[1].weight.grad[0, 0] = 1.0
    NonFiniteGuard().on_before_optimizer_step(trainer, net, opt)  # finite and small: no error


# ---------------------------------------------- the network's training set-up: freezing, memory order
def _tiny_module(encoder: str = "resnet18", **kwargs):
    from functools import partial

    from segvn.models.factory import build_network
    from segvn.models.module import SegModule

    torch.manual_seed(0)
    net = build_network(encoder_name=encoder, num_classes=8)
    sgd = partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    return SegModule(net=net, optimizer=sgd, class_weighting="none", **kwargs)


def _tiny_fit(module, callbacks: list, steps: int = 3) -> L.Trainer:
    """A real Lightning fit of ``steps`` optimizer steps on random 32x48 frames, validating after each."""
    from torch.utils.data import DataLoader

    gen = torch.Generator().manual_seed(0)
    data = [
        {"image": torch.rand(3, 32, 48, generator=gen), "mask": torch.randint(0, 8, (32, 48), generator=gen)}
        for _ in range(4)
    ]
    trainer = L.Trainer(
        max_steps=steps, val_check_interval=1, limit_val_batches=1, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
    )  # fmt: skip
    # batches of 2: the ASPP's pooled branch has one value per channel, which batch norm refuses when training
    trainer.fit(module, DataLoader(data * 2, batch_size=2), DataLoader(data[:2], batch_size=2))
    return trainer


class _Modes(L.Callback):
    """Records, at every training step, which of ``layers`` are in train mode."""

    def __init__(self, layers: list[torch.nn.Module]) -> None:
        self.layers, self.training = layers, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.training.append([m.training for m in self.layers])


@pytest.mark.slow
@pytest.mark.parametrize(("encoder", "lr_mult"), [("mobilenet_v2", 1.0), ("resnet18", 0.1)])
def test_frozen_stages_get_no_gradient_no_update_and_keep_their_statistics(
    encoder: str, lr_mult: float
) -> None:
    """callbacks.freeze_encoder.frozen_stages=2 through a real fit (validation between the steps): the
    frozen stages' weights and batch-norm statistics are as loaded, they get no gradient, the optimizer
    (with encoder_lr_mult's own encoder group too) never holds them, and they run in eval mode; the next
    stage and the decoder learn."""
    from segvn.callbacks import FreezeEncoder
    from segvn.models.factory import encoder_stages

    module = _tiny_module(encoder, encoder_lr_mult=lr_mult)
    stages = encoder_stages(module.net.model.encoder)
    assert len(stages) == 5
    frozen, learnt = torch.nn.ModuleList(stages[:2]), stages[2]
    layers = [m for stage in stages[:2] for m in list(stage.modules())[1:]]  # [0]: a slice's container
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in layers)
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    learnt_before = [p.detach().clone() for p in learnt.parameters()]
    decoder_before = [p.detach().clone() for p in module.net.model.decoder.parameters()]
    modes = _Modes(layers)
    trainer = _tiny_fit(module, [FreezeEncoder(frozen_stages=2), modes])
    assert trainer.global_step == 3 and len(modes.training) == 3
    assert not any(any(step) for step in modes.training), "frozen stages ran in train mode"
    assert any(k.endswith("running_mean") for k in before)
    changed = [k for k, v in before.items() if not torch.equal(v, frozen.state_dict()[k])]
    assert not changed, f"frozen tensors changed: {changed[:3]}"
    assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
    groups = trainer.optimizers[0].param_groups
    held = {id(p) for group in groups for p in group["params"]}
    assert not held & {id(p) for p in frozen.parameters()}
    assert {id(p) for p in learnt.parameters()} <= held
    if lr_mult != 1.0:  # [decoder, encoder]: the encoder's group is its unfrozen stages, at its own rate
        assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(0.1 * groups[0]["lr"])
        assert {id(p) for p in groups[1]["params"]} == {
            id(p) for p in module.net.model.encoder.parameters() if p.requires_grad
        }
    assert not all(torch.equal(a, p) for a, p in zip(learnt_before, learnt.parameters(), strict=True))
    assert not all(
        torch.equal(a, p) for a, p in zip(decoder_before, module.net.model.decoder.parameters(), strict=True)
    )


@pytest.mark.slow
@pytest.mark.parametrize("norm_eval", [True, False])
def test_norm_eval_keeps_the_encoders_batch_norms_in_eval_mode(norm_eval: bool) -> None:
    """callbacks.freeze_encoder.norm_eval: through a real fit the encoder's batch norms stay in eval mode
    (running statistics as loaded) while their scale and shift are learnt and the decoder's batch norms
    still update; without it the encoder's statistics follow the batches."""
    from segvn.callbacks import FreezeEncoder

    module = _tiny_module("resnet18")
    norms = [m for m in module.net.model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    decoder_norms = [m for m in module.net.model.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats = [m.running_mean.clone() for m in norms]
    decoder_stats = [m.running_mean.clone() for m in decoder_norms]
    scale = [m.weight.detach().clone() for m in norms]
    modes = _Modes(norms)
    _tiny_fit(module, [FreezeEncoder(norm_eval=norm_eval), modes])
    assert all(any(step) != norm_eval for step in modes.training) and len(modes.training) == 3
    kept = [torch.equal(a, m.running_mean) for a, m in zip(stats, norms, strict=True)]
    assert all(kept) == norm_eval and any(kept) == norm_eval
    assert not any(torch.equal(a, m.running_mean) for a, m in zip(decoder_stats, decoder_norms, strict=True))
    assert not all(torch.equal(a, m.weight) for a, m in zip(scale, norms, strict=True)), (
        "scale and shift learn"
    )


def test_freeze_encoder_names_its_setting_when_it_cannot_work() -> None:
    from segvn.callbacks import FreezeEncoder
    from segvn.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^callbacks\.freeze_encoder\.frozen_stages=-1: "):
        FreezeEncoder(frozen_stages=-1)
    with pytest.raises(ConfigError, match=r"^callbacks\.freeze_encoder\.norm_eval='yes': "):
        FreezeEncoder(norm_eval="yes")
    with pytest.raises(ConfigError, match=r"frozen_stages=6: this encoder has 5 stages; give 0-5"):
        FreezeEncoder(frozen_stages=6).freeze_before_training(_tiny_module("resnet18"))
    with pytest.raises(ConfigError, match=r"frozen_stages=1: cannot tell the stages of a .*frozen_stages=0$"):
        FreezeEncoder(frozen_stages=1).freeze_before_training(_tiny_module("tu-resnet18"))
    untouched = _tiny_module("tu-resnet18")
    FreezeEncoder().freeze_before_training(untouched)  # the default does nothing, whatever the encoder
    assert all(p.requires_grad for p in untouched.parameters())


@pytest.mark.slow
def test_channels_last_eval_trains_nchw_and_validates_nhwc() -> None:
    """callbacks.memory_format.channels_last=eval: NCHW weights for every training step, NHWC weights and
    inputs for every validation batch, the same parameters (the optimizer's) throughout, and validation
    logits equal to NCHW's."""
    from segvn.callbacks import MemoryFormat

    seen: list[tuple[str, bool, bool]] = []

    class Watch(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            w = module.net.model.encoder.conv1.weight
            seen.append(("train", w.is_contiguous(), batch["image"].is_contiguous()))

        def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0) -> None:
            w = module.net.model.encoder.conv1.weight
            seen.append(("val", w.is_contiguous(), batch["image"].is_contiguous()))

    module = _tiny_module("resnet18")
    params = list(module.parameters())
    trainer = _tiny_fit(module, [MemoryFormat(channels_last="eval"), Watch()])  # Watch after: sees the inputs
    assert set(seen) == {("train", True, True), ("val", False, False)}, seen
    assert [s for s, _, _ in seen].count("val") == 3 and module.net.model.encoder.conv1.weight.is_contiguous()
    optimized = [p for group in trainer.optimizers[0].param_groups for p in group["params"]]
    assert {id(p) for p in optimized} == {id(p) for p in params}, (
        "the optimizer still holds the module's tensors"
    )
    module.eval()
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        nchw = module(x)
        module.net.to(memory_format=torch.channels_last)
        nhwc = module(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(nhwc, nchw, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_channels_last_true_puts_the_weights_in_nhwc() -> None:
    """callbacks.memory_format.channels_last=true: every 4-d weight NHWC through training and validation."""
    from segvn.callbacks import MemoryFormat

    module = _tiny_module("resnet18")
    convs = [p for p in module.net.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[-1] > 1]
    assert convs and not any(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    _tiny_fit(module, [MemoryFormat(channels_last=True)], steps=2)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    with pytest.raises(
        Exception, match=r"^callbacks\.memory_format\.channels_last='yes': give true, false or eval$"
    ):
        MemoryFormat(channels_last="yes")


def test_torch_compile_is_a_callback_and_nn_module_compile_is_not_shadowed() -> None:
    """``model.compile`` is gone from the module: ``SegModule.compile`` is ``nn.Module.compile`` again."""
    from segvn.callbacks import TorchCompile
    from segvn.errors import ConfigError
    from segvn.models.module import SegModule

    module = _tiny_module("resnet18")
    assert SegModule.compile is torch.nn.Module.compile and callable(module.compile)
    net = module.net
    TorchCompile(enabled=False).setup(None, module, "fit")
    assert module.net is net
    with pytest.raises(ConfigError, match=r"^callbacks\.torch_compile\.enabled='yes'"):
        TorchCompile(enabled="yes")
