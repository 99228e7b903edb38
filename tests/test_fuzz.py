"""Property and fuzz tests of the data layer: decoding, transforms, manifest, image and video readers.

Every mangled input must end in a correct result or a :class:`~segvn.errors.SegvnError` subclass,
never another exception, a hang or a crash of the interpreter (the video fuzz runs in a subprocess).
"""

from __future__ import annotations

import io
import json
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from segvn.data.classes import IGNORE_INDEX, PALETTE, camvid_known, camvid_lut, index_to_rgb, rgb_to_index
from segvn.data.extract import MANIFEST_COLUMNS, read_manifest
from segvn.data.io import read_image, read_label
from segvn.data.transforms import build_transforms, to_image
from segvn.errors import DataError, ExtractError, SegvnError
from tests.conftest import REPO_ROOT, run_python

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NUM = len(PALETTE)
index_maps = arrays(
    np.uint8,
    st.tuples(st.integers(1, 12), st.integers(1, 12)),
    elements=st.sampled_from([*range(NUM), IGNORE_INDEX]),
)


def _png(arr: np.ndarray, folder: Path, name: str = "x.png") -> Path:
    path = folder / name
    Image.fromarray(arr).save(path)
    return path


# -- palette and label decoding ----------------------------------------------------------------
@FAST
@given(index_maps)
def test_index_rgb_index_round_trip(index):
    decoded, unknown = rgb_to_index(index_to_rgb(index))
    assert np.array_equal(decoded, index) and unknown == pytest.approx(float((index == IGNORE_INDEX).mean()))


@FAST
@given(index_maps)
def test_colour_mask_file_round_trip(index):
    with tempfile.TemporaryDirectory() as tmp:
        read = read_label(_png(index_to_rgb(index), Path(tmp)), "rgb")
    assert np.array_equal(read.labels, index)
    assert read.unknown_share == 0 and read.ignored_share == pytest.approx(
        float((index == IGNORE_INDEX).mean())
    )


@FAST
@given(arrays(np.uint8, st.tuples(st.integers(1, 10), st.integers(1, 10), st.just(3))))
def test_any_colour_mask_decodes_to_classes_or_ignore(rgb):
    with tempfile.TemporaryDirectory() as tmp:
        read = read_label(_png(rgb, Path(tmp)), "rgb")
    known = (rgb[..., None, :] == PALETTE[None, None]).all(-1)
    hit = known.any(-1)
    assert np.array_equal(read.labels[hit], known.argmax(-1)[hit])
    assert (read.labels[~hit] == IGNORE_INDEX).all()
    black = (rgb == 0).all(-1)
    assert read.unknown_share == pytest.approx(float((~hit & ~black).mean()))
    assert read.unknown_share + read.ignored_share == pytest.approx(float((~hit).mean()))


@FAST
@given(
    arrays(np.uint16, st.tuples(st.integers(1, 10), st.integers(1, 10)), elements=st.integers(0, 65535)),
    st.booleans(),
)
def test_camvid_index_maps_never_wrap(values, sixteen_bit):
    if not sixteen_bit:
        values = (values % 256).astype(np.uint8)
    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "l.png"
        cv2.imwrite(str(path), values)
        read = read_label(path, "index", camvid_lut(), camvid_known())
    v = values.astype(np.int64)
    valid = v < 12
    assert np.array_equal(read.labels[valid], camvid_lut()[v[valid]])
    assert (read.labels[~valid] == IGNORE_INDEX).all()
    assert read.out_of_range_share == pytest.approx(float((~valid).mean()))
    assert read.ignored_share == pytest.approx(float(np.isin(v, [2, 6, 10, 11]).mean()))


# -- transforms keep image and label aligned -----------------------------------------------------
@FAST
@given(
    st.integers(0, 2**31 - 1),
    st.tuples(st.integers(2, 6), st.integers(2, 6)),
    st.sampled_from([0.0, 1.0]),
    st.integers(0, 12),
)
def test_train_transforms_keep_label_painted_from_image(seed, blocks, hflip, translate):
    rng = np.random.default_rng(seed)
    coarse = rng.choice([*range(NUM), IGNORE_INDEX], size=blocks).astype(np.uint8)
    label = np.kron(coarse, np.ones((8, 8), np.uint8))
    image = index_to_rgb(label)  # the image is the label's colours; ignore is black
    out = build_transforms(True, None, hflip=hflip, translate_px=translate)(image=image, mask=label)
    img, mask = to_image(out["image"]), out["mask"].numpy()
    assert mask.shape == img.shape[:2] == label.shape
    assert set(np.unique(mask)) <= {*range(NUM), IGNORE_INDEX}
    expected = index_to_rgb(mask)  # padding is black/ignore, flipped and shifted pixels keep their pair
    assert np.abs(img.astype(int) - expected.astype(int)).max() <= 1
    if translate == 0:  # nothing padded: ignore pixels stay exactly as many
        assert (mask == IGNORE_INDEX).sum() == (label == IGNORE_INDEX).sum()


