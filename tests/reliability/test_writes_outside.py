"""Every file segvn writes lands inside the folder the user named.

Each probe plants a symbolic link at a path the command writes, pointing into a sibling ``outside/``
folder, and guards ``outside/``: the command must replace the link with a regular file and leave the file
it pointed to byte for byte as it was. Label exports (folders or zips made by someone else) must not
make an import read a file outside them, and a zip must not unpack past the member and size caps.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segvn.data.classes import CLASS_NAMES, PALETTE

from .conftest import run_segvn

pytestmark = [pytest.mark.reliability]

SIZE = (12, 16)
"""(H, W) of the frames and masks of the label probes: tiny, the import only matches sizes."""

STEMS = ("f_000000", "f_000001")


def outside(tmp_path: Path, *names: str) -> Path:
    """The ``outside/`` folder with one file per name, each with its own bytes (the link targets)."""
    folder = tmp_path / "outside"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(f"outside the output folder: {name}\n".encode())
    return folder


def link(path: Path, target: Path) -> Path:
    """A symbolic link at ``path`` to ``target`` (the folder created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


def assert_replaced(*paths: Path) -> None:
    """Each path is now a regular file written by the command, not the planted link."""
    for path in paths:
        assert not path.is_symlink(), f"{path} is still a link"
        assert path.is_file(), f"{path} was not written"
        assert b"outside the output folder" not in path.read_bytes()[:64], path


def street(root: Path, name: str = "street") -> Path:
    """A street with tiny extracted frames ``frames/<stem>.png``."""
    folder = root / name / "frames"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem in STEMS:
        Image.fromarray(rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8)).save(folder / f"{stem}.png")
    return root / name


