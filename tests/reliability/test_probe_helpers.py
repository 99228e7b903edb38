"""The judges of the reliability suite judge: a tree change, a deep traceback and a second error line fail."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import Outcome, Probe, traceback_frames, tree_digest


def _proc(code: int, err: str) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(["x"], code, stdout="", stderr=err)


def test_tree_digest_sees_content_links_and_new_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    before = tree_digest(tmp_path)
    (tmp_path / "a.txt").write_text("b")
    (tmp_path / "link").symlink_to(tmp_path / "a.txt")
    after = tree_digest(tmp_path)
    assert before["a.txt"] != after["a.txt"] and after["link"].startswith("link:")


def test_probe_fails_on_writes_outside_and_deep_tracebacks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    probe = Probe(Outcome("t"))
    probe.guard(outside)
    (outside / "keep.txt").write_text("changed")
    with pytest.raises(AssertionError, match="written outside"):
        probe.expect_error(_proc(1, "[ERROR] bad setting x=1"), "x=1")
    assert probe.outcome.writes_outside == 1

    deep = "Traceback\n" + "".join(f'  File "f{i}.py", line 1\n' for i in range(5)) + "[ERROR] bad\n"
    assert traceback_frames(deep) == 5
    with pytest.raises(AssertionError):
        Probe(Outcome("t")).expect_error(_proc(1, deep), "bad")
    with pytest.raises(AssertionError):
        Probe(Outcome("t")).expect_error(_proc(1, "[ERROR] one\n[ERROR] two"), "one")
    silent = Probe(Outcome("t"))
    with pytest.raises(AssertionError):
        silent.expect_error(_proc(0, ""), "x")
    assert silent.outcome.kind == "silent_wrong"