@FAST
@given(st.integers(0, 2**31 - 1), st.sampled_from([(16, 24), (32, 24), (40, 56)]))
def test_train_crop_is_a_window_of_the_frame_with_its_label(seed, crop):
    rng = np.random.default_rng(seed)
    coarse = rng.choice([*range(NUM), IGNORE_INDEX], size=(4, 5)).astype(np.uint8)
    label = np.kron(coarse, np.ones((8, 8), np.uint8))  # 32 x 40: a 40 x 56 crop needs padding
    out = build_transforms(True, None, hflip=0.0, translate_px=0, crop=crop)(
        image=index_to_rgb(label), mask=label
    )
    img, mask = to_image(out["image"]), out["mask"].numpy()
    assert mask.shape == img.shape[:2] == tuple(crop)
    assert np.abs(img.astype(int) - index_to_rgb(mask).astype(int)).max() <= 1  # image and label aligned
    h, w = min(crop[0], 32), min(crop[1], 40)
    oy, ox = (crop[0] - h) // 2, (crop[1] - w) // 2  # where the frame sits in a padded crop
    window = mask[oy : oy + h, ox : ox + w]
    assert any((label[y : y + h, x : x + w] == window).all() for y in range(33 - h) for x in range(41 - w))
    assert (mask == IGNORE_INDEX).sum() - (window == IGNORE_INDEX).sum() == crop[0] * crop[1] - h * w


@FAST
@given(st.integers(0, 2**31 - 1), st.sampled_from([(16, 24), (48, 40), (64, 64)]))
def test_resize_keeps_label_consistent_away_from_edges(seed, size):
    rng = np.random.default_rng(seed)
    coarse = rng.choice([*range(NUM), IGNORE_INDEX], size=(3, 4)).astype(np.uint8)
    label = np.kron(coarse, np.ones((10, 10), np.uint8))
    out = build_transforms(False, size)(image=index_to_rgb(label), mask=label)
    img, mask = to_image(out["image"]), out["mask"].numpy()
    assert mask.shape == tuple(size) and set(np.unique(mask)) <= {*range(NUM), IGNORE_INDEX}
    agree = (np.abs(img.astype(int) - index_to_rgb(mask).astype(int)).max(-1) <= 1).mean()
    assert agree >= 0.7  # only pixels at block edges may blend


# -- the manifest reader --------------------------------------------------------------------------
@pytest.mark.slow
@FAST
@given(
    st.one_of(
        st.text(max_size=300),
        st.lists(
            st.lists(st.text(max_size=8), min_size=0, max_size=8).map(lambda r: ",".join(r)), max_size=6
        ).map(lambda rows: "\n".join([",".join(MANIFEST_COLUMNS), *rows])),
        st.binary(max_size=200).map(lambda b: ",".join(MANIFEST_COLUMNS).encode() + b"\n" + b),
    )
)
def test_manifest_reader_returns_rows_or_a_clear_error(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.csv"
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        try:
            rows = read_manifest(path)
        except ExtractError as err:
            assert str(path) in str(err)
            return
    for (video, index), row in rows.items():
        assert isinstance(video, str) and isinstance(index, int) and set(row) == set(MANIFEST_COLUMNS)


# -- the image reader on mangled files ------------------------------------------------------------
@pytest.fixture(scope="module")
def real_png(camvid_root) -> bytes:
    return sorted((camvid_root / "train").glob("*.png"))[0].read_bytes()


@pytest.mark.timeout(60)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["truncate", "flip", "random", "zero", "jpeg_as_png", "header"]),
    st.integers(0, 2**31 - 1),
)
def test_image_reader_on_mangled_files(real_png, how, seed):
    rng = np.random.default_rng(seed)
    data = bytearray(real_png)
    if how == "truncate":
        data = data[: int(rng.integers(0, len(data)))]
    elif how == "flip":
        for pos in rng.integers(8, len(data), size=int(rng.integers(1, 20))):
            data[pos] ^= int(rng.integers(1, 256))
    elif how == "random":
        data = bytearray(rng.integers(0, 256, size=int(rng.integers(0, 5000)), dtype=np.uint8).tobytes())
    elif how == "zero":
        data = bytearray()
    elif how == "jpeg_as_png":
        buf = io.BytesIO()
        Image.open(io.BytesIO(real_png)).save(buf, format="JPEG")
        data = bytearray(buf.getvalue())
    else:
        data = data[:33]  # the PNG signature and IHDR only
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frame.png"
        path.write_bytes(bytes(data))
        try:
            frame = read_image(path)
        except DataError as err:
            assert str(path) in str(err)
            return
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    if how in ("jpeg_as_png",):
        assert frame.shape == (360, 480, 3)


