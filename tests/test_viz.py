"""Tests of segvn.viz: overlays, comparisons, legends, report plots and network visualisations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from segvn.data.classes import CLASS_NAMES, IGNORE_INDEX, PALETTE, camvid_lut
from segvn.data.yuv import I420Frame
from segvn.models.factory import Normalize, SegmentationNetwork
from segvn.models.introspect import (
    class_score,
    class_visualization,
    class_visualizations,
    default_layers,
    first_conv,
    first_conv_weights,
    initial_noise,
    layer_activations,
    to_tensor,
    to_uint8,
)
from segvn.viz.compare import comparison, disagreement_rate, side_by_side
from segvn.viz.features import activation_grid, class_grid, filter_montage, strongest_channel_overlay
from segvn.viz.image import save_image
from segvn.viz.overlay import (
    GREEN,
    MAGENTA,
    OverlayDrawer,
    draw_legend,
    legend_box,
    overlay,
    overlay_i420,
    overlay_torch,
)
from segvn.viz.plots import (
    DPI,
    confusion_matrix_figure,
    plot_class_frequency,
    plot_class_metrics,
    plot_confusion_matrix,
    plot_training_progress,
)

smp = pytest.importorskip("segmentation_models_pytorch")


def _frame(h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _labels(h: int = 24, w: int = 32, seed: int = 1) -> np.ndarray:
    labels = np.random.default_rng(seed).integers(0, len(CLASS_NAMES), (h, w)).astype(np.uint8)
    labels[:3, :5] = IGNORE_INDEX
    return labels


# ------------------------------------------------------------------------------------------ overlay
def test_overlay_hand_case_alpha_04_and_ignored_pixels_untouched():
    image = np.array([[[100, 100, 100], [50, 50, 50], [7, 8, 9], [10, 20, 30]]], dtype=np.uint8)
    palette = np.array([[200, 200, 200], [250, 0, 125]], dtype=np.uint8)
    labels = np.array([[0, 1, IGNORE_INDEX, 5]])  # 5 is not a class of this palette
    out = overlay(image, labels, alpha=0.4, palette=palette)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert out[0, 0].tolist() == [140, 140, 140]  # 0.6*100 + 0.4*200
    assert out[0, 1].tolist() == [130, 30, 80]  # 0.6*50 + 0.4*(250, 0, 125)
    assert out[0, 2].tolist() == [7, 8, 9]
    assert out[0, 3].tolist() == [10, 20, 30]


def test_overlay_accepts_int64_and_torch_labels_and_matches_float_formula():
    image, labels = _frame(), _labels()
    expected = image.astype(float)
    labelled = labels != IGNORE_INDEX
    expected[labelled] = 0.6 * expected[labelled] + 0.4 * PALETTE[labels[labelled]]
    for lab in (labels, labels.astype(np.int64), torch.from_numpy(labels.astype(np.int64))):
        out = overlay(image, lab)
        assert np.abs(out.astype(float) - expected).max() <= 0.5 + 1e-6
        assert np.array_equal(out[~labelled], image[~labelled])


def test_overlay_torch_batched_matches_numpy():
    images = np.stack([_frame(seed=s) for s in range(3)])
    labels = np.stack([_labels(seed=s) for s in range(3)])
    out = overlay_torch(torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(labels).long())
    assert out.dtype == torch.uint8 and out.shape == (3, 3, 24, 32)
    for i in range(3):
        ref = overlay(images[i], labels[i]).astype(int)
        assert np.abs(out[i].permute(1, 2, 0).numpy().astype(int) - ref).max() <= 1


def test_overlay_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        overlay(_frame(), _labels(h=10))


@pytest.mark.parametrize("corner", ["top-left", "bottom-right"])
def test_i420_drawing_equals_drawing_in_rgb_then_converting(corner: str) -> None:
    """The video path (blend in YUV, legend pasted as a block) gives the planes of the RGB picture."""
    import cv2

    image = _frame(240, 322)  # a legend box of odd width or offset must still land on the even grid
    labels = np.repeat(np.repeat(_labels(24, 23, seed=4), 10, axis=0), 14, axis=1)[:, :322]
    labels[:3, :5] = 3  # blocks of one class: chroma is compared away from class borders too
    drawer = OverlayDrawer(CLASS_NAMES, corner=corner)
    expected = cv2.cvtColor(drawer(image, labels), cv2.COLOR_RGB2YUV_I420).astype(int)
    got = drawer.i420(image, labels)
    assert got.dtype == np.uint8 and got.shape == (360, 322)
    assert np.abs(got[:240].astype(int) - expected[:240]).max() <= 1  # luma, legend included
    chroma = np.abs(got[240:].astype(int) - expected[240:])
    assert chroma.mean() < 0.5 and chroma.max() <= 2
    x0, y0, x1, y1 = legend_box(image.shape, CLASS_NAMES, corner=corner)
    assert np.array_equal(got[y0:y1, x0:x1], expected[y0:y1, x0:x1].astype(np.uint8))


def test_i420_overlay_keeps_unlabelled_pixels_and_needs_even_sizes() -> None:
    import cv2

    image, labels = _frame(24, 32), _labels(24, 32)  # labels[:3, :5] are ignored
    labels[:4, :6] = IGNORE_INDEX
    got = overlay_i420(image, labels)
    frame = cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420)
    assert np.array_equal(got[:4, :6], frame[:4, :6])
    assert np.array_equal(got[24:25, :3], frame[24:25, :3])  # U of the top-left 2x2 blocks
    assert not np.array_equal(got[4:], frame[4:])
    with pytest.raises(ValueError, match="even"):
        overlay_i420(_frame(23, 32), _labels(23, 32))


@pytest.mark.parametrize("corner", ["top-left", "bottom-right"])
def test_i420_frames_are_drawn_as_their_rgb_would_be(corner: str) -> None:
    """A decoded I420 frame is blended in place: the planes of drawing its RGB, exactly outside the
    legend's block (the same conversion), within a few levels inside it (drawn in RGB, converted back)."""
    import cv2

    image = _frame(240, 322)
    labels = np.repeat(np.repeat(_labels(24, 23, seed=4), 10, axis=0), 14, axis=1)[:, :322]
    labels[:4, :6] = IGNORE_INDEX
    drawer = OverlayDrawer(CLASS_NAMES, corner=corner)
    expected = drawer.i420(image, labels).astype(int)
    got = drawer.i420(I420Frame.from_rgb(image), labels)
    x0, y0, x1, y1 = legend_box(image.shape, CLASS_NAMES, corner=corner)
    outside = np.ones((240, 322), bool)
    outside[y0 - y0 % 2 : y1 + y1 % 2, x0 - x0 % 2 : x1 + x1 % 2] = False
    assert np.array_equal(got[:240][outside], expected[:240][outside])
    # inside the block: drawn on the frame's own RGB (a smooth frame: in gamut, as video frames are)
    smooth = I420Frame.from_rgb(cv2.GaussianBlur(image, (0, 0), 6))
    error = np.abs(drawer.i420(smooth, labels).astype(int) - drawer.i420(smooth.to_rgb(), labels))
    assert error.max() <= 3 and error.mean() < 0.5, (error.max(), error.mean())
    assert np.array_equal(overlay_i420(I420Frame.from_rgb(image), labels), overlay_i420(image, labels))
    assert np.array_equal(
        drawer(I420Frame.from_rgb(image), labels), drawer(I420Frame.from_rgb(image).to_rgb(), labels)
    )


