"""Video reading (decord and PyAV), frame selection and the H.264 writer, on the real dash-cam video."""

from __future__ import annotations

import hashlib
import logging
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from segvn.data.video import BACKENDS, FrameSelection, open_video, probe_video
from segvn.data.video_writer import VideoWriter, available_h264_encoders, pick_h264_encoder
from segvn.data.yuv import I420Frame, image_size, is_bt601_i420
from segvn.errors import VideoDecodeError, VideoError, VideoNotFoundError

N_FRAMES, FPS, WIDTH, HEIGHT = 221, 25, 960, 540


def digest(rgb: np.ndarray) -> str:
    return hashlib.md5(rgb.tobytes()).hexdigest()


def truncate_copy(src: Path, dst: Path, fraction: float) -> Path:
    """The first ``fraction`` of the bytes of ``src`` (the moov box is at the front, so it still opens)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def cut_after_packets(src: Path, dst: Path, packets: int) -> Path:
    """Cut ``src`` right after its ``packets``-th video packet: the header still claims every frame."""
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        ends = [p.pos + p.size for p in container.demux(stream) if p.size]
    dst.write_bytes(src.read_bytes()[: ends[packets - 1]])
    return dst


def remux_vfr(src: Path, dst: Path, frames: int, seed: int = 0) -> np.ndarray:
    """Re-mux the first ``frames`` packets (no re-encoding) with irregular pts in ms; returns the times (s)."""
    durations = np.random.default_rng(seed).choice([20, 33, 40, 80, 120], size=frames)
    pts = np.concatenate([[0], np.cumsum(durations)[:-1]])
    with av.open(str(src)) as source, av.open(str(dst), "w") as target:
        stream = source.streams.video[0]
        out = target.add_stream_from_template(stream)
        out.time_base = Fraction(1, 1000)
        packets = (p for p in source.demux(stream) if p.size)
        for i, packet in zip(range(frames), packets, strict=False):
            packet.stream = out
            packet.time_base = Fraction(1, 1000)
            packet.pts = packet.dts = int(pts[i])
            packet.duration = int(durations[i])
            target.mux(packet)
    return pts / 1000.0


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def full_pass(video_path: Path) -> dict[str, dict]:
    """One streaming pass per backend: indices, timestamps, per-frame digests and a few frames kept."""
    keep = {0, 100, 220}
    passes = {}
    for name in BACKENDS:
        rows, kept = [], {}
        for index, ts, rgb in open_video(video_path, name):
            assert rgb.dtype == np.uint8 and rgb.shape == (HEIGHT, WIDTH, 3)
            rows.append((index, ts, digest(rgb)))
            if index in keep:
                kept[index] = rgb
        passes[name] = {"rows": rows, "frames": kept}
    return passes


def test_metadata(video_path: Path, backend: str) -> None:
    reader = open_video(video_path, backend)
    info = reader.info
    assert (info.width, info.height, info.fps, info.rate) == (WIDTH, HEIGHT, 25.0, Fraction(25))
    assert info.reported_frames == N_FRAMES == reader.frame_count
    assert info.duration == pytest.approx(N_FRAMES / FPS)
    assert info.codec == "h264" and reader.backend == backend


def test_full_pass_indices_and_timestamps(full_pass: dict, backend: str) -> None:
    rows = full_pass[backend]["rows"]
    assert [r[0] for r in rows] == list(range(N_FRAMES))
    np.testing.assert_allclose([r[1] for r in rows], np.arange(N_FRAMES) / FPS, atol=1e-9)
    assert len({r[2] for r in rows}) > N_FRAMES * 0.9  # real, changing frames


def test_backends_agree(full_pass: dict) -> None:
    a, b = full_pass["decord"], full_pass["pyav"]
    assert [r[:2] for r in a["rows"]] == [r[:2] for r in b["rows"]]
    for index, frame in a["frames"].items():
        diff = np.abs(frame.astype(np.int16) - b["frames"][index])
        assert diff.mean() < 0.5 and diff.max() <= 8, index


def test_streaming_memory(video_path: Path, backend: str) -> None:
    """A full pass holds a frame or two, not the video (221 frames x 1.5 MB = 340 MB)."""
    tracemalloc.start()
    count = sum(1 for _ in open_video(video_path, backend))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == N_FRAMES
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (FrameSelection(num_frames=5), [22, 66, 110, 154, 198]),
        (FrameSelection(num_frames=1), [110]),
        (FrameSelection(num_frames=1000), list(range(N_FRAMES))),
        (FrameSelection(every_n=50), [0, 50, 100, 150, 200]),
        (FrameSelection(every_n=1), list(range(N_FRAMES))),
        (FrameSelection(fps=2), [int(12.5 * k) for k in range(18)]),  # ties (x.5) go to the earlier frame
        (FrameSelection(fps=1), list(range(0, N_FRAMES, 25))),
        (FrameSelection(fps=60), list(range(N_FRAMES))),
    ],
)
def test_selection_indices(selection: FrameSelection, expected: list[int]) -> None:
    assert selection.indices(np.arange(N_FRAMES) / FPS) == expected


def test_selection_by_time_on_irregular_timestamps() -> None:
    ts = np.cumsum(np.random.default_rng(1).uniform(0.01, 0.2, 300))
    chosen = FrameSelection(fps=3).indices(ts)
    grid = ts[0] + np.arange(int((ts[-1] - ts[0]) * 3) + 1) / 3
    assert chosen == sorted({int(np.argmin(np.abs(ts - t))) for t in grid})


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"num_frames": 5, "fps": 2}, {"num_frames": 0}, {"every_n": 0}, {"every_n": 2.5}, {"fps": -1}],
)
def test_selection_needs_exactly_one_valid_mode(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="num_frames|every_n|fps"):
        FrameSelection(**kwargs)


@pytest.mark.parametrize(
    "selection", [FrameSelection(num_frames=5), FrameSelection(every_n=37), FrameSelection(fps=3)]
)
def test_select_matches_full_pass(video_path: Path, full_pass: dict, backend: str, selection) -> None:
    """Seeking to a subset gives exactly the frames a sequential pass gives at those indices."""
    rows = full_pass[backend]["rows"]
    reader = open_video(video_path, backend)
    got = [(i, ts, digest(rgb)) for i, ts, rgb in reader.select(selection)]
    expected = selection.indices(np.arange(N_FRAMES) / FPS)
    assert [g[0] for g in got] == expected
    assert got == [rows[i] for i in expected]


def test_frames_accepts_any_order_and_checks_range(video_path: Path, backend: str) -> None:
    reader = open_video(video_path, backend)
    assert [f.index for f in reader.frames([150, 3, 150, 40])] == [3, 40, 150]
    with pytest.raises(IndexError):
        list(reader.frames([N_FRAMES]))


def test_truncated_file_raises_after_valid_frames(
    video_path: Path, full_pass: dict, backend: str, tmp_path: Path
) -> None:
    broken = truncate_copy(video_path, tmp_path / "cut.mp4", 0.6)
    reader = open_video(broken, backend)
    got = []
    with pytest.raises(VideoDecodeError) as caught:
        for index, ts, rgb in reader:
            got.append((index, ts, digest(rgb)))
    err = caught.value
    assert 0 < len(got) < N_FRAMES
    assert got == full_pass[backend]["rows"][: len(got)]  # everything yielded is the real frame
    assert err.path == broken and err.frame_index == len(got)
    assert err.timestamp == pytest.approx(len(got) / FPS)
    message = str(err)
    assert str(broken) in message and f"frame {len(got)}" in message and "truncated or corrupt" in message
    assert isinstance(err, VideoError) and isinstance(err, RuntimeError)
    # a selection over the intact part also ends with the error, after its frames
    selected = []
    with pytest.raises(VideoDecodeError, match=f"frame {len(got)}"):
        selected.extend(f.index for f in open_video(broken, backend).select(FrameSelection(num_frames=4)))
    assert selected == FrameSelection(num_frames=4).indices(np.arange(len(got)) / FPS)


def test_over_reported_frame_count_stops_cleanly(
    video_path: Path, backend: str, tmp_path: Path, caplog
) -> None:
    short = cut_after_packets(video_path, tmp_path / "short.mp4", 100)
    reader = open_video(short, backend)
    assert reader.info.reported_frames == N_FRAMES
    with caplog.at_level(logging.WARNING, logger="segvn.data.video"):
        indices = [f.index for f in reader]
    assert indices == list(range(100)) and reader.frame_count == 100
    assert "reports 221 frames but the stream ends after 100" in caplog.text
    assert [f.index for f in reader.select(FrameSelection(every_n=30))] == [0, 30, 60, 90]


def test_garbage_and_missing_files(tmp_path: Path, backend: str) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError, match="garbage.mp4.*not a video"):
        list(open_video(garbage, backend))
    with pytest.raises(VideoNotFoundError, match="missing.mp4"):
        open_video(tmp_path / "missing.mp4", backend)
    with pytest.raises(VideoDecodeError, match="folder"):
        open_video(tmp_path, backend)
    with pytest.raises(ValueError, match="backend"):
        open_video(garbage, "opencv")


def test_variable_frame_rate_timestamps(video_path: Path, full_pass: dict, tmp_path: Path) -> None:
    vfr = tmp_path / "vfr.mp4"
    times = remux_vfr(video_path, vfr, 40)
    original = full_pass["pyav"]["rows"]
    results = {}
    for name in BACKENDS:
        reader = open_video(vfr, name)
        rows = [(i, ts, digest(rgb)) for i, ts, rgb in reader]
        assert [r[0] for r in rows] == list(range(40))
        np.testing.assert_allclose([r[1] for r in rows], times, atol=1e-9)  # true times, not index / fps
        assert [r[2] for r in rows] == [o[2] for o in original[:40]]  # same bitstream, same pixels
        wanted = FrameSelection(fps=4).indices(times)
        results[name] = [(f.index, f.timestamp) for f in reader.select(FrameSelection(fps=4))]
        assert [r[0] for r in results[name]] == wanted
    assert results["decord"] == results["pyav"]
    assert not np.allclose(np.diff(times), np.diff(times)[0])


def test_writer_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    ramp = np.linspace(0, 255, 320, dtype=np.uint8)
    frames = [np.dstack([np.roll(np.tile(ramp, (180, 1)), 8 * i, axis=1)] * 3) for i in range(12)]
    with VideoWriter(path, 30, 320, 180, crf=18) as writer:
        for rgb in frames:
            writer.write(rgb)
    assert writer.frames_written == 12 and writer.encoder in available_h264_encoders()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
    for name in BACKENDS:
        reader = open_video(path, name)
        assert (reader.info.width, reader.info.height, reader.info.fps) == (320, 180, 30.0)
        decoded = list(reader)
        assert len(decoded) == 12 == reader.frame_count
        np.testing.assert_allclose([f.timestamp for f in decoded], np.arange(12) / 30, atol=1e-9)
        for f, rgb in zip(decoded, frames, strict=True):
            assert np.abs(f.rgb.astype(np.int16) - rgb).mean() < 3


def test_writer_pads_odd_sizes_and_checks_frames(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "odd.mp4", 29.97, 33, 21) as writer:
        assert writer.encoded_size == (34, 22) and writer.rate == Fraction(2997, 100)
        writer.write(np.full((21, 33, 3), 200, np.uint8))
        with pytest.raises(ValueError, match="shape"):
            writer.write(np.zeros((20, 33, 3), np.uint8))
    (frame,) = list(open_video(tmp_path / "odd.mp4", "pyav"))
    assert frame.rgb.shape == (22, 34, 3) and abs(int(frame.rgb[:21, :33].mean()) - 200) <= 2


@pytest.mark.parametrize("i420", [False, True], ids=["rgb", "i420"])
def test_writer_keeps_colours(tmp_path: Path, i420: bool) -> None:
    """Saturated class colours come back as they went in: the RGB -> YUV conversion has the right matrix,
    range and channel order (a grey ramp would not tell); frames given as I420 (what the overlay of
    segvn.predict draws) likewise."""
    from segvn.data.classes import PALETTE

    colours = np.asarray(PALETTE, np.uint8).reshape(-1, 3)
    rgb = np.repeat(np.repeat(colours[None], 64, axis=0), 32, axis=1)  # one 32 px wide band per class
    with VideoWriter(tmp_path / "colours.mp4", 25, rgb.shape[1], 64, crf=10, preset="ultrafast") as writer:
        for _ in range(3):
            if i420:
                writer.write_i420(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420))
            else:
                writer.write(rgb)
        with pytest.raises(ValueError, match="I420"):
            writer.write_i420(rgb[..., 0])
    (frame, *_) = list(open_video(tmp_path / "colours.mp4", "pyav"))
    inner = (slice(8, 56), np.concatenate([np.arange(32 * k + 6, 32 * k + 26) for k in range(len(colours))]))
    error = np.abs(frame.rgb[inner].astype(np.int16) - rgb[inner])
    assert error.mean() < 3 and error.max() < 16, (error.mean(), error.max())


def test_h264_encoder_available() -> None:
    assert pick_h264_encoder() == available_h264_encoders()[0]
    assert pick_h264_encoder() in {"libx264", "libopenh264"}


def test_1080p_30fps_with_b_frames(video_path: Path, tmp_path: Path) -> None:
    """1080p 30 fps input with B-frames (pts != dts): same frames sequentially and by seeking, both backends."""
    path = tmp_path / "hd.mp4"
    source = open_video(video_path, "pyav")
    with VideoWriter(path, 30, 1920, 1080, crf=23, preset="superfast") as writer:
        for frame in source.frames(range(0, 40, 4)):
            writer.write(cv2.resize(frame.rgb, (1920, 1080), interpolation=cv2.INTER_LINEAR))
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
        assert any(p.pts != p.dts for p in packets), "expected B-frames"
    info, index = probe_video(path)
    assert (info.width, info.height, info.fps, len(index)) == (1920, 1080, 30.0, 10)
    sequential = {}
    for name in BACKENDS:
        reader = open_video(path, name)
        rows = [(i, ts, digest(rgb)) for i, ts, rgb in reader]
        assert [r[0] for r in rows] == list(range(10))
        np.testing.assert_allclose([r[1] for r in rows], np.arange(10) / 30, atol=1e-9)
        picked = [(i, ts, digest(rgb)) for i, ts, rgb in reader.frames([2, 7, 9])]
        assert picked == [rows[i] for i in (2, 7, 9)]
        sequential[name] = rows
    assert [r[:2] for r in sequential["decord"]] == [r[:2] for r in sequential["pyav"]]


def test_decord_failure_mid_stream_falls_back_to_pyav(
    video_path: Path, full_pass: dict, monkeypatch, caplog
) -> None:
    """If decord dies part-way on a file the probe found intact, PyAV delivers the rest, same frames."""
    import decord

    real = decord.VideoReader

    class Flaky(real):
        calls = 0

        def next(self):
            Flaky.calls += 1
            if Flaky.calls > 50:
                raise decord.DECORDError("simulated decoder thread failure")
            return super().next()

    monkeypatch.setattr(decord, "VideoReader", Flaky)
    with caplog.at_level(logging.WARNING, logger="segvn.data.video"):
        rows = [(i, ts, digest(rgb)) for i, ts, rgb in open_video(video_path, "decord")]
    assert "decord failed at frame 50" in caplog.text
    assert [r[:2] for r in rows] == [r[:2] for r in full_pass["decord"]["rows"]]
    assert [r[2] for r in rows[:50]] == [r[2] for r in full_pass["decord"]["rows"][:50]]
    assert [r[2] for r in rows[50:]] == [r[2] for r in full_pass["pyav"]["rows"][50:]]


# ------------------------------------------------------------------------------------------- I420
def test_i420_frames_are_the_decoders_planes(video_path: Path) -> None:
    """``i420=True`` hands on the decoder's planes; in RGB they are FFmpeg's conversion within a few levels,
    resized they are the RGB resized, and the luma plane is the grey frame (limited range)."""
    rgb = [f.rgb for f, _ in zip(open_video(video_path, "pyav"), range(3), strict=False)]
    yuv = [f.image for f, _ in zip(open_video(video_path, "pyav", i420=True), range(3), strict=False)]
    for a, b in zip(rgb, yuv, strict=True):
        assert isinstance(b, I420Frame) and b.size == (HEIGHT, WIDTH) and b.yuv.shape == (810, 960)
        error = np.abs(b.to_rgb().astype(np.int16) - a)
        assert error.max() <= 4 and error.mean() < 1.5, (error.max(), error.mean())
        small = b.to_rgb((270, 480)).astype(np.int16)
        assert np.abs(small - cv2.resize(a, (480, 270), interpolation=cv2.INTER_AREA)).mean() < 2
        grey = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32)
        assert np.abs((b.grey.astype(np.float32) - 16) * 255 / 219 - grey).mean() < 1.5
    # decord decodes to RGB only
    assert isinstance(next(iter(open_video(video_path, "decord", i420=True))).image, np.ndarray)


def test_non_bt601_videos_stay_rgb(tmp_path: Path) -> None:
    """A full-range (yuvj420p) or BT.709 video is not what OpenCV's I420 conversion assumes: RGB frames."""
    frame = np.dstack([np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))] * 3)
    for name, pix_fmt, colorspace in (("full.mp4", "yuvj420p", None), ("bt709.mp4", "yuv420p", 1)):
        with av.open(str(tmp_path / name), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
            if colorspace is not None:
                stream.codec_context.colorspace = colorspace
            video = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format=pix_fmt)
            if colorspace is not None:
                video.colorspace = colorspace
            container.mux(stream.encode(video))
            container.mux(stream.encode(None))
        (decoded,) = list(open_video(tmp_path / name, "pyav", i420=True))
        assert isinstance(decoded.image, np.ndarray) and decoded.image.shape == (48, 64, 3), name
    assert is_bt601_i420("yuv420p", 6, 1, 64, 48) and is_bt601_i420("yuv420p", 2, 0, 64, 48)
    assert not is_bt601_i420("yuv420p", 6, 1, 63, 48) and not is_bt601_i420("yuv420p10le", 6, 1, 64, 48)


def test_i420_frame_checks_and_crops() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    frame = I420Frame.from_rgb(rgb)
    assert frame.size == (24, 32) and image_size(frame) == image_size(rgb) == (24, 32)
    crop = frame.crop(4, 12, 6, 20)
    assert crop.size == (8, 14) and np.array_equal(crop.to_rgb(), frame.to_rgb()[4:12, 6:20])
    assert frame.to_rgb((12, 15)).shape == (12, 15, 3)  # odd sides: converted, then resized
    with pytest.raises(ValueError, match="even"):
        frame.crop(1, 12, 6, 20)
    with pytest.raises(ValueError, match="I420"):
        I420Frame(np.zeros((35, 32), np.uint8))  # 35 rows: not 3H/2
    with pytest.raises(ValueError, match="I420"):
        I420Frame(np.zeros((36, 31), np.uint8))
