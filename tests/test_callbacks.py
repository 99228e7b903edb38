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