# ------------------------------------------------------------------------------------------- legend
@pytest.mark.parametrize("corner", ["top-left", "top-right", "bottom-left", "bottom-right"])
def test_legend_changes_pixels_only_inside_its_box(corner):
    image = _frame(240, 320)
    out = draw_legend(image, CLASS_NAMES, PALETTE, corner=corner)
    x0, y0, x1, y1 = legend_box(image.shape, CLASS_NAMES, corner=corner)
    assert out.shape == image.shape and out.dtype == np.uint8
    changed = np.any(out != image, axis=2)
    inside = np.zeros_like(changed)
    inside[y0:y1, x0:x1] = True
    assert changed[inside].mean() > 0.5
    assert not changed[~inside].any()
    assert np.array_equal(image, _frame(240, 320))  # input not modified


# --------------------------------------------------------------------------------------- comparison
def test_comparison_marks_exactly_the_disagreeing_pixels():
    truth = _labels()
    pred = truth.copy()
    pred[truth == IGNORE_INDEX] = 0  # a prediction where truth is ignored is never judged
    pred[10:14, 10:20] = (pred[10:14, 10:20] + 1) % len(CLASS_NAMES)  # wrong class
    pred[20:22, 0:4] = IGNORE_INDEX  # no prediction at all
    out = comparison(pred, truth, legend=False)
    assert out.shape == (*truth.shape, 3) and out.dtype == np.uint8

    r, g, b = (out[..., i].astype(int) for i in range(3))
    magenta = (r - g > 100) & (b - g > 100)
    green = (g - r > 100) & (g - b > 100)
    neutral = (r == g) & (g == b)
    judged = truth != IGNORE_INDEX
    assert np.array_equal(magenta, judged & (pred != truth) & (pred != IGNORE_INDEX))
    assert np.array_equal(green, judged & (pred == IGNORE_INDEX))
    assert np.all(out[judged & (pred == truth)] == 128)  # agreement: flat grey without a frame
    assert neutral[~judged].all() and not np.any(out[~judged] == 128)  # ignored: dark hatching
    assert disagreement_rate(pred, truth) == pytest.approx((magenta | green).sum() / judged.sum())


