"""``python -m segvn.analyze``: class statistics, weights, charts and frame grids of real CamVid data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

from segvn.analyze import analyze
from segvn.data.classes import CLASS_NAMES, camvid_lut
from segvn.data.report import CLASS_FIELDS
from segvn.viz.labels import evenly_spaced, label_grid

from .conftest import run_segvn

# a small real case: 2 frames of 0001TP and 1 of 0006R0 with labels; 2 frames of 0016E5 without
TRAIN = {"0001TP": ["0001TP_006690", "0001TP_008250"], "0006R0": ["0006R0_f02220"]}
UNLABELLED = ["0016E5_00390", "0016E5_00420"]
STREET_ARGS = [
    "data=camvid_streets",
    "data.source.train=[0001TP,0006R0]",
    'data.source.val=["0016E5"]',  # quoted: a bare 0016E5 is the YAML number 1.6e6
    'data.source.predict=["0016E5"]',
    "data.source.test=[]",
]


@pytest.fixture
def small_camvid(camvid_root: Path, tmp_path: Path) -> Path:
    """A CamVid folder of five real frames (links into the shared copy)."""
    root = tmp_path / "camvid"
    for folder in ("train", "trainannot", "val"):
        (root / folder).mkdir(parents=True)
    for stems in TRAIN.values():
        for stem in stems:
            (root / "train" / f"{stem}.png").symlink_to(camvid_root / "train" / f"{stem}.png")
            (root / "trainannot" / f"{stem}.png").symlink_to(camvid_root / "trainannot" / f"{stem}.png")
    for stem in UNLABELLED:
        source = camvid_root / "train" / f"{stem}.png"
        if not source.exists():
            source = camvid_root / "val" / f"{stem}.png"
        (root / "val" / f"{stem}.png").symlink_to(source)
    return root


def hand_counts(root: Path, stems: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(frames x classes) pixel counts and pixels per frame, straight from the label PNGs."""
    lut = camvid_lut()
    counts, pixels = [], []
    for stem in stems:
        label = lut[np.asarray(Image.open(root / "trainannot" / f"{stem}.png"))]
        counts.append([(label == c).sum() for c in range(len(CLASS_NAMES))])
        pixels.append(label.size)
    return np.array(counts, np.int64), np.array(pixels, np.int64)


