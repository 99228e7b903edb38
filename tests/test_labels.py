"""Label import/export (``segvn.labels``): each tool's export built from real CamVid labels, imported and
compared pixel by pixel with the CamVid labels mapped independently through ``camvid_lut``."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segvn.data.classes import CLASS_NAMES, IGNORE_INDEX, PALETTE, camvid_lut, rgb_to_index
from segvn.data.labelformats import export_labels, import_labels
from segvn.errors import ConfigError, DataError, SegvnError
from tests.conftest import run_segvn

pytestmark = pytest.mark.shared

CAMVID_NAMES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)  # fmt: skip
CAMVID_COLOURS = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip
CAMVID_TO_CITYSCAPES = (23, 11, 17, 7, 8, 21, 20, 13, 26, 24, 25)  # sky ... bicyclist -> rider


@pytest.fixture(scope="module")
def camvid(camvid_root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Three real frames and their CamVid label values, downscaled 4x (nearest) to 90x120."""
    out = {}
    names = sorted(p.stem for p in (camvid_root / "trainannot").glob("*.png"))
    for prefix in ("0001TP", "0006R0", "0016E5"):
        stem = next(n for n in names if n.startswith(prefix))
        image = Image.open(camvid_root / "train" / f"{stem}.png").convert("RGB").resize((120, 90))
        annot = Image.open(camvid_root / "trainannot" / f"{stem}.png").resize((120, 90), Image.NEAREST)
        out[stem] = (np.asarray(image), np.asarray(annot))
    return out


def make_street(root: Path, camvid, name: str = "street") -> Path:
    street = root / name
    (street / "frames").mkdir(parents=True)
    for stem, (image, _) in camvid.items():
        Image.fromarray(image).save(street / "frames" / f"{stem}.png")
    return street


def expected(camvid) -> dict[str, np.ndarray]:
    return {stem: camvid_lut()[annot] for stem, (_, annot) in camvid.items()}


def read_labels(street: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted((street / "labels").glob("*.png")):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        index, unknown = rgb_to_index(rgb)
        assert unknown == pytest.approx(float((index == IGNORE_INDEX).mean()))  # only black is off-palette
        assert set(map(tuple, rgb.reshape(-1, 3))) <= {*map(tuple, PALETTE), (0, 0, 0)}
        out[path.stem] = index
    return out


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for stem in want:
        assert got[stem].shape == want[stem].shape, stem
        assert np.array_equal(got[stem], want[stem]), (
            f"{stem}: {(got[stem] != want[stem]).sum()} pixels differ"
        )


# -- builders: each tool's export from the CamVid label values -------------------------------------


def cvat_export(folder: Path, camvid, zip_path: Path | None = None) -> Path:
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    lines += [f"{n}:{','.join(map(str, c))}::" for n, c in zip(CAMVID_NAMES, CAMVID_COLOURS, strict=True)]
    (folder / "SegmentationClass").mkdir(parents=True)
    (folder / "labelmap.txt").write_text("\n".join(lines) + "\n")
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(CAMVID_COLOURS)] = CAMVID_COLOURS
    for stem, (_, annot) in camvid.items():
        Image.fromarray(lut[annot]).save(folder / "SegmentationClass" / f"{stem}.png")
    if zip_path is None:
        return folder
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, p.relative_to(folder).as_posix())
    return zip_path


def test_cvat_zip_matches_camvid(camvid, tmp_path):
    street = make_street(tmp_path / "data", camvid)
    src = cvat_export(tmp_path / "cvat", camvid, tmp_path / "cvat.zip")
    report = import_labels("cvat", src, street, report_path=tmp_path / "run" / "report.json")
    assert_same(read_labels(street), expected(camvid))
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert sorted(saved["imported"]) == sorted(camvid) and saved["summary"] == report.line()
    assert (
        set(report.unknown_labels) <= {"Pole", "SignSymbol", "Bicyclist"} and "Pole" in report.unknown_labels
    )
    assert report.unknown_labels["Pole"] == sum(int((a == 2).sum()) for _, a in camvid.values())
    assert not report.skipped and not report.check_problems


def test_labelstudio_layers_with_task_json(camvid, tmp_path):
    street = make_street(tmp_path / "data", camvid)
    src = tmp_path / "ls"
    src.mkdir()
    tasks = []
    for task_id, (stem, (_, annot)) in enumerate(camvid.items(), start=7):
        tasks.append(
            {"id": task_id, "data": {"image": f"/data/upload/3/1a2b3c4d-{stem}.png"}, "annotations": []}
        )
        for value, name in enumerate(CAMVID_NAMES):
            layer = annot == value
            if layer.any():
                path = src / f"task-{task_id}-annotation-{task_id + 100}-by-1-tag-{name}-0.png"
                Image.fromarray(layer.astype(np.uint8) * 255).save(path)
    (src / "project.json").write_text(json.dumps(tasks))
    report = import_labels("labelstudio", src, street)
    assert_same(read_labels(street), expected(camvid))
    assert not report.overlaps and not report.skipped


