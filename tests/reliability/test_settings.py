"""Deep tracebacks instead of one line: numeric settings given a non-number, and run folders that cannot be
created (under a regular file, in a read-only folder). Each probe runs the real command."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from .conftest import run_segvn

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

USER = {"HYDRA_FULL_ERROR": "0"}
"""A user's environment: Hydra's full tracebacks off (the test session turns them on)."""


def _args(verb: str, request: pytest.FixtureRequest) -> list[str]:
    """The least a command needs to start (real files from the shared data)."""
    if verb in ("evaluate", "predict"):
        return [f"ckpt_path={request.getfixturevalue('camvid_checkpoint')}"]
    if verb == "extract":
        return [f"input={request.getfixturevalue('video_path')}", "street=s"]
    return []


@pytest.mark.parametrize(
    ("verb", "setting"),
    [
        ("train", "model.optimizer.lr"),
        ("train", "model.optimizer.momentum"),
        ("train", "model.scheduler.gamma"),
        ("train", "trainer.max_epochs"),
        ("train", "trainer.limit_train_batches"),
        ("train", "data.batch_size"),
        ("train", "seed"),
        ("evaluate", "data.batch_size"),
        ("predict", "batch_size"),
        ("extract", "fps"),
        ("extract", "every_n"),
        ("check", "limit"),
    ],
)
def test_non_number_for_a_numeric_setting_is_one_line(probe, request, tmp_path, verb, setting):
    run = tmp_path / "run"
    proc = run_segvn(
        verb, *_args(verb, request), f"{setting}=abc", f"hydra.run.dir={run}", root=tmp_path, **USER
    )
    probe.expect_error(proc, setting, "abc")
    assert not (run / "checkpoints").exists()


@pytest.mark.parametrize(
    ("verb", "setting"), [("train", "data.pseudo.class_weighted"), ("check", "data.unlabelled.transductive")]
)
def test_non_boolean_for_an_on_off_setting_is_one_line(probe, request, tmp_path, verb, setting):
    run = tmp_path / "run"
    proc = run_segvn(verb, f"{setting}=maybe", f"hydra.run.dir={run}", root=tmp_path, **USER)
    probe.expect_error(proc, setting, "maybe")
    assert not (run / "checkpoints").exists()


def test_sweep_summary_names_the_setting(probe, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_segvn(
        "train",
        "-m",
        "model.optimizer.lr=abc,xyz",
        "logger=csv",
        f"hydra.sweep.dir={sweep}",
        root=tmp_path,
        **USER,
    )
    assert proc.returncode != 0
    rows = list(csv.DictReader((sweep / "sweep_summary.csv").open()))
    errors = [row["error"] for row in rows]
    clear = len(rows) == 2 and all("model.optimizer.lr=" in e and "not a number" in e for e in errors)
    probe.outcome.kind = "clear_error" if clear else "unclear_error"
    assert clear, errors


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "notes.txt"
    path.parent.mkdir()
    path.write_text("a regular file where a folder is expected\n")
    return path


@pytest.mark.parametrize("verb", ["train", "evaluate", "predict", "extract", "check"])
def test_run_dir_under_a_regular_file_is_one_line(probe, request, tmp_path, a_file, verb):
    run = a_file / "run"
    probe.guard(a_file.parent)
    proc = run_segvn(verb, *_args(verb, request), f"hydra.run.dir={run}", root=tmp_path, **USER)
    probe.expect_error(proc, f"hydra.run.dir={run}", str(a_file))


def test_sweep_dir_under_a_regular_file_is_one_line(probe, tmp_path, a_file):
    sweep = a_file / "sweep"
    probe.guard(a_file.parent)
    proc = run_segvn("check", "-m", "limit=1,2", f"hydra.sweep.dir={sweep}", root=tmp_path, **USER)
    probe.expect_error(proc, f"hydra.sweep.dir={sweep}", str(a_file))


def test_output_dir_under_a_regular_file_is_one_line(probe, tmp_path, a_file):
    out = a_file / "out"
    probe.guard(a_file.parent)
    proc = run_segvn(
        "check", f"paths.output_dir={out}", f"hydra.run.dir={tmp_path / 'run'}", root=tmp_path, **USER
    )
    probe.expect_error(proc, f"paths.output_dir={out}", str(a_file))


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_run_dir_the_system_refuses_is_one_line(probe, tmp_path):
    """Even root cannot make a folder in /proc: the run directory's creation fails, whoever runs it."""
    run = Path("/proc") / f"segvn_run_{os.getpid()}"
    proc = run_segvn("check", f"hydra.run.dir={run}", root=tmp_path, **USER)
    probe.expect_error(proc, f"hydra.run.dir={run}", "cannot create")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("verb", ["train", "check"])
def test_run_dir_in_a_read_only_folder_is_one_line(probe, tmp_path, verb):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        proc = run_segvn(verb, f"hydra.run.dir={locked / 'run'}", root=tmp_path, **USER)
    finally:
        locked.chmod(0o755)
    probe.expect_error(proc, f"hydra.run.dir={locked / 'run'}", "Permission denied")