def test_comparison_single_class_view_and_frame_background():
    truth = np.array([[1, 1, 0, 0, IGNORE_INDEX]], dtype=np.uint8)
    pred = np.array([[1, 0, 1, 0, 1]], dtype=np.uint8)
    out = comparison(pred, truth, image=_frame(1, 5), class_index=1, legend=False).astype(int)
    assert out[0, 0].min() > 150  # hit: bright
    assert out[0, 1, 1] - out[0, 1, 0] > 100  # miss: green
    assert out[0, 2, 0] - out[0, 2, 1] > 100  # false alarm: magenta
    assert out[0, 3, 0] == out[0, 3, 1] == out[0, 3, 2]  # agreement on "not car": grey frame


def test_comparison_legend_sits_in_bottom_left_corner():
    truth, pred = _labels(120, 160), _labels(120, 160, seed=2)
    plain = comparison(pred, truth, legend=False)
    with_legend = comparison(pred, truth)
    changed = np.any(plain != with_legend, axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.any() and ys.min() > 120 // 3 and xs.max() < 160 * 2 // 3
    assert tuple(MAGENTA) != tuple(GREEN)


def test_side_by_side_layouts():
    image, truth = _frame(48, 64), _labels(48, 64)
    pred = _labels(48, 64, seed=5)
    grid = side_by_side(image, pred, truth, CLASS_NAMES, PALETTE)
    strip = side_by_side(image, pred, truth, CLASS_NAMES, PALETTE, ncols=4, gap=2)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[1] == 2 * 64 + 4 and grid.shape[0] > 2 * 48
    assert strip.shape[1] == 4 * 64 + 3 * 2 and 48 < strip.shape[0] < grid.shape[0]
    with pytest.raises(ValueError):
        side_by_side(image, pred[:10], truth)


def test_real_camvid_frame_overlay_and_side_by_side(camvid_root, tmp_path):
    frame_path = sorted((camvid_root / "train").glob("*.png"))[0]
    image = np.array(Image.open(frame_path).convert("RGB"))
    truth = camvid_lut()[np.array(Image.open(camvid_root / "trainannot" / frame_path.name))]
    pred = np.roll(truth, 8, axis=1)
    pred[pred == IGNORE_INDEX] = 0

    over = overlay(image, truth)
    assert over.shape == image.shape == (360, 480, 3)
    ignored = truth == IGNORE_INDEX
    assert np.array_equal(over[ignored], image[ignored]) and not np.array_equal(over, image)
    picture = side_by_side(image, pred, truth, CLASS_NAMES, PALETTE)
    assert picture.shape[1] == 2 * 480 + 4 and picture.shape[0] > 720
    Image.fromarray(picture).save(tmp_path / "side_by_side.png")
    assert Image.open(tmp_path / "side_by_side.png").size == (picture.shape[1], picture.shape[0])
    assert 0 < disagreement_rate(pred, truth) < 0.5


# -------------------------------------------------------------------------------------------- plots
def _assert_png(path: Path, min_side: int = 300, max_side: int = 4000) -> None:
    assert path.exists()
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        assert min_side <= im.width <= max_side and min_side <= im.height <= max_side


def test_plot_class_frequency_and_metrics(tmp_path):
    counts = np.array([5e6, 2e6, 3e5, 1e5, 9e6, 2e6, 6e6, 4e6])
    out = plot_class_frequency(counts, CLASS_NAMES, PALETTE, tmp_path / "freq.png")
    _assert_png(out)
    images = np.arange(8) * 10 + 5
    _assert_png(plot_class_frequency(counts, CLASS_NAMES, PALETTE, tmp_path / "f2.png", image_counts=images))
    scores = {"IoU": np.linspace(0.2, 0.9, 8), "BF": np.r_[np.linspace(0.3, 0.8, 7), np.nan]}
    _assert_png(plot_class_metrics(scores, CLASS_NAMES, tmp_path / "metrics.png"))
    with pytest.raises(ValueError):
        plot_class_frequency(counts[:3], CLASS_NAMES, PALETTE, tmp_path / "bad.png")


@pytest.mark.parametrize("normalize", ["true", "pred", "all", None])
def test_plot_confusion_matrix(tmp_path, normalize):
    cm = np.random.default_rng(0).integers(0, 500, (8, 8)) + np.diag(np.full(8, 5000))
    cm[3] = 0  # a class without truth pixels must not break row normalisation
    _assert_png(plot_confusion_matrix(cm, CLASS_NAMES, tmp_path / "cm.png", normalize=normalize))


def test_confusion_matrix_png_names_the_classes_and_reads_as_percentages(tmp_path):
    """The picture evaluate writes: class names on both axes, each cell's share of its true class as
    ``93.0``, the diagonal dark and the rest light on the PNG itself, a class without pixels all 0."""
    cm = np.full((8, 8), 10)
    np.fill_diagonal(cm, 930)  # rows of 1000 pixels: 93% right, 1% to each other class
    cm[3] = 0
    fig = confusion_matrix_figure(cm, CLASS_NAMES)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(CLASS_NAMES)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(CLASS_NAMES)
    cells = np.array([t.get_text() for t in ax.texts]).reshape(8, 8)
    assert cells[0, 0] == "93.0" and cells[0, 1] == "1.0" and (cells[3] == "0.0").all()
    assert len(fig.axes) == 2, "the colour bar"

    png = tmp_path / "confusion_matrix.png"
    FigureCanvasAgg(fig)
    fig.set_dpi(DPI)
    fig.savefig(png, dpi=DPI)
    _assert_png(png)
    with Image.open(png) as im:
        grey = np.asarray(im.convert("L"), dtype=np.float64)

    def shade(i: int, j: int) -> float:  # the PNG's grey level just above the centre of cell (row i, col j)
        x, y = ax.transData.transform((j, i - 0.3))
        return grey[int(round(grey.shape[0] - y)), int(round(x))]

    diagonal = [shade(i, i) for i in range(8) if i != 3]
    off = [shade(i, j) for i in range(8) for j in range(8) if i != j]
    assert max(diagonal) < 150 < min(off), (diagonal, off)
    assert (
        plot_confusion_matrix(cm, CLASS_NAMES, tmp_path / "saved.png").read_bytes()[:8]
        == b"\x89PNG\r\n\x1a\n"
    )


def _run_toy_training(log_dir: Path) -> Path:
    """A real Lightning run with CSVLogger that logs the metric names the project uses."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    class Toy(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 3)

        def _scores(self, batch):
            x, y = batch
            logits = self.net(x)
            return torch.nn.functional.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()

        def training_step(self, batch, _):
            loss, acc = self._scores(batch)
            self.log("train/loss", loss, on_step=True, on_epoch=True)
            self.log("train/acc", acc, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, batch, _):
            loss, acc = self._scores(batch)
            self.log_dict({"val/loss": loss, "val/miou": 0.8 * acc, "val/global_acc": acc})

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=gen)
    loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=CSVLogger(log_dir, name="toy"),
        callbacks=[LearningRateMonitor(logging_interval="step")],
        log_every_n_steps=1,
        limit_val_batches=2,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Toy(), loader, loader)
    return Path(trainer.logger.log_dir) / "metrics.csv"


@pytest.mark.slow
def test_plot_training_progress_from_real_csvlogger(tmp_path):
    csv = _run_toy_training(tmp_path / "logs")
    columns = set(pd.read_csv(csv).columns)
    assert {"step", "epoch", "train/loss_step", "val/miou", "lr-SGD"} <= columns
    _assert_png(plot_training_progress(csv, tmp_path / "progress.png"))
    # Missing columns are fine: plot what exists (here only validation metrics, from a DataFrame).
    partial = pd.read_csv(csv)[["step", "epoch", "val/loss", "val/miou"]]
    _assert_png(plot_training_progress(partial, tmp_path / "partial.png"))


def test_long_runs_label_every_nth_epoch():
    """A 63-epoch budget run labelled every epoch drew its numbers on top of each other."""
    from segvn.viz.plots import _epoch_label_step

    assert [_epoch_label_step(n) for n in (1, 25, 26, 63, 300)] == [1, 1, 2, 5, 20]
    assert all(n / _epoch_label_step(n) <= 25 for n in range(1, 2000))


def test_running_best_is_drawn_under_the_metric_it_follows():
    """val/miou_best equals val/miou while every validation is a new best: both must stay visible."""
    from matplotlib.figure import Figure

    from segvn.viz.plots import _plot_series

    df = pd.DataFrame({"step": [10, 20, 30], "val/miou": [0.4, 0.5, 0.45], "val/miou_best": [0.4, 0.5, 0.5]})
    ax = Figure().subplots()
    _plot_series(ax, df, ["val/miou", "val/miou_best"], smoothing=0.6)
    metric, best = {line.get_label(): line for line in ax.get_lines()}.values()
    assert metric.get_marker() == "o" and best.get_marker() in ("None", "", None)
    assert best.get_drawstyle() == "steps-post" and best.get_zorder() < metric.get_zorder()


def test_plot_training_progress_without_metrics_is_a_clear_error(tmp_path):
    csv = tmp_path / "metrics.csv"
    pd.DataFrame({"epoch": [0, 0, 1], "step": [0, 1, 2]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match="no metric columns"):
        plot_training_progress(csv, tmp_path / "x.png")


# ------------------------------------------------------------------------------------------ network
@pytest.fixture(scope="module")
def deeplab() -> torch.nn.Module:
    torch.manual_seed(0)
    return smp.DeepLabV3Plus(
        encoder_name="resnet18", encoder_weights=None, classes=8, encoder_output_stride=16
    )


@pytest.fixture(scope="module")
def tiny_deeplab() -> torch.nn.Module:
    torch.manual_seed(0)
    return smp.DeepLabV3Plus(
        encoder_name="resnet18", encoder_weights=None, classes=8, encoder_depth=3, decoder_channels=32
    )


def test_first_conv_filter_grid_layout(deeplab, tmp_path):
    name, conv = first_conv(deeplab)
    assert name == "encoder.conv1" and conv.weight.shape == (64, 3, 7, 7)
    grid = filter_montage(first_conv_weights(deeplab), scale=4, pad=2)
    tile = 7 * 4 + 2  # 64 filters -> 8 x 8 tiles of 28 px, 2 px apart, 2 px border
    assert grid.shape == (8 * tile + 2, 8 * tile + 2, 3) and grid.dtype == np.uint8
    assert filter_montage(first_conv_weights(deeplab), scale=1, pad=1, ncols=16).shape == (
        4 * 8 + 1,
        16 * 8 + 1,
        3,
    )
    with Image.open(save_image(grid, tmp_path / "filters.png")) as im:
        assert im.size == (grid.shape[1], grid.shape[0])


def test_layer_activations_shapes_and_model_state(deeplab):
    x = torch.randn(1, 3, 64, 64)
    deeplab.train()
    acts = layer_activations(deeplab, x, ["encoder.layer1", "encoder.layer4", "decoder.aspp", "decoder"])
    assert deeplab.training  # mode restored
    assert list(acts) == ["encoder.layer1", "encoder.layer4", "decoder.aspp", "decoder"]
    assert acts["encoder.layer1"].shape == (1, 64, 16, 16)
    assert acts["encoder.layer4"].shape == (1, 512, 4, 4)
    assert acts["decoder.aspp"].shape == (1, 256, 4, 4)
    assert acts["decoder"].shape == (1, 256, 16, 16)
    assert set(default_layers(deeplab)) >= {"encoder.layer1", "encoder.layer4", "decoder.aspp", "decoder"}

    padded = layer_activations(deeplab, torch.randn(1, 3, 60, 60), ["encoder.layer1"], pad_to=16)
    assert padded["encoder.layer1"].shape == (1, 64, 15, 15)

    grid = activation_grid(acts["encoder.layer1"])  # 64 tiles of 16 px, enlarged x2, 8 x 8
    assert grid.dtype == np.uint8 and grid.shape == (8 * 33 + 1, 8 * 33 + 1)
    assert (
        activation_grid(acts["encoder.layer4"][0], max_channels=16, normalize="channel").shape
        == (4 * 33 + 1,) * 2
    )
    heat = strongest_channel_overlay(_frame(64, 64), acts["decoder"])
    assert heat.shape == (64, 64, 3) and heat.dtype == np.uint8


def test_unknown_layer_name_lists_valid_names(deeplab):
    with pytest.raises(ValueError, match="unknown layer") as err:
        layer_activations(deeplab, torch.randn(1, 3, 32, 32), ["encoder.layer9"])
    assert "encoder.layer4" in str(err.value) and "decoder.aspp" in str(err.value)


def _tiny_cnn() -> torch.nn.Module:
    """A few conv + batch-norm layers giving (N, 3 classes, H, W) logits; fast and input-sensitive."""
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 3, 1), nn.Upsample(scale_factor=2),
    )  # fmt: skip


@pytest.mark.parametrize("make_model", [_tiny_cnn, "tiny_deeplab"])
def test_class_visualization_raises_class_score_and_leaves_model_alone(make_model, request):
    model = request.getfixturevalue(make_model) if isinstance(make_model, str) else make_model()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    start = initial_noise((64, 64), seed=3)
    kwargs = {"size": (64, 64), "steps": 10, "octaves": 1, "jitter": 4, "seed": 3}
    picture = class_visualization(model, 2, **kwargs)
    assert picture.shape == (64, 64, 3) and picture.dtype == np.uint8

    # Noise images of this kind score within ~3e-4 of each other on the random DeepLabV3+; the
    # optimised picture must beat its starting noise by far more than that.
    gain = class_score(model, picture, 2) - class_score(model, start, 2)
    assert gain > 0.005
    assert model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics unchanged
    if not isinstance(make_model, str):  # cheap enough to run twice
        assert np.array_equal(picture, class_visualization(model, 2, **kwargs))  # deterministic for a seed


def test_introspection_of_a_segvn_network_sees_the_normalised_frame(tiny_deeplab):
    """A segvn network takes RGB 0-255: its activations (named as in its smp model) are the smp model's on
    the normalised frame, and its class pictures raise its class score."""
    net = SegmentationNetwork(tiny_deeplab)
    image = _frame(64, 64)
    x = to_tensor(image)
    got = layer_activations(net, x, ["encoder.layer1"])["encoder.layer1"]
    expected = layer_activations(tiny_deeplab, Normalize()(x), ["encoder.layer1"])["encoder.layer1"]
    assert torch.allclose(got, expected, atol=1e-4)
    raw = layer_activations(tiny_deeplab, x, ["encoder.layer1"])["encoder.layer1"]
    assert not torch.allclose(got, raw, atol=1e-2)  # the test can tell
    kwargs = {"size": (64, 64), "steps": 10, "octaves": 1, "jitter": 4, "seed": 3}
    picture = class_visualization(net, 2, **kwargs)
    assert class_score(net, picture, 2) - class_score(net, initial_noise((64, 64), seed=3), 2) > 0.005


def test_class_visualizations_grid(tiny_deeplab):
    pictures = class_visualizations(tiny_deeplab, [0, 4], size=(64, 64), steps=2, octaves=2)
    grid = class_grid(pictures, [CLASS_NAMES[0], CLASS_NAMES[4]])
    assert grid.dtype == np.uint8 and grid.ndim == 3
    assert grid.shape[1] == 2 * (64 + 4) + 4 and grid.shape[0] > 64 + 8


def test_to_tensor_roundtrip():
    image = _frame(8, 8)
    assert np.array_equal(to_uint8(to_tensor(image)), image)
