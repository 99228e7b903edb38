"""``runtime=auto``'s race remembered (:mod:`segvn.inference.race_cache`): a second start takes the winner
without racing, a changed checkpoint races again, a corrupt cache file is ignored with a warning.

The cache folder is the test's own (``SEGVN_CACHE_DIR``), never the user's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from segvn.inference.race_cache import CACHE_ENV, RACE_FILE, RaceCache, cache_dir, race_key

RACED = "runtime=auto on the CPU:"
CACHED = "cached race from"


def test_the_cache_folder_is_the_env_setting_else_the_users(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "here"))
    assert cache_dir() == tmp_path / "here" and RaceCache().path == tmp_path / "here" / RACE_FILE
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the platform's rule on Linux
    assert cache_dir() == tmp_path / "xdg" / "segvn"


def test_a_corrupt_cache_file_is_ignored_with_a_warning(tmp_path: Path, caplog) -> None:
    weights = tmp_path / "model.ckpt"
    weights.write_bytes(b"weights")
    cache = RaceCache(tmp_path / "cache")
    key = race_key(weights, (64, 96), precision="auto", channels_last=None, bf16=False)
    cache.path.parent.mkdir()
    cache.path.write_text('{"entries": {"abc": ')  # a write cut short
    with caplog.at_level(logging.WARNING, logger="segvn.inference.race_cache"):
        assert cache.lookup(key) is None
    assert f"{cache.path}: corrupt runtime race cache ignored" in caplog.text
    cache.store(key, "onnx", {"onnx": 2.5, "openvino fp32": 3.25})  # written anew
    entry = cache.lookup(key)
    assert entry["winner"] == "onnx" and entry["times_ms"] == {"onnx": 2.5, "openvino fp32": 3.25}
    assert len(json.loads(cache.path.read_text())["entries"]) == 1
    # another setup, or the same checkpoint file changed, is another key
    assert cache.lookup(race_key(weights, (64, 80), precision="auto", channels_last=None, bf16=False)) is None
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.lookup(race_key(weights, (64, 96), precision="auto", channels_last=None, bf16=False)) is None


def _load(path: Path, caplog) -> tuple[str, str]:
    """``load_model`` on the CPU with the defaults (runtime=auto); its runtime and what it logged."""
    import segvn

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="segvn.inference.runtime_choice"):
        model = segvn.load_model(path, device="cpu")
    return model.runtime, caplog.text


@pytest.mark.slow
def test_a_second_start_takes_the_cached_race(camvid_checkpoint, monkeypatch, tmp_path: Path, caplog) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    ckpt = tmp_path / "model.ckpt"
    shutil.copy2(camvid_checkpoint, ckpt)  # its modification time changes below, not the session's file
    cache_file = tmp_path / "cache" / RACE_FILE

    runtime, log = _load(ckpt, caplog)
    assert RACED in log and CACHED not in log, log
    stored = cache_file.read_text()
    (entry,) = json.loads(stored)["entries"].values()
    assert entry["key"]["checkpoint"] == str(ckpt.resolve()) and entry["key"]["size"] == [64, 96]
    assert {"onnx", "openvino fp32"} <= set(entry["times_ms"])
    assert entry["winner"].split()[0] == runtime

    again, log = _load(ckpt, caplog)
    assert again == runtime
    assert f"runtime=auto: {entry['winner']} ({CACHED} {cache_file}" in log and RACED not in log, log
    assert cache_file.read_text() == stored, "the second start measured nothing"

    stat = ckpt.stat()
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a changed checkpoint
    _, log = _load(ckpt, caplog)
    assert RACED in log and CACHED not in log, log
    assert len(json.loads(cache_file.read_text())["entries"]) == 2