def mask(value: int = 0) -> np.ndarray:
    """Class indices: the left half ``value``, the right half sky."""
    index = np.full(SIZE, CLASS_NAMES.index("sky"), dtype=np.uint8)
    index[:, : SIZE[1] // 2] = value
    return index


def cvat_export(folder: Path, stems=STEMS) -> Path:
    """A CVAT 'Segmentation mask 1.1' export in our palette."""
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    lines += [f"{n}:{','.join(str(int(c)) for c in PALETTE[i])}::" for i, n in enumerate(CLASS_NAMES)]
    (folder / "SegmentationClass").mkdir(parents=True)
    (folder / "labelmap.txt").write_text("\n".join(lines) + "\n")
    for stem in stems:
        Image.fromarray(PALETTE[mask()]).save(folder / "SegmentationClass" / f"{stem}.png")
    return folder


# -- writes through a link ----------------------------------------------------------------------------


@pytest.mark.slow
def test_labels_import_overwrite_replaces_a_linked_label(probe, tmp_path: Path) -> None:
    """``labels import overwrite=true`` over ``labels/<stem>.png`` linked outside: the link is replaced."""
    out = outside(tmp_path, "victim.png")
    data = tmp_path / "data"
    labels = street(data) / "labels"
    planted = link(labels / f"{STEMS[0]}.png", out / "victim.png")
    src = cvat_export(tmp_path / "cvat")
    probe.guard(out)
    proc = run_segvn(
        "labels", "import", "format=cvat", f"src={src}", "street=street", f"out={data}", "overwrite=true",
        f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    probe.expect_ok(proc)
    assert_replaced(planted, labels / f"{STEMS[1]}.png")
    assert np.array_equal(np.asarray(Image.open(planted).convert("RGB")), PALETTE[mask()])
    assert str(planted) in proc.stdout + proc.stderr, "the replaced link is named in the log"


@pytest.mark.parametrize("fmt", ["cvat", "cityscapes", "matlab", "labelstudio"])
def test_import_skips_a_mask_linked_out_of_the_export(probe, tmp_path: Path, fmt: str) -> None:
    """A mask of the export that links to a file elsewhere is reported and skipped, never read."""
    from segvn.data.labelformats import import_labels

    out = tmp_path / "outside"
    out.mkdir()
    secret = out / "secret.png"
    data = street(tmp_path / "data")
    src = tmp_path / "export"
    good, linked = STEMS
    if fmt == "cvat":
        cvat_export(src, stems=[good])
        Image.fromarray(PALETTE[mask()]).save(secret)
        planted = link(src / "SegmentationClass" / f"{linked}.png", secret)
    elif fmt == "cityscapes":
        src.mkdir()
        Image.fromarray(np.full(SIZE, 7, dtype=np.uint8)).save(src / f"{good}_gtFine_labelIds.png")
        Image.fromarray(np.full(SIZE, 7, dtype=np.uint8)).save(secret)
        planted = link(src / f"{linked}_gtFine_labelIds.png", secret)
    elif fmt == "matlab":
        src.mkdir()
        Image.fromarray(np.ones(SIZE, dtype=np.uint8)).save(src / f"{good}.png")
        Image.fromarray(np.ones(SIZE, dtype=np.uint8)).save(secret)
        planted = link(src / f"{linked}.png", secret)
        link(src / "classes.txt", out / "classes.txt").resolve().write_text("road\n")
    else:  # a folder per frame
        layer = np.zeros((*SIZE, 4), dtype=np.uint8)
        layer[..., 3] = 255
        (src / good).mkdir(parents=True)
        Image.fromarray(layer).save(src / good / "task-1-annotation-1-by-1-tag-road-0.png")
        Image.fromarray(layer).save(secret)
        planted = link(src / linked / "task-2-annotation-2-by-1-tag-road-0.png", secret)
    probe.guard(out)
    report_path = tmp_path / "run" / "labels_import.json"
    report = import_labels(fmt, src, data, report_path=report_path)
    probe.ran()
    assert report.imported == [good], "the link's frame must not be imported"
    assert not (data / "labels" / f"{linked}.png").exists()
    saved = json.loads(report_path.read_text())
    skipped = [s for s in saved["skipped"] if "outside the export" in s["reason"]]
    assert any(planted.name in s["file"] for s in skipped), saved["skipped"]
    if fmt == "matlab":  # the linked classes.txt is skipped too: our class list, not the one outside
        assert any(s["file"] == "classes.txt" for s in skipped)


def test_labels_export_replaces_linked_outputs(probe, tmp_path: Path) -> None:
    """``labels export`` (cvat zip, cityscapes, matlab, labelstudio) over outputs linked outside."""
    from segvn.data.labelformats import export_labels
    from segvn.data.labelformats.common import write_mask

    out = outside(tmp_path, "a", "b", "c", "d", "e")
    data = street(tmp_path / "data")
    for stem in STEMS:
        write_mask(data / "labels" / f"{stem}.png", mask(CLASS_NAMES.index("road")))
    dest = tmp_path / "exports"
    planted = {
        "cvat": link(dest / "labels.zip", out / "a"),
        "cityscapes": link(dest / "cs" / f"{STEMS[0]}_gtFine_labelIds.png", out / "b"),
        "matlab": link(dest / "ml" / "classes.txt", out / "c"),
        "labelstudio": link(dest / "ls" / "tasks.json", out / "d"),
    }
    cvat_tree = link(dest / "cvat" / "labelmap.txt", out / "e")
    probe.guard(out)
    targets = {"cvat": dest / "labels.zip", "cityscapes": dest / "cs", "matlab": dest / "ml"}
    targets["labelstudio"] = dest / "ls"
    for fmt, target in targets.items():
        export_labels(fmt, data, target)
    export_labels("cvat", data, dest / "cvat")
    probe.ran()
    assert_replaced(*planted.values(), cvat_tree)
    assert zipfile.is_zipfile(planted["cvat"])


def test_extract_replaces_linked_frames_and_manifest(probe, video_path: Path, tmp_path: Path) -> None:
    """``segvn.extract`` over a frame, the manifest and the status file linked outside."""
    from segvn.data.extract import MANIFEST_COLUMNS, extract_frames
    from segvn.data.video import FrameSelection

    out = outside(tmp_path, "frame.png", "manifest.csv", "status.json")
    # a manifest someone else's street started (a foreign one is refused before anything is written)
    (out / "manifest.csv").write_text(",".join(MANIFEST_COLUMNS) + "\n")
    st = tmp_path / "data" / "s"
    planted = [
        link(st / "frames" / f"{video_path.stem}_000000.png", out / "frame.png"),
        link(st / "manifest.csv", out / "manifest.csv"),
    ]
    # the status file is read first: a link to a file that is not a status file is rewritten, not trusted
    planted.append(link(st / "manifest.status.json", out / "status.json"))
    probe.guard(out)
    summary = extract_frames(video_path, "s", tmp_path / "data", FrameSelection(every_n=1000), backend="pyav")
    probe.ran()
    assert summary.frames_written == 1
    assert_replaced(*planted)


@pytest.mark.slow
def test_predict_replaces_linked_outputs(probe, camvid_checkpoint, video_path: Path, tmp_path: Path) -> None:
    """``segvn.predict`` on an image and a video, every output planted as a link outside."""
    names = ("csv", "overlay", "label", "video", "vlabel", "config", "log")
    out = outside(tmp_path, *names)
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.full((48, 64, 3), 90, dtype=np.uint8)).save(inputs / "img.png")
    (inputs / "clip.mp4").symlink_to(video_path)  # an input link is fine: only outputs must stay inside
    run = tmp_path / "run"
    planted = [
        link(run / "class_shares.csv", out / "csv"),
        link(run / "overlays" / "img.png", out / "overlay"),
        link(run / "labels" / "img.png", out / "label"),
        link(run / "clip_overlay.mp4", out / "video"),
        link(run / "labels" / "clip" / "clip_000000.png", out / "vlabel"),
        link(run / "config.yaml", out / "config"),
        link(run / "predict.log", out / "log"),
    ]
    probe.guard(out)
    proc = run_segvn(
        "predict", f"ckpt_path={camvid_checkpoint}", f"input={inputs}", "image_size=[64,96]", "max_frames=2",
        "save_labels=true", "runtime=torch", "device=cpu", "legend=false", f"hydra.run.dir={run}",
    )  # fmt: skip
    probe.expect_ok(proc)
    assert_replaced(*planted)
    assert json.loads((run / "summary.json").read_text())["frames"] == 3


@pytest.mark.slow
def test_export_replaces_a_linked_model_file(probe, camvid_checkpoint, tmp_path: Path) -> None:
    """``segvn.export out=FILE`` where FILE, its ``.partial`` and its ``.verify.json`` link outside."""
    out = outside(tmp_path, "model", "partial", "verify")
    dest = tmp_path / "export" / "model.onnx"
    planted = [link(dest, out / "model"), link(dest.with_name("model.onnx.verify.json"), out / "verify")]
    partial = link(dest.with_name("model.onnx.partial"), out / "partial")
    probe.guard(out)
    proc = run_segvn(
        "export", f"ckpt_path={camvid_checkpoint}", "format=onnx", f"out={dest}", "verify.frames=0",
        f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    probe.expect_ok(proc)
    assert_replaced(*planted)
    assert not partial.exists() and not partial.is_symlink(), "the .partial link was written through"


@pytest.mark.slow
def test_prelabel_replaces_linked_outputs(probe, camvid_checkpoint, tmp_path: Path) -> None:
    """``labels prelabel format=palette`` over a mask and ``uncertainty.csv`` linked outside."""
    out = outside(tmp_path, "mask.png", "uncertainty.csv")
    data = street(tmp_path / "data")
    dest = tmp_path / "pre"
    planted = [
        link(dest / f"{STEMS[0]}.png", out / "mask.png"),
        link(dest / "uncertainty.csv", out / "uncertainty.csv"),
    ]
    probe.guard(out)
    proc = run_segvn(
        "labels", "prelabel", f"ckpt_path={camvid_checkpoint}", f"street={data}", "format=palette",
        f"out={dest}", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    probe.expect_ok(proc)
    assert_replaced(*planted, dest / f"{STEMS[1]}.png")


# -- archives -----------------------------------------------------------------------------------------


def test_zip_over_the_size_cap_is_refused(probe, tmp_path: Path, monkeypatch) -> None:
    """A zip that unpacks to more than MAX_ARCHIVE_BYTES: one error naming the zip and the cap."""
    import segvn.utils.io as io
    from segvn.data.labelformats import import_labels

    data = street(tmp_path / "data")
    src = tmp_path / "cvat.zip"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("labelmap.txt", "background:0,0,0::\n")
        zf.writestr("SegmentationClass/zeros.bin", bytes(64 * 1024))  # compresses to almost nothing
    monkeypatch.setattr(io, "MAX_ARCHIVE_BYTES", 32 * 1024)
    probe.guard(data)
    with pytest.raises(Exception) as err:
        import_labels("cvat", src, data)
    probe.error(err.value, f"src={src}", "32768", "MAX_ARCHIVE_BYTES")


@pytest.mark.slow
def test_zip_over_the_member_cap_is_refused(probe, tmp_path: Path) -> None:
    """``labels import`` of a real zip with one member more than MAX_ARCHIVE_MEMBERS, by the command."""
    from segvn.utils.io import MAX_ARCHIVE_MEMBERS

    data = street(tmp_path / "data")
    src = tmp_path / "many.zip"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("labelmap.txt", "background:0,0,0::\n")
        for n in range(MAX_ARCHIVE_MEMBERS):
            zf.writestr(f"SegmentationClass/{n}.png", b"")
    probe.guard(data)
    proc = run_segvn(
        "labels", "import", "format=cvat", f"src={src}", "street=street", f"out={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    probe.expect_error(proc, f"src={src}", str(MAX_ARCHIVE_MEMBERS), "MAX_ARCHIVE_MEMBERS")