def test_labelstudio_later_layer_wins_and_overlap_is_reported(camvid, tmp_path):
    stem, (_, annot) = next(iter(camvid.items()))
    street = make_street(tmp_path / "data", {stem: camvid[stem]})
    src = tmp_path / "ls" / stem  # a folder per frame, no task list
    src.mkdir(parents=True)
    road = annot == 3
    everything = np.ones_like(road)
    Image.fromarray(road.astype(np.uint8) * 255).save(src / "task-1-annotation-2-by-1-tag-Road-0.png")
    Image.fromarray(everything.astype(np.uint8) * 255).save(src / "task-1-annotation-1-by-1-tag-Sky-0.png")
    report = import_labels("labelstudio", tmp_path / "ls", street)
    want = np.where(road, CLASS_NAMES.index("road"), CLASS_NAMES.index("sky")).astype(np.uint8)
    assert_same(read_labels(street), {stem: want})
    assert report.overlaps == {stem: int(road.sum())}


@pytest.mark.parametrize("rider_as_person", [False, True])
def test_cityscapes_label_ids(camvid, tmp_path, rider_as_person):
    street = make_street(tmp_path / "data", camvid)
    src = tmp_path / "gtFine" / "train" / "city"
    src.mkdir(parents=True)
    lut = np.zeros(256, dtype=np.uint8)
    lut[: len(CAMVID_TO_CITYSCAPES)] = CAMVID_TO_CITYSCAPES
    for stem, (_, annot) in camvid.items():
        Image.fromarray(lut[annot]).save(src / f"{stem}_gtFine_labelIds.png")
    mapping = {"rider": "person"} if rider_as_person else None
    report = import_labels("cityscapes", tmp_path / "gtFine", street, mapping=mapping)
    want = expected(camvid)
    if rider_as_person:
        want = {
            s: np.where(camvid[s][1] == 10, CLASS_NAMES.index("person"), w).astype(np.uint8)
            for s, w in want.items()
        }
    assert_same(read_labels(street), want)
    assert ("rider" in report.unknown_labels) != rider_as_person


def test_matlab_index_pngs_with_class_list(camvid, tmp_path):
    street = make_street(tmp_path / "data", camvid)
    src = tmp_path / "PixelLabelData"
    src.mkdir()
    lut = np.zeros(256, dtype=np.uint8)
    lut[:11] = np.arange(1, 12)  # CamVid value v -> MATLAB value v+1; Unlabelled (11) -> 0 undefined
    for stem, (_, annot) in camvid.items():
        Image.fromarray(lut[annot]).save(src / f"{stem}.png")
    import_labels("matlab", src, street, classes=list(CAMVID_NAMES))
    assert_same(read_labels(street), expected(camvid))


@pytest.mark.parametrize("fmt", ["cvat", "cityscapes", "matlab", "labelstudio"])
def test_export_then_import_gives_identical_labels(camvid, tmp_path, fmt):
    street = make_street(tmp_path / "data", camvid)
    import_labels("cvat", cvat_export(tmp_path / "cvat", camvid), street)
    original = read_labels(street)
    out = tmp_path / ("export.zip" if fmt == "cvat" else "export")
    export_labels(fmt, street, out)
    again = make_street(tmp_path / "data2", camvid)
    import_labels(fmt, out, again)
    assert_same(read_labels(again), original)
    for stem in original:  # the files themselves, too
        a = np.asarray(Image.open(street / "labels" / f"{stem}.png").convert("RGB"))
        b = np.asarray(Image.open(again / "labels" / f"{stem}.png").convert("RGB"))
        assert np.array_equal(a, b)


