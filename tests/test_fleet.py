"""Prediction over many machines: stable shards, list inputs, a submitit_local multirun equal to one
process, the merged summary, and a killed shard re-run without redoing finished videos."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from segvn.errors import InputNotFoundError
from segvn.inference.fleet import shard_of, take_shard
from segvn.inference.video import collect_inputs

from .conftest import REPO_ROOT, run_segvn, segvn_env


def test_shards_are_stable_disjoint_and_even() -> None:
    names = [f"street_{i:04d}.mp4" for i in range(2000)]
    parts = [take_shard(names, i, 4) for i in range(4)]
    assert sorted(sum(parts, [])) == names  # every input in exactly one shard
    assert all(400 < len(p) < 600 for p in parts), [len(p) for p in parts]
    assert take_shard([f"/a/{n}" for n in names[:50]], 1, 4) == [
        f"/a/{n}" for n in take_shard(names[:50], 1, 4)
    ]
    assert take_shard(names, 0, 1) == names


def test_list_file_input(tmp_path: Path, video_path: Path) -> None:
    (tmp_path / "frame.png").write_bytes(b"")
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# the videos of one street\n{video_path}\n\nframe.png\n")
    videos, images = collect_inputs(listing)
    assert videos == [video_path] and images == [tmp_path / "frame.png"]
    listing.write_text("absent.mp4\n")
    with pytest.raises(InputNotFoundError, match=r"inputs.txt:1: absent.mp4 is not a file"):
        collect_inputs(listing)


def _cut(video: Path, out: Path, start: int, frames: int) -> None:
    """A short real clip: ``frames`` frames of ``video`` from ``start``, at half size."""
    with av.open(str(video)) as src, av.open(str(out), "w") as dst:
        stream = dst.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 480, 270, "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i >= start + frames:
                break
            if i >= start:
                rgb = frame.to_ndarray(format="rgb24")[::2, ::2]
                dst.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
        dst.mux(stream.encode(None))


@pytest.fixture(scope="module")
def clips(video_path: Path, tmp_path_factory) -> Path:
    """Four real clips, two in each of two shards."""
    folder = tmp_path_factory.mktemp("clips")
    names = [n for n in (f"drive_{i}.mp4" for i in range(40))]
    chosen = [n for n in names if shard_of(n, 2) == 0][:2] + [n for n in names if shard_of(n, 2) == 1][:2]
    for k, name in enumerate(chosen):
        _cut(video_path, folder / name, start=40 * k, frames=6)
    return folder


def _labels(run: Path) -> dict[str, np.ndarray]:
    return {
        str(p.relative_to(run / "labels")): np.asarray(Image.open(p)) for p in (run / "labels").rglob("*.png")
    }


ARGS = ("save_labels=true", "progress=false", "runtime=torch", "precision=fp32", "model_workers=1")


@pytest.mark.slow
def test_two_submitit_local_shards_equal_one_process(
    clips: Path, camvid_checkpoint: Path, tmp_path: Path
) -> None:
    single = tmp_path / "single"
    one = run_segvn(
        "predict",
        f"ckpt_path={camvid_checkpoint}",
        f"input={clips}",
        *ARGS,
        f"hydra.run.dir={single}",
        root=tmp_path,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    sweep = tmp_path / "sweep"
    many = run_segvn(
        "predict", "-m", "hydra/launcher=submitit_local", f"ckpt_path={camvid_checkpoint}", f"input={clips}",
        *ARGS, "num_shards=2", "shard=0,1", f"hydra.sweep.dir={sweep}", root=tmp_path,
    )  # fmt: skip
    assert many.returncode == 0, many.stderr[-3000:]
    assert list((sweep / ".submitit").iterdir()), "the shards ran through submitit"
    reference = _labels(single)
    sharded: dict[str, np.ndarray] = {}
    for job in ("0", "1"):
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["num_shards"] == 2 and len(summary["inputs"]) == 2
        sharded.update(_labels(sweep / job))
    assert sharded.keys() == reference.keys() and len(reference) == 24
    assert all(np.array_equal(sharded[k], reference[k]) for k in reference)
    merged = json.loads((sweep / "shards_summary.json").read_text())
    single_summary = json.loads((single / "summary.json").read_text())
    assert merged["status"] == "complete" and merged["shards_done"] == [0, 1]
    assert merged["frames"] == single_summary["frames"] == 24 and merged["inputs"] == 4
    assert sorted(e["input"] for e in merged["per_input"]) == sorted(str(p) for p in clips.glob("*.mp4"))
    for c, share in single_summary["mean_class_shares"].items():
        assert merged["mean_class_shares"][c] == pytest.approx(share, abs=1e-6)


@pytest.mark.slow
def test_a_killed_shard_reruns_without_redoing_finished_videos(
    clips: Path, camvid_checkpoint: Path, tmp_path: Path
) -> None:
    job = tmp_path / "sweep" / "0"
    args = (
        f"ckpt_path={camvid_checkpoint}",
        f"input={clips}",
        *ARGS,
        "num_shards=2",
        "shard=0",
        f"hydra.run.dir={job}",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "segvn.predict", *args], cwd=REPO_ROOT, env=segvn_env(tmp_path),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    first = None
    while proc.poll() is None and time.monotonic() < deadline:  # kill once the first video is done
        try:
            inputs = json.loads((job / "summary.json").read_text())["inputs"]
        except (OSError, ValueError, KeyError):
            inputs = []
        if inputs:
            first = inputs[0]
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert first is not None, "the shard ended before its first video was done"
    finished = Path(first["output"])
    stamp = finished.stat().st_mtime_ns
    assert not [p for p in job.glob("*.mp4") if p != finished], "only whole videos under their names"
    again = run_segvn("predict", *args, root=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 input(s) done by an earlier run are kept" in again.stdout + again.stderr
    assert finished.stat().st_mtime_ns == stamp  # not redone
    summary = json.loads((job / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["frames"] == 12
    merged = run_segvn(
        "merge", f"sweep_dir={tmp_path / 'sweep'}", f"hydra.run.dir={tmp_path / 'm'}", root=tmp_path
    )
    assert merged.returncode == 1 and "shards missing [1]" in merged.stdout + merged.stderr
