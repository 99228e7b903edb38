"""``segvn.train init_from=CKPT`` refused clearly: beside ``ckpt_path=``, a checkpoint that does not fit, a
missing file. Each refusal is one line naming the settings or the file, before the run writes its config,
logs or checkpoints, and nothing outside the run directory (the source run included) changes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import TINY_TRAIN
from .conftest import Probe, run_segvn

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


def _refused(
    probe: Probe, camvid_checkpoint: Path, tmp_path: Path, *args: str, needles: tuple[str, ...]
) -> str:
    """``segvn.train TINY ARGS`` is one clear error naming ``needles``; the source run and a sibling
    ``outside/`` folder are untouched and the run directory holds no run (config, metrics, checkpoints)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "note.txt").write_text("not segvn's\n")
    probe.guard(camvid_checkpoint.parent.parent, outside)
    run_dir = tmp_path / "run"
    proc = run_segvn("train", *TINY_TRAIN, *args, f"hydra.run.dir={run_dir}", root=tmp_path / "project")
    line = probe.expect_error(proc, *needles)
    written = [p.name for p in run_dir.iterdir()] if run_dir.exists() else []
    assert not {"config.yaml", "metrics.json", "checkpoints", "csv"} & set(written), written
    return line


def test_init_from_beside_ckpt_path_is_refused(camvid_checkpoint: Path, tmp_path: Path, probe: Probe) -> None:
    line = _refused(
        probe, camvid_checkpoint, tmp_path, f"init_from={camvid_checkpoint}", f"ckpt_path={camvid_checkpoint}",
        needles=(f"init_from={camvid_checkpoint}", f"ckpt_path={camvid_checkpoint}"),
    )  # fmt: skip
    assert "choose one" in line, line


def test_init_from_a_checkpoint_of_another_encoder_is_refused(
    camvid_checkpoint: Path, tmp_path: Path, probe: Probe
) -> None:
    """The checkpoint holds a ResNet-18; the run trains a MobileNetV2."""
    line = _refused(
        probe, camvid_checkpoint, tmp_path, f"init_from={camvid_checkpoint}", "model.net.encoder_name=mobilenet_v2",
        needles=(f"init_from={camvid_checkpoint}", "model.net.encoder_name=mobilenet_v2"),
    )  # fmt: skip
    assert "trained with resnet18" in line and "give init_from a checkpoint" in line, line


def test_init_from_a_missing_checkpoint_is_refused(
    camvid_checkpoint: Path, tmp_path: Path, probe: Probe
) -> None:
    missing = tmp_path / "gone" / "missing.ckpt"
    line = _refused(
        probe, camvid_checkpoint, tmp_path, f"init_from={missing}", needles=(f"init_from={missing}",)
    )
    assert "not found" in line, line