def test_orphan_size_mismatch_and_corrupt_masks_are_skipped(camvid, tmp_path):
    street = make_street(tmp_path / "data", camvid)
    src = cvat_export(tmp_path / "cvat", camvid)
    masks = src / "SegmentationClass"
    Image.new("RGB", (120, 90)).save(masks / "no_such_frame.png")
    stems = list(camvid)
    Image.open(masks / f"{stems[1]}.png").resize((60, 45), Image.NEAREST).save(masks / f"{stems[1]}.png")
    data = (masks / f"{stems[2]}.png").read_bytes()
    (masks / f"{stems[2]}.png").write_bytes(data[: len(data) // 2])
    report = import_labels("cvat", src, street)
    assert report.imported == [stems[0]]
    assert_same(read_labels(street), {stems[0]: expected(camvid)[stems[0]]})
    reasons = {Path(s["file"]).stem: s["reason"] for s in report.skipped}
    assert set(reasons) == {"no_such_frame", stems[1], stems[2]}
    assert "no extracted frame" in reasons["no_such_frame"]
    assert "60x45" in reasons[stems[1]] and "120x90" in reasons[stems[1]]
    assert "cannot read" in reasons[stems[2]]


def test_existing_labels_are_kept_without_overwrite(camvid, tmp_path):
    street = make_street(tmp_path / "data", camvid)
    src = cvat_export(tmp_path / "cvat", camvid)
    import_labels("cvat", src, street)
    stem = next(iter(camvid))
    blank = np.zeros((90, 120, 3), dtype=np.uint8)
    Image.fromarray(blank).save(street / "labels" / f"{stem}.png")
    with pytest.raises(DataError, match="overwrite=true"):
        import_labels("cvat", src, street, report_path=tmp_path / "r.json")
    assert np.array_equal(np.asarray(Image.open(street / "labels" / f"{stem}.png")), blank)
    assert len(json.loads((tmp_path / "r.json").read_text())["skipped"]) == 3
    import_labels("cvat", src, street, overwrite=True)
    assert_same(read_labels(street), expected(camvid))


def test_mapping_sends_unknown_names_to_a_class_and_rejects_bad_targets(camvid, tmp_path):
    street = make_street(tmp_path / "data", camvid)
    src = cvat_export(tmp_path / "cvat", camvid)
    report = import_labels("cvat", src, street, mapping={"POLE": "fence", "Tree": "ignore"})
    assert "Pole" not in report.unknown_labels
    for stem, (_, annot) in camvid.items():
        got = read_labels(street)[stem]
        assert (got[annot == 2] == CLASS_NAMES.index("fence")).all()
        assert (got[annot == 5] == IGNORE_INDEX).all()
    with pytest.raises(SegvnError, match="not one of our classes"):
        import_labels("cvat", src, street, mapping={"pole": "lamp"}, overwrite=True)
    with pytest.raises(ConfigError, match="format='png'"):
        import_labels("png", src, street)


@pytest.mark.slow
def test_cli_import_and_bad_setting(camvid, tmp_path):
    root = tmp_path / "data"
    make_street(root, camvid, "hcmc")
    src = cvat_export(tmp_path / "cvat", camvid, tmp_path / "cvat.zip")
    run_dir = tmp_path / "run"
    proc = run_segvn(
        "labels",
        "import",
        "format=cvat",
        f"src={src}",
        "street=hcmc",
        f"out={root}",
        "mapping={Pole: fence}",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    fence = CLASS_NAMES.index("fence")
    want = {s: np.where(camvid[s][1] == 2, fence, w).astype(np.uint8) for s, w in expected(camvid).items()}
    assert_same(read_labels(root / "hcmc"), want)
    report = json.loads((run_dir / "labels_import.json").read_text())
    assert len(report["imported"]) == 3
    assert "imported 3 label(s)" in (proc.stdout + proc.stderr).strip().splitlines()[-1]

    bad = run_segvn(
        "labels",
        "import",
        "format=voc",
        f"src={src}",
        "street=hcmc",
        f"out={root}",
        f"hydra.run.dir={run_dir}",
        HYDRA_FULL_ERROR="0",  # a user's environment: the schema refuses voc as Hydra composes the config
    )
    out = (bad.stdout + bad.stderr).strip().splitlines()
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    errors = [line for line in out if "format='voc'" in line]
    assert len(errors) == 1 and "cvat" in errors[0]


@pytest.mark.slow
def test_prelabel_cli_writes_model_predictions_for_unlabelled_frames(camvid, camvid_checkpoint, tmp_path):
    from segvn.inference.predictor import Predictor
    from segvn.models.checkpoint import load_checkpoint, model_from_checkpoint

    street = make_street(tmp_path / "data", camvid)
    stems = list(camvid)
    import_labels("cvat", cvat_export(tmp_path / "cvat", {stems[0]: camvid[stems[0]]}), street)
    out = tmp_path / "pre.zip"
    proc = run_segvn(
        "labels",
        "prelabel",
        f"ckpt_path={camvid_checkpoint}",
        f"street={street}",
        "format=cvat",
        f"out={out}",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pre-labelled 2 frame(s)" in (proc.stdout + proc.stderr).strip().splitlines()[-1]

    module = model_from_checkpoint(load_checkpoint(camvid_checkpoint))
    predictor = Predictor(module, "cpu", (64, 96), None, len(CLASS_NAMES))
    want = dict(zip(stems[1:], predictor([camvid[s][0] for s in stems[1:]]).labels, strict=True))
    again = make_street(tmp_path / "data2", camvid)
    report = import_labels("cvat", out, again)
    assert sorted(report.imported) == sorted(stems[1:])
    assert_same(read_labels(again), want)

    # the uncertainty table: every pre-labelled frame with its margin; the label-first ranks follow the margin
    rows = list(csv.DictReader((tmp_path / "uncertainty.csv").read_text().splitlines()))
    assert [r["frame"] for r in rows] == stems[1:]
    margins = {r["frame"]: float(r["margin"]) for r in rows}
    assert all(0.0 <= m <= 1.0 for m in margins.values())
    ranked = sorted((int(r["label_first_rank"]), r["frame"]) for r in rows if r["label_first_rank"])
    assert ranked and margins[ranked[0][1]] == min(margins.values())


def test_label_first_picks_uncertain_frames_spread_over_the_video():
    from segvn.inference.prelabel import label_first

    stems = [f"f{i:03d}" for i in range(20)]
    margins = {s: 0.9 for s in stems} | {"f005": 0.1, "f006": 0.11, "f007": 0.12, "f015": 0.3}
    assert label_first(stems, margins, 2) == ["f005", "f015"]  # not f006: too close to f005
    assert label_first(stems, margins, 1) == ["f005"]