def hand_weights(counts: np.ndarray, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Median-frequency and inverse-frequency weights computed by hand (absent classes: 0)."""
    pixel_count = counts.sum(0)
    image_pixels = ((counts > 0) * pixels[:, None]).sum(0)
    present = image_pixels > 0
    freq = np.where(present, pixel_count / np.maximum(image_pixels, 1), 0.0)
    median = np.where(present, np.median(freq[present]) / np.where(present, freq, 1), 0.0)
    inverse = np.where(present, 1 / np.where(present, freq, 1), 0.0)
    inverse = inverse / inverse[present].mean() * present
    return {"median_frequency": median, "inverse_frequency": inverse}


@pytest.mark.slow
def test_analyze_command_on_a_small_real_case_matches_a_hand_computation(small_camvid, tmp_path):
    out = tmp_path / "run"
    proc = run_segvn(
        "analyze",
        *STREET_ARGS,
        f"data.root={small_camvid}",
        "data.image_size=[90,120]",
        "grid.frames=2",
        "grid.ncols=2",
        f"hydra.run.dir={out}",
        root=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "val: skipped (the val split has 2 frames but none has a label map)" in log
    assert "test: skipped (the test split has no frames" in log

    report = json.loads((out / "class_stats.json").read_text())
    splits = report["splits"]
    assert splits["test"]["status"] == "empty" and "total" not in splits["test"]
    assert splits["val"]["status"] == "unlabelled" and splits["val"]["frames"] == 2
    assert splits["predict"]["status"] == "unlabelled"
    train = splits["train"]
    assert (
        train["status"] == "ok" and train["labelled_frames"] == 3 and train["streets"] == ["0001TP", "0006R0"]
    )

    stems = [s for street in TRAIN.values() for s in street]
    counts, pixels = hand_counts(small_camvid, stems)
    weights = hand_weights(counts, pixels)
    classes = train["total"]["classes"]
    assert list(classes) == list(CLASS_NAMES)
    for c, name in enumerate(CLASS_NAMES):
        assert classes[name]["pixel_count"] == counts[:, c].sum()
        assert classes[name]["image_count"] == (counts[:, c] > 0).sum()
        assert classes[name]["pixel_share"] == pytest.approx(counts[:, c].sum() / counts.sum())
        for method, w in weights.items():
            assert classes[name][f"{method}_weight"] == pytest.approx(w[c], rel=1e-5), (name, method)
    assert train["total"]["ignored_pixels"] == pixels.sum() - counts.sum()
    assert report["training_weights"]["median_frequency"] == {
        n: classes[n]["median_frequency_weight"] for n in CLASS_NAMES
    }

    # per street: 0006R0 alone is its one frame
    street = train["by_street"]["0006R0"]
    one_counts, one_pixels = hand_counts(small_camvid, TRAIN["0006R0"])
    assert street["images"] == 1
    assert [street["classes"][n]["pixel_count"] for n in CLASS_NAMES] == one_counts[0].tolist()
    one = hand_weights(one_counts, one_pixels)["median_frequency"]
    assert [street["classes"][n]["median_frequency_weight"] for n in CLASS_NAMES] == pytest.approx(
        one, rel=1e-5
    )

    # the CSV holds the same numbers: split total + 2 streets, 8 classes each
    with open(out / "class_stats.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["split", "street", "images", "class", *CLASS_FIELDS]
    assert len(rows) == 3 * len(CLASS_NAMES)
    car = next(r for r in rows if r["street"] == "(all)" and r["class"] == "car")
    assert int(car["pixel_count"]) == counts[:, 1].sum()
    assert float(car["median_frequency_weight"]) == pytest.approx(weights["median_frequency"][1], rel=1e-5)

    # pictures: the frequency chart, the weights chart and the 2-frame grid (90x120 tiles + legend)
    for name in ("class_frequency_train.png", "class_weights.png", "frames_train.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.mode in ("RGB", "RGBA")
            if name == "frames_train.png":
                assert im.size[0] > 2 * 120 and 90 < im.size[1] < 400
    assert not (out / "frames_val.png").exists() and not (out / "class_frequency_test.png").exists()


@pytest.mark.slow
def test_class_weights_in_the_report_are_what_training_uses(small_camvid, compose_cfg):
    cfg = compose_cfg([*STREET_ARGS, f"data.root={small_camvid}", "grid.frames=0"], config_name="analyze")
    report = analyze(cfg)
    dm = instantiate(cfg.data)
    for method in ("median_frequency", "inverse_frequency"):
        expected = dm.class_weights(method).numpy()
        got = [report["training_weights"][method][n] for n in CLASS_NAMES]
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    out = Path(cfg.paths.output_dir)
    assert (out / "class_stats.json").exists() and not (out / "frames_train.png").exists()


def test_label_grid_tiles_frames_with_a_legend():
    rng = np.random.default_rng(0)
    frames = [
        (
            rng.integers(0, 255, (30, 40, 3), dtype=np.uint8),
            rng.integers(0, 8, (30, 40)).astype(np.uint8),
            f"f{i}",
        )
        for i in range(5)
    ]
    frames[0][1][:5] = 255
    grid = label_grid(frames, CLASS_NAMES, ncols=3, titles=False)
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    # 3 columns of 40 px tiles 4 px apart, then the legend panel; the legend sets the height
    assert grid.shape[1] > 3 * 44 + 4 and grid.shape[0] >= 2 * 34 + 4
    np.testing.assert_array_equal(grid[4:9, 4:44], frames[0][0][:5], "unlabelled pixels keep the frame")
    assert (
        evenly_spaced(10, 4) == [0, 3, 6, 9]
        and evenly_spaced(3, 8) == [0, 1, 2]
        and evenly_spaced(0, 3) == []
    )


@pytest.mark.slow
def test_analyze_the_whole_camvid_folder(camvid_root, compose_cfg):
    cfg = compose_cfg(
        ["data=camvid", f"data.root={camvid_root}", "data.image_size=[45,60]", "grid.frames=4"],
        config_name="analyze",
    )
    report = analyze(cfg)
    out = Path(cfg.paths.output_dir)
    train, val = report["splits"]["train"], report["splits"]["val"]
    assert train["status"] == "ok" and train["labelled_frames"] == 367
    assert val["status"] == "ok" and val["labelled_frames"] == 101
    assert report["splits"]["test"]["status"] == "empty", "the CamVid test split is withheld here"
    # the eight classes all occur in CamVid's training frames; person is the rarest, road the commonest
    classes = train["total"]["classes"]
    weights = report["training_weights"]["median_frequency"]
    assert all(classes[n]["pixel_count"] > 0 for n in CLASS_NAMES)
    assert max(weights, key=weights.get) == "person" and min(weights, key=weights.get) == "road"
    with Image.open(out / "frames_val.png") as im:
        assert im.size[1] >= 45
