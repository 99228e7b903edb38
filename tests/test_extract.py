"""Frame extraction into the street layout, its manifest, failure handling, and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from segvn.data.extract import MANIFEST_COLUMNS, extract_frames, find_videos, read_manifest
from segvn.data.video import BACKENDS, FrameSelection, open_video
from segvn.data.video_writer import VideoWriter
from segvn.errors import ExtractError, VideoDecodeError, VideoNotFoundError
from tests.test_video import truncate_copy

from .conftest import run_segvn

FPS = 25


def manifest_rows(street_dir: Path) -> list[dict[str, str]]:
    with (street_dir / "manifest.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == MANIFEST_COLUMNS
        return list(reader)


def status(street_dir: Path) -> dict:
    return json.loads((street_dir / "manifest.status.json").read_text())


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (FrameSelection(num_frames=4), [27, 82, 138, 193]),
        (FrameSelection(every_n=60), [0, 60, 120, 180]),
        (FrameSelection(fps=0.5), [0, 50, 100, 150, 200]),
    ],
)
def test_extract_modes(
    video_path: Path, tmp_path: Path, backend: str, selection, expected: list[int]
) -> None:
    summary = extract_frames(video_path, "highway", tmp_path, selection, backend=backend)
    street = tmp_path / "highway"
    assert summary.frames_written == len(expected) and summary.status == "complete"
    assert sorted(p.name for p in (street / "frames").iterdir()) == [
        f"solidWhiteRight_{i:06d}.png" for i in expected
    ]
    rows = manifest_rows(street)
    assert [int(r["frame_index"]) for r in rows] == expected
    for row, index in zip(rows, expected, strict=True):
        assert (
            row["video"] == "solidWhiteRight.mp4"
            and row["street"] == "highway"
            and row["status"] == "complete"
        )
        assert float(row["timestamp"]) == pytest.approx(index / FPS, abs=1e-6)
        assert row["file"] == f"frames/solidWhiteRight_{index:06d}.png"
    # the PNG holds exactly the decoded frame (lossless), in RGB order
    first = next(open_video(video_path, backend).frames([expected[0]]))
    assert np.array_equal(read_rgb(street / rows[0]["file"]), first.rgb)
    assert status(street)["status"] == "complete"
    assert not list(tmp_path.glob("**/.hydra")) and not list(street.glob("**/*.tmp"))


def test_backends_write_the_same_frames(video_path: Path, tmp_path: Path) -> None:
    for backend in BACKENDS:
        extract_frames(video_path, "s", tmp_path / backend, FrameSelection(num_frames=3), backend=backend)
    a, b = (sorted((tmp_path / name / "s" / "frames").iterdir()) for name in BACKENDS)
    assert [p.name for p in a] == [p.name for p in b]
    for pa, pb in zip(a, b, strict=True):
        assert np.abs(read_rgb(pa).astype(np.int16) - read_rgb(pb)).mean() < 0.5
    assert [r["timestamp"] for r in manifest_rows(tmp_path / "decord" / "s")] == [
        r["timestamp"] for r in manifest_rows(tmp_path / "pyav" / "s")
    ]


def test_rerun_does_not_duplicate_and_merges(video_path: Path, tmp_path: Path) -> None:
    street = tmp_path / "s"
    extract_frames(video_path, "s", tmp_path, FrameSelection(every_n=100), backend="pyav")
    first = (street / "manifest.csv").read_bytes()
    extract_frames(video_path, "s", tmp_path, FrameSelection(every_n=100), backend="pyav")
    assert (street / "manifest.csv").read_bytes() == first  # deterministic, no duplicate rows
    extract_frames(video_path, "s", tmp_path, FrameSelection(every_n=50), backend="pyav")
    indices = [int(r["frame_index"]) for r in manifest_rows(street)]
    assert indices == [0, 50, 100, 150, 200]  # union of both runs, sorted, each frame once
    assert len(list((street / "frames").iterdir())) == 5


def test_truncated_video_keeps_partial_output(video_path: Path, tmp_path: Path) -> None:
    broken = truncate_copy(video_path, tmp_path / "broken.mp4", 0.6)
    street = tmp_path / "data" / "s"
    with pytest.raises(VideoDecodeError) as caught:
        extract_frames(
            broken, "s", tmp_path / "data", FrameSelection(every_n=40), backend="decord", on_error="stop"
        )
    message = str(caught.value)
    assert str(broken) in message and "failed at frame 132" in message and "partial" in message
    assert caught.value.frame_index == 132
    written = sorted(p.name for p in (street / "frames").iterdir())
    assert written == [f"broken_{i:06d}.png" for i in (0, 40, 80, 120)]
    rows = manifest_rows(street)
    assert [(int(r["frame_index"]), r["status"]) for r in rows] == [(i, "partial") for i in (0, 40, 80, 120)]
    (entry,) = status(street)["videos"]
    assert status(street)["status"] == "partial"
    assert entry["status"] == "partial" and entry["frames_written"] == 4 and entry["last_frame_index"] == 120
    assert entry["frames_present"] == 132 and entry["frames_reported"] == 221
    assert "failed at frame 132" in entry["error"]


def test_garbage_and_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(VideoNotFoundError, match="nothing.mp4"):
        extract_frames(tmp_path / "nothing.mp4", "s", tmp_path / "data", FrameSelection(num_frames=3))
    assert not (tmp_path / "data").exists()  # nothing written for a bad path
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01not a video" * 5000)
    with pytest.raises(VideoDecodeError, match="garbage.mp4.*no frames of garbage.mp4"):
        extract_frames(garbage, "s", tmp_path / "data", FrameSelection(num_frames=3), on_error="stop")
    (entry,) = status(tmp_path / "data" / "s")["videos"]
    assert entry["status"] == "failed" and entry["frames_written"] == 0 and "not a video" in entry["error"]
    assert manifest_rows(tmp_path / "data" / "s") == []
    for street in ("", "a/b", ".."):
        with pytest.raises(ExtractError, match="street"):
            extract_frames(garbage, street, tmp_path / "data", FrameSelection(num_frames=3))


def _small_video(path: Path, frames: int, shade: int) -> Path:
    with VideoWriter(path, 10, 64, 48, preset="ultrafast") as writer:
        for i in range(frames):
            writer.write(np.full((48, 64, 3), (shade + 10 * i) % 256, np.uint8))
    return path


def test_folder_of_videos_goes_to_one_street(tmp_path: Path) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    _small_video(folder / "b_clip.mp4", 6, 100)
    _small_video(folder / "a_clip.mp4", 4, 0)
    (folder / "notes.txt").write_text("not a video")
    assert [p.name for p in find_videos(folder)] == ["a_clip.mp4", "b_clip.mp4"]
    summary = extract_frames(folder, "st", tmp_path / "out", FrameSelection(every_n=2), backend="pyav")
    assert [v.video for v in summary.videos] == ["a_clip.mp4", "b_clip.mp4"]
    rows = manifest_rows(tmp_path / "out" / "st")
    assert [(r["video"], int(r["frame_index"])) for r in rows] == [
        ("a_clip.mp4", 0),
        ("a_clip.mp4", 2),
        ("b_clip.mp4", 0),
        ("b_clip.mp4", 2),
        ("b_clip.mp4", 4),
    ]
    assert float(rows[-1]["timestamp"]) == pytest.approx(0.4)
    assert (
        read_manifest(tmp_path / "out" / "st" / "manifest.csv")[("b_clip.mp4", 4)]["file"]
        == "frames/b_clip_000004.png"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExtractError, match="no videos"):
        extract_frames(empty, "st", tmp_path / "out", FrameSelection(every_n=2))


@pytest.mark.slow
def test_cli(video_path: Path, tmp_path: Path) -> None:
    """``python -m segvn.extract`` end to end: frames, manifest, summary line; then a bad input."""
    common = ["street=cli", f"out={tmp_path / 'data'}"]
    done = run_segvn(
        "extract",
        *common,
        f"input={video_path}",
        "num_frames=5",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        timeout=120,
        HYDRA_FULL_ERROR="0",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    street = tmp_path / "data" / "cli"
    assert len(list((street / "frames").glob("solidWhiteRight_*.png"))) == 5
    assert [int(r["frame_index"]) for r in manifest_rows(street)] == [22, 66, 110, 154, 198]
    assert "street 'cli': 5 frames from 1 video(s)" in done.stdout
    assert (tmp_path / "hydra" / ".hydra" / "config.yaml").exists()
    assert not list((tmp_path / "data").glob("**/.hydra"))

    bad = run_segvn(
        "extract",
        *common,
        f"input={tmp_path / 'nope.mp4'}",
        "every_n=5",
        f"hydra.run.dir={tmp_path / 'hydra2'}",
        timeout=120,
        HYDRA_FULL_ERROR="0",
    )
    assert bad.returncode == 1
    assert "input not found" in bad.stdout and "nope.mp4" in bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr


def test_interrupted_run_still_writes_manifest(video_path: Path, tmp_path: Path) -> None:
    def stop_after_two(video: str, done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_frames(
            video_path, "s", tmp_path, FrameSelection(every_n=50), backend="pyav", progress=stop_after_two
        )
    rows = manifest_rows(tmp_path / "s")
    assert [(int(r["frame_index"]), r["status"]) for r in rows] == [(0, "partial"), (50, "partial")]
    (entry,) = status(tmp_path / "s")["videos"]
    assert entry["status"] == "partial" and entry["error"] == "KeyboardInterrupt"


def test_a_folder_with_bad_videos_extracts_every_good_one(tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a_empty.mp4").write_bytes(b"")
    _small_video(folder / "b_good.mp4", 6, 10)
    (folder / "c_garbage.mp4").write_bytes(b"\x00\x01not a video" * 500)
    _small_video(folder / "d_good.mp4", 4, 90)
    with pytest.raises(ExtractError) as caught:
        extract_frames(folder, "s", tmp_path / "data", FrameSelection(every_n=1))
    message = str(caught.value)
    assert message.startswith("2 of 4 video(s)") and "a_empty.mp4" in message and "c_garbage.mp4" in message
    street = tmp_path / "data" / "s"
    frames = sorted(p.name for p in (street / "frames").iterdir())
    assert frames == [f"b_good_{i:06d}.png" for i in range(6)] + [f"d_good_{i:06d}.png" for i in range(4)]
    entries = {v["video"]: v["status"] for v in status(street)["videos"]}
    assert entries == {"a_empty.mp4": "failed", "b_good.mp4": "complete", "c_garbage.mp4": "failed",
                       "d_good.mp4": "complete"}  # fmt: skip


def test_a_rerun_continues_with_the_videos_not_done(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    _small_video(folder / "a.mp4", 5, 10)
    (folder / "b.mp4").write_bytes(b"not yet copied completely")
    with pytest.raises(ExtractError, match="b.mp4"):
        extract_frames(folder, "s", tmp_path / "data", FrameSelection(every_n=1))
    first = (tmp_path / "data" / "s" / "frames" / "a_000000.png").stat().st_mtime_ns
    _small_video(folder / "b.mp4", 3, 50)  # the copy is complete now
    with caplog.at_level("INFO"):
        summary = extract_frames(folder, "s", tmp_path / "data", FrameSelection(every_n=1))
    assert "a.mp4: already extracted" in caplog.text
    assert (tmp_path / "data" / "s" / "frames" / "a_000000.png").stat().st_mtime_ns == first, "not rewritten"
    assert summary.frames_written == 5 + 3 and summary.status == "complete"
    assert len(manifest_rows(tmp_path / "data" / "s")) == 8
