"""User errors end early in one line naming the setting or file and the fix: exit 1, no traceback."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from segvn.errors import CheckpointError
from segvn.models.checkpoint import load_checkpoint

from .conftest import run_segvn


def _one_line_error(proc, *needles: str) -> str:
    said = proc.stdout + proc.stderr
    assert proc.returncode == 1, said[-3000:]
    assert "Traceback" not in said, said[-3000:]
    errors = [line for line in said.splitlines() if "ERROR" in line]
    assert len(errors) == 1, errors
    assert all(n in errors[0] for n in needles), errors[0]
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("data.batch_size=abc", ("data.batch_size", "'abc'")),
        ("model.net.num_classes=5", ("model.net.num_classes=5", "set model.net.num_classes=8")),
        ("data.image_size=[12]", ("data.image_size",)),
    ],
)
def test_bad_training_settings_fail_before_any_work(tmp_path: Path, override: str, needles) -> None:
    run_dir = tmp_path / "run"
    proc = run_segvn("train", override, "logger=csv", f"hydra.run.dir={run_dir}", root=tmp_path, timeout=300)
    _one_line_error(proc, *needles)
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()


def test_checkpoint_errors_tell_corrupt_from_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "random.ckpt"
    garbage.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        load_checkpoint(garbage)
    assert "pickled" not in str(err.value)

    class Evil:
        def __reduce__(self):
            return (print, ("this would run",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Evil()}, evil, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(evil)


@pytest.mark.slow
def test_train_refuses_a_bad_ckpt_path_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "half.ckpt"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    proc = run_segvn(
        "train", f"ckpt_path={bad}", "logger=csv", f"hydra.run.dir={tmp_path / 'run'}", root=tmp_path
    )
    _one_line_error(proc, str(bad), "truncated or corrupt")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "needles", "composes"),
    [
        (("level=deep",), ("level='deep'", "expected one of [cheap, full]"), False),
        (("limit=-1",), ("limit=-1", "out of range", ">= 0"), True),
    ],
)
def test_a_value_outside_the_schema_is_one_line(tmp_path: Path, args, needles, composes) -> None:
    """A bad enum fails as the config composes (nothing written), a number out of range before any work."""
    run_dir = tmp_path / "run"
    proc = run_segvn("check", *args, f"hydra.run.dir={run_dir}", root=tmp_path, HYDRA_FULL_ERROR="0")
    _one_line_error(proc, *needles)
    assert run_dir.exists() == composes and not (run_dir / "check.json").exists()
