"""segvn.check and the data-layer checks: corrupted copies of real CamVid files, findings by name."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segvn.data.camvid import CamVid
from segvn.data.check import ERROR_KINDS, KINDS, check_dataset, check_source
from segvn.data.classes import IGNORE_INDEX, camvid_known, camvid_lut, index_to_rgb
from segvn.data.datamodule import SegDataModule
from segvn.data.io import read_image, read_label
from segvn.data.sources import StreetFolders
from segvn.errors import ConfigError, DataError
from tests.conftest import REPO_ROOT, run_segvn

STRAY = (12, 34, 56)


def _copy_camvid(camvid_root: Path, root: Path, n_train: int = 5, n_val: int = 2) -> dict[str, list[Path]]:
    """A small SegNet-layout copy of real CamVid frames: ``{split: [frame paths]}``."""
    out = {}
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        frames = sorted((camvid_root / split).glob("*.png"))[::40][:n]
        for f in frames:
            shutil.copy(f, root / split / f.name)
            shutil.copy(camvid_root / f"{split}annot" / f.name, root / f"{split}annot" / f.name)
        out[split] = [root / split / f.name for f in frames]
    return out


@pytest.fixture
def clean_camvid(camvid_root, tmp_path) -> Path:
    root = tmp_path / "clean"
    _copy_camvid(camvid_root, root)
    return root


@pytest.fixture
def bad_camvid(camvid_root, tmp_path) -> tuple[Path, dict[str, Path]]:
    """A CamVid copy with one of each problem; returns the root and the file of each finding."""
    root = tmp_path / "bad"
    frames = _copy_camvid(camvid_root, root, n_train=6)
    train, annot = frames["train"], root / "trainannot"
    bad = {}
    # a truncated PNG
    bad["unreadable"] = train[0]
    train[0].write_bytes(train[0].read_bytes()[:3000])
    # a label of another size
    bad["size_mismatch"] = annot / train[1].name
    Image.open(bad["size_mismatch"]).resize((240, 180), Image.NEAREST).save(bad["size_mismatch"])
    # label values outside CamVid's 0..11
    bad["out_of_range"] = annot / train[2].name
    lab = np.array(Image.open(bad["out_of_range"]))
    lab[:36] = 200  # a tenth of the rows
    Image.fromarray(lab).save(bad["out_of_range"])
    # a frame of train copied into val under another name (with its label)
    bad["leak"] = root / "val" / "0016E5_99999.png"
    shutil.copy(train[3], bad["leak"])
    shutil.copy(annot / train[3].name, root / "valannot" / bad["leak"].name)
    # a label without frame, and a frame without label
    bad["orphan_label"] = annot / "0001TP_000001.png"
    shutil.copy(annot / train[4].name, bad["orphan_label"])
    bad["unlabelled_frame"] = train[5]
    (annot / train[5].name).unlink()
    return root, bad


def _by_kind(report: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in report["findings"]:
        out.setdefault(f["kind"], []).append(f)
    return out


def test_check_names_each_finding(bad_camvid):
    root, bad = bad_camvid
    report = check_source(CamVid(root, train=["train"], val=["val"]), level="full")
    doc = json.loads(json.dumps(report.to_dict()))  # what check.json holds
    kinds = _by_kind(doc)
    assert not doc["ok"] and doc["errors"] == len(report.errors)
    assert [f["path"] for f in kinds["unreadable"]] == [str(bad["unreadable"])]
    assert "truncated" in kinds["unreadable"][0]["message"]
    assert [f["path"] for f in kinds["size_mismatch"]] == [str(bad["size_mismatch"])]
    (oor,) = kinds["out_of_range"]
    assert oor["path"] == str(bad["out_of_range"]) and oor["share"] == pytest.approx(0.1)
    assert oor["values"] == [[200, 36 * 480]] and oor["severity"] == "error"
    (leak,) = kinds["leak"]
    assert str(bad["leak"]) in leak["files"] and leak["split"] == "train+val"
    assert [f["path"] for f in kinds["orphan_label"]] == [str(bad["orphan_label"])]
    (unlab,) = kinds["unlabelled_frame"]
    assert unlab["files"] == [str(bad["unlabelled_frame"])] and unlab["severity"] == "warning"
    # worst first: every error before every warning
    severities = [f["severity"] for f in doc["findings"]]
    assert severities == sorted(severities)  # "error" < "warning"
    assert doc["counts"]["train"]["train"] == {"frames": 6, "labels": 5}
    assert set(kinds) <= set(KINDS)


def test_clean_copy_has_no_error(clean_camvid):
    report = check_source(CamVid(clean_camvid, train=["train"], val=["val"]), level="full")
    assert report.ok, report.text()
    assert {f.kind for f in report.findings} <= {"missing_class"}


def test_street_layout_stray_colours_and_street_leak(camvid_root, tmp_path):
    root = tmp_path / "streets"
    lut = camvid_lut()
    for street, seq in (("a", "0001TP"), ("b", "0006R0")):
        (root / street / "frames").mkdir(parents=True)
        (root / street / "labels").mkdir()
        for f in sorted((camvid_root / "train").glob(f"{seq}_*.png"))[:2]:
            shutil.copy(f, root / street / "frames" / f.name)
            rgb = index_to_rgb(lut[np.asarray(Image.open(camvid_root / "trainannot" / f.name))])
            Image.fromarray(rgb).save(root / street / "labels" / f.name)
    stray = sorted((root / "b" / "labels").glob("*.png"))[0]
    rgb = np.array(Image.open(stray))
    rgb[:18] = STRAY
    rgb[18:36, :240] = (1, 2, 3)
    Image.fromarray(rgb).save(stray)
    src = StreetFolders(root, train=["a", "b"], val=["b"])
    doc = check_source(src, splits=["train", "val"]).to_dict()
    kinds = _by_kind(doc)
    (colour,) = kinds["unknown_colour"]
    assert colour["path"] == str(stray) and colour["severity"] == "warning"
    assert colour["share"] == pytest.approx(0.075)
    assert colour["values"] == [[list(STRAY), 18 * 480], [[1, 2, 3], 18 * 240]]
    (leak,) = kinds["street_leak"]
    assert leak["street"] == "b" and leak["severity"] == "error"
    assert "out_of_range" not in kinds  # black (ignore) and stray colours are not index values


def test_setup_check_raises_and_warn_only_demotes(bad_camvid, tmp_path):
    root, bad = bad_camvid
    bad["unreadable"].unlink()  # the truncated frame would stop the label scan first
    (root / "trainannot" / bad["unreadable"].name).unlink()
    Image.open(bad["size_mismatch"]).resize((480, 360), Image.NEAREST).save(bad["size_mismatch"])

    def dm(**check):
        return SegDataModule(CamVid(root, train=["train"], val=["val"]), cache_dir=tmp_path, check=check)

    scan_warning = pytest.warns(UserWarning, match=r"outside the dataset's class table.*\n.*10\.00%")
    report_error = pytest.raises(
        DataError, match=r"(?s)ERROR \[out_of_range\].*10\.00%.*ERROR \[leak\].*warn_only"
    )
    with scan_warning, report_error:
        dm().setup("fit")
    with pytest.warns(UserWarning):
        dm(warn_only=["leak", "out_of_range"]).setup("fit")
    with pytest.warns(UserWarning):  # the label scan still warns; the check is off
        dm(level="off").setup("fit")
    with pytest.raises(ConfigError, match="warn_only.*orphan_label is not an error kind"):
        dm(warn_only=["orphan_label"])
    with pytest.raises(ConfigError, match="data.check.level='fast'"):
        dm(level="fast")


@pytest.mark.slow
def test_check_cli_exit_codes(bad_camvid, clean_camvid, tmp_path):
    root, bad = bad_camvid
    run = tmp_path / "run_bad"
    proc = run_segvn(
        "check", "data=camvid", f"data.root={root}", f"hydra.run.dir={run}", "width=250", root=tmp_path
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert "error(s)" in output and "out_of_range" in output and bad["leak"].name in output
    assert re.search(r"dataset check: \d+ error\(s\) in .*check\.json", output)
    assert "Traceback" not in output
    doc = json.loads((run / "check.json").read_text())
    assert {"unreadable", "size_mismatch", "out_of_range", "leak", "orphan_label"} <= {
        f["kind"] for f in doc["findings"]
    }
    run = tmp_path / "run_clean"
    proc = run_segvn(
        "check", "data=camvid", f"data.root={clean_camvid}", f"hydra.run.dir={run}", root=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((run / "check.json").read_text())["ok"] is True


# -- no silent corruption ---------------------------------------------------------------------
def test_16bit_label_value_259_is_out_of_range_not_class_3(tmp_path):
    import cv2

    lab = np.full((4, 5), 3, np.uint16)  # CamVid 3 = road
    lab[0, :] = 259  # 259 % 256 == 3: must not wrap into road
    lab[1, 0] = 11  # Unlabelled: deliberately ignored, not out of range
    cv2.imwrite(str(tmp_path / "l.png"), lab)
    read = read_label(tmp_path / "l.png", "index", camvid_lut(), camvid_known())
    road = camvid_lut()[3]
    assert (read.labels[0] == IGNORE_INDEX).all() and (read.labels[2:] == road).all()
    assert read.out_of_range_share == pytest.approx(5 / 20) and read.unknown_values == [(259, 5)]
    assert read.ignored_share == pytest.approx(1 / 20)
    labels, bad_share = read  # the old two-item call still works
    assert bad_share == pytest.approx(0.25) and labels is read.labels


def test_index_map_without_lut_ignores_out_of_range(tmp_path):
    Image.fromarray(np.array([[0, 7, 8, 255]], np.uint8)).save(tmp_path / "l.png")
    read = read_label(tmp_path / "l.png", "index")
    assert read.labels.tolist() == [[0, 7, 255, 255]] and read.out_of_range_share == pytest.approx(0.25)


def test_16bit_frames_are_scaled_not_white(tmp_path):
    import cv2

    grey = np.array([[0, 257 * 100, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    assert read_image(tmp_path / "g.png")[0, :, 0].tolist() == [0, 100, 255]
    assert read_image(tmp_path / "g.png").shape == (1, 3, 3)
    rgb = np.stack([grey, grey // 2, grey // 4], axis=2)
    cv2.imwrite(str(tmp_path / "c.png"), rgb[..., ::-1])  # cv2 writes BGR
    assert read_image(tmp_path / "c.png")[0, 2].tolist() == [255, 127, 63]


# -- advice names real settings ----------------------------------------------------------------
def _config_keys(compose_cfg) -> set[str]:
    from omegaconf import OmegaConf

    keys: set[str] = set()

    def walk(node, prefix):
        for k, v in node.items():
            keys.add(f"{prefix}{k}")
            if OmegaConf.is_dict(v):
                walk(v, f"{prefix}{k}.")

    for data in ("synthetic", "camvid", "camvid_streets", "vietnam"):
        cfg = compose_cfg([f"data={data}"], config_name="check")
        walk(cfg.data, "data.")
    return keys


def test_every_setting_named_in_data_errors_exists(compose_cfg, tmp_path):
    keys = _config_keys(compose_cfg)
    # messages of real errors, and every data.<key> written in the data layer's source
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(DataError) as grey:
        read_label(tmp_path / "grey.png", "rgb")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError) as rgb:
        read_label(tmp_path / "rgb.png", "index")
    assert "label_format" not in str(grey.value) and "data=camvid" in str(grey.value)
    assert "data=vietnam" in str(rgb.value)
    texts = [str(grey.value), str(rgb.value)]
    texts += [p.read_text() for p in (REPO_ROOT / "segvn" / "data").glob("*.py")]
    named = set()
    for text in texts:
        named |= {m.rstrip(".") for m in re.findall(r"(?<![.\w])data(?:\.[a-z_]+)+\.?", text)}
        named |= {f"data.{m}" for m in re.findall(r"\bset (?:the data config's )?([a-z_]+) to\b", text)}
    named -= {"data.check"}  # the group itself; its keys are checked through the names below
    assert "data.check.warn_only" in named and "data.root" in named
    missing = sorted(k for k in named if k not in keys)
    assert not missing, f"error messages name settings that do not exist: {missing}"
    for choice in re.findall(r"\bdata=([a-z_]+)", " ".join(texts)):
        assert (REPO_ROOT / "conf" / "data" / f"{choice}.yaml").exists(), choice


def test_warn_only_kinds_are_error_kinds():
    assert set(ERROR_KINDS) < set(KINDS)
    with pytest.raises(ConfigError):
        check_dataset(StreetFolders("/nonexistent"), warn_only=["nope"])


# -- vietnam prediction streets, camvid default root ------------------------------------------
def test_vietnam_trains_without_prediction_streets(camvid_root, tmp_path, compose_cfg):
    from hydra.utils import instantiate

    root = tmp_path / "vietnam"
    for k, street in enumerate(("nguyen_van_luong", "nguyen_oanh", "ha_huy_giap", "phan_van_tri")):
        (root / street / "frames").mkdir(parents=True)
        (root / street / "labels").mkdir()
        f = sorted((camvid_root / "train").glob("*.png"))[40 * k]
        shutil.copy(f, root / street / "frames" / f.name)
        rgb = index_to_rgb(camvid_lut()[np.asarray(Image.open(camvid_root / "trainannot" / f.name))])
        Image.fromarray(rgb).save(root / street / "labels" / f.name)
    # two training frames: a batch of two (the training loader drops an incomplete last batch)
    cfg = compose_cfg(["data=vietnam", f"data.root={root}", "data.batch_size=2"], config_name="check")
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert "predict=absent (ly_thuong_kiet" in dm.describe() and "train=2" in dm.describe()
    with pytest.raises(DataError, match="unknown street 'ly_thuong_kiet' in data.source.predict"):
        dm.setup("predict")
    cfg = compose_cfg(["data=vietnam", f"data.root={root}", "data.source.val=[le_loi]"], config_name="check")
    with pytest.raises(DataError, match="unknown street 'le_loi' in data.source.val"):
        instantiate(cfg.data).setup("fit")


def test_camvid_default_root_does_not_depend_on_cwd(monkeypatch, tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from segvn.utils import CONF_DIR

    monkeypatch.delenv("SEGVN_SHARED", raising=False)
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="check", overrides=["data=camvid"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.cwd = str(tmp_path)
    assert Path(cfg.paths.shared_dir).resolve() == (REPO_ROOT / ".." / "shared").resolve()
    assert Path(cfg.data.root).resolve() == (REPO_ROOT.parent / "shared" / "datasets" / "camvid").resolve()
    with pytest.raises(DataError, match=r"does not exist; set data.root=DIR.*SEGVN_SHARED"):
        CamVid(tmp_path / "nope", train=["train"]).samples("train")


# -- the unlabelled set (data.unlabelled) -------------------------------------------------------
@pytest.fixture
def unlabelled_pool(camvid_root, clean_camvid, video_path, tmp_path) -> dict[str, Path]:
    """A folder of 2 real frames, a truncated one and a renamed copy of a val frame; a real clip; a cut video."""
    from tests.conftest import cut_clip

    pool = tmp_path / "pool"
    pool.mkdir()
    frames = sorted((camvid_root / "train").glob("0006R0_*.png"))[:3]
    for frame in frames[:2]:
        shutil.copy(frame, pool / frame.name)
    (pool / "truncated.png").write_bytes(frames[2].read_bytes()[:3000])
    shutil.copy(sorted((clean_camvid / "val").glob("*.png"))[0], pool / "renamed_val.png")
    clip = cut_clip(video_path, tmp_path / "clip.mp4", seconds=2)
    (tmp_path / "broken.mp4").write_bytes(video_path.read_bytes()[:2000])
    return {"pool": pool, "clip": clip, "broken": tmp_path / "broken.mp4"}


@pytest.mark.parametrize("level", ["cheap", "full"])
def test_check_reports_the_unlabelled_set(clean_camvid, unlabelled_pool, tmp_path, level):
    from segvn.data.findings import CheckReport
    from segvn.data.unlabelled import check_unlabelled

    pool, clip, broken = unlabelled_pool["pool"], unlabelled_pool["clip"], unlabelled_pool["broken"]

    def checked(**extra) -> CheckReport:
        settings = {"folders": [str(pool)], "videos": [str(clip), str(broken)], **extra}
        source = CamVid(clean_camvid, train=["train"], val=["val"])
        dm = SegDataModule(source, cache_dir=tmp_path / "cache", unlabelled=settings)
        report = CheckReport(str(clean_camvid), "CamVid", level)
        check_unlabelled(dm, report, level)
        return report

    report = checked()
    assert report.counts["unlabelled"] == {
        f"folder {pool}": {"frames": 4, "labels": 0},
        "video clip.mp4": {"frames": 2, "labels": 0},  # 2 s at one frame a second
    }
    by_kind = {f.kind: [] for f in report.findings}
    for f in report.findings:
        by_kind[f.kind].append(f)
    assert sorted(f.path for f in by_kind["unreadable"]) == [str(broken), str(pool / "truncated.png")]
    assert [f.path for f in by_kind["unlabelled_leak"]] == [str(pool / "renamed_val.png")]
    assert by_kind["unlabelled_leak"][0].severity == "error" and not report.ok
    assert all(f.split == "unlabelled" for f in report.findings)
    assert not (tmp_path / "cache").exists(), "the check writes nothing"
    asked = checked(transductive=True, max_frames=3)
    assert [f.severity for f in asked.findings if f.kind == "unlabelled_leak"] == ["warning"]
    assert asked.counts["unlabelled"]["all (max_frames=3)"]["frames"] == 3


@pytest.mark.slow
def test_check_cli_shows_the_unlabelled_set(clean_camvid, unlabelled_pool, tmp_path):
    run = tmp_path / "run"
    pool, clip = unlabelled_pool["pool"], unlabelled_pool["clip"]
    proc = run_segvn(
        "check", "data=camvid", f"data.root={clean_camvid}", f"data.unlabelled.folders=[{pool}]",
        f"data.unlabelled.videos=[{clip}]", "width=250", f"hydra.run.dir={run}", root=tmp_path,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in output, output[-3000:]
    lines = output.splitlines()
    assert re.search(r"unlabelled\s*│\s*video clip\.mp4\s*│\s*2\s*│\s*0\s*│", output), output
    assert any("unlabelled_leak" in ln and "renamed_val.png" in ln for ln in lines), output
    assert any("unreadable" in ln and "truncated.png" in ln for ln in lines), output
    doc = json.loads((run / "check.json").read_text())
    assert doc["counts"]["unlabelled"][f"folder {pool}"] == {"frames": 4, "labels": 0}
