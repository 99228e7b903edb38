"""``resume=DIR`` works in DIR and nowhere else: a copied run resumes in the copy, a refusal writes nothing.

A run's config.yaml (and the state in its checkpoints) holds absolute paths of the directory it was
trained in. Resuming a copy must read and write the copy only, and a checkpoint that does not fit
the model (after the overrides) must be one clear error before any file of the run is rewritten.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ..conftest import TINY_TRAIN
from .conftest import Probe, run_segvn

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained_run(camvid_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny real training run (one epoch of two steps), made once for this module."""
    run = tmp_path_factory.mktemp("resume") / "run"
    proc = run_segvn("train", *TINY_TRAIN, f"hydra.run.dir={run}", root=run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    return run


def _copy(run: Path, where: Path) -> Path:
    copy = where / "copy"
    shutil.copytree(run, copy, symlinks=True)
    return copy


def _summary(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_a_copied_run_resumes_in_the_copy_and_leaves_the_original_alone(
    trained_run: Path, tmp_path: Path, probe: Probe
) -> None:
    copy = _copy(trained_run, tmp_path)
    before = _summary(trained_run)
    probe.guard(trained_run)
    proc = run_segvn("train", f"resume={copy}", f"trainer.max_epochs={before['epochs'] + 2}")
    probe.expect_ok(proc)
    after = _summary(copy)
    assert after["resumed_from_step"] == before["global_step"] > 0
    assert after["global_step"] > before["global_step"]
    assert after["output_dir"] == str(copy)
    for key in ("best_model_path", "last_model_path"):
        assert Path(after[key]).parent == copy / "checkpoints", (key, after[key])
    for name in ("config.yaml", "metrics.json", "csv/hparams.yaml"):
        assert str(trained_run) not in (copy / name).read_text(), f"{name} still names the original run"


def test_a_checkpoint_that_does_not_fit_is_refused_before_anything_is_written(
    trained_run: Path, tmp_path: Path, probe: Probe
) -> None:
    copy = _copy(trained_run, tmp_path)
    probe.guard(trained_run, copy)
    proc = run_segvn("train", f"resume={copy}", "model.net.encoder_name=mobilenet_v2")
    line = probe.expect_error(
        proc, str(copy / "checkpoints" / "last.ckpt"), "model.net.encoder_name=mobilenet_v2"
    )
    assert "trained with resnet18" in line, line

    # the refusal left the original resumable, in its own directory
    step = _summary(trained_run)["global_step"]
    again = run_segvn(
        "train", f"resume={trained_run}", f"trainer.max_epochs={_summary(trained_run)['epochs'] + 1}"
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert _summary(trained_run)["resumed_from_step"] == step


def test_the_best_checkpoint_state_follows_a_copied_run(
    trained_run: Path, tmp_path: Path, probe: Probe
) -> None:
    """The best-checkpoint state saved in last.ckpt names the original's files: loaded in a copy, the copy's."""
    from segvn.callbacks import RunModelCheckpoint
    from segvn.models.checkpoint import Checkpoint

    copy = _copy(trained_run, tmp_path)
    raw = Checkpoint.read(copy / "checkpoints" / "last.ckpt").raw
    callback = RunModelCheckpoint(
        dirpath=copy / "checkpoints", filename="epoch_{epoch:03d}", monitor="val/miou", mode="max"
    )
    state = raw["callbacks"][callback.state_key]  # Lightning's ModelCheckpoint key: older runs resume too
    assert callback.state_key.startswith("ModelCheckpoint{")
    assert Path(state["best_model_path"]).parent == trained_run / "checkpoints"
    probe.guard(trained_run)
    callback.load_state_dict(state)
    probe.ran()
    assert Path(callback.best_model_path) == copy / "checkpoints" / Path(state["best_model_path"]).name
    assert callback.best_model_score == state["best_model_score"], "the ranking is kept, not dropped"
    assert [Path(p).parent for p in callback.best_k_models] == [copy / "checkpoints"]