# -- the video reader on mangled files, in a subprocess ------------------------------------------
VIDEO_WORKER = textwrap.dedent(
    """
    import json, sys
    from segvn.data.video import open_video
    from segvn.errors import SegvnError

    for path, backend in json.loads(sys.argv[1]):
        print("CASE", path, backend, flush=True)
        try:
            reader = open_video(path, backend=backend)
            n = sum(1 for _ in reader)
            print("RESULT", json.dumps({"path": path, "backend": backend, "ok": n}), flush=True)
        except SegvnError as err:
            print("RESULT", json.dumps({"path": path, "backend": backend, "error": type(err).__name__,
                                        "message": str(err)}), flush=True)
    """
)


def _mangled_videos(video: Path, folder: Path) -> list[Path]:
    data = video.read_bytes()
    rng = np.random.default_rng(0)
    cases = {
        "truncated_10.mp4": data[: len(data) // 10],
        "truncated_60.mp4": data[: len(data) * 6 // 10],
        "truncated_header.mp4": data[:2000],
        "zero.mp4": b"",
        "random.mp4": rng.integers(0, 256, size=50_000, dtype=np.uint8).tobytes(),
        "wrong_extension.png": data[: len(data) // 5],
        "text_as_video.mp4": (REPO_ROOT / "conf" / "check.yaml").read_bytes(),
    }
    flipped = bytearray(data[: len(data) // 5])
    for pos in rng.integers(5000, len(flipped), size=200):
        flipped[pos] ^= 0xFF
    cases["bit_flips.mp4"] = bytes(flipped)
    whole = bytearray(data)  # damage inside a complete file: concealed by FFmpeg or a clear error
    for pos in rng.integers(50_000, len(whole) - 50_000, size=30):
        whole[pos] ^= 0xFF
    cases["bit_flips_whole.mp4"] = bytes(whole)
    paths = []
    for name, content in cases.items():
        (folder / name).write_bytes(content)
        paths.append(folder / name)
    return paths


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_video_reader_on_mangled_files(video_path, tmp_path):
    paths = _mangled_videos(video_path, tmp_path)
    cases = [(str(p), backend) for p in paths for backend in ("pyav", "decord")]
    proc = run_python(
        "-c",
        VIDEO_WORKER,
        json.dumps(cases),
        timeout=110,
        env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        clean_env=True,
    )
    last = [line for line in proc.stdout.splitlines() if line.startswith("CASE")][-1:]
    assert proc.returncode == 0, f"reader crashed (status {proc.returncode}) on {last}: {proc.stderr[-2000:]}"
    results = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert len(results) == len(cases), proc.stderr[-2000:]
    for r in results:
        name = Path(r["path"]).name
        if name in ("zero.mp4", "random.mp4", "text_as_video.mp4", "truncated_header.mp4"):
            assert "error" in r, r  # not a video at all
        if "error" in r:
            assert r["error"] in ("VideoDecodeError", "VideoError", "VideoNotFoundError")
            assert name in r["message"]
        else:
            assert 0 < r["ok"] <= 221
    # a truncated copy either errors or yields fewer frames than the whole video, never more
    assert all(r.get("ok", 0) < 221 for r in results if "truncated" in r["path"])


def test_segvn_errors_share_one_root():
    assert issubclass(DataError, SegvnError) and issubclass(ExtractError, SegvnError)
