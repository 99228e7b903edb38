"""One real, short training run on CamVid, shared by the analyze/visualize/progress/W&B tests.

``python -m segvn.train`` runs as a user runs it (a subprocess, default callbacks, ``logger=wandb``
offline, which includes the CSV log; the best checkpoint logged as a W&B artifact): two epochs of two batches at 64x96 on sequence 0001TP, validated
on one batch of 0016E5. The run directory holds checkpoints, ``csv/metrics.csv``,
``training_progress.png`` and the offline W&B run. It is made once per test session; under xdist the
workers share it through a file lock. A test module wraps it in a session fixture of its own::

    @pytest.fixture(scope="session")
    def trained_run(camvid_root, tmp_path_factory, request):
        return make_trained_run(tmp_path_factory, request.config)

(``camvid_root`` makes the tests skip cleanly where the shared data is missing.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from filelock import FileLock

from .conftest import run_segvn

IMAGE_SIZE = (64, 96)
VAL_STREET = "0016E5"
TRAIN_ARGS = [
    "+experiment=resnet18",
    "data=camvid_streets",
    "data.source.train=[0001TP]",
    f'data.source.val=["{VAL_STREET}"]',  # quoted: YAML reads a bare 0016E5 as the number 1.6e6
    f'data.source.predict=["{VAL_STREET}"]',
    f"data.image_size=[{IMAGE_SIZE[0]},{IMAGE_SIZE[1]}]",
    "data.num_workers=0",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "test=false",
    "~callbacks.progress_bar",
    "callbacks.wandb_media.log_checkpoint=true",
]


def _train(run_dir: Path, root: Path) -> None:
    proc = run_segvn(
        "train",
        *TRAIN_ARGS,
        f"hydra.run.dir={run_dir}",
        root=root,  # outputs (and the label-statistics cache) under the test's folder
        timeout=900,
        WANDB_SILENT="true",
        WANDB_DATA_DIR=str(root / "wandb_data"),  # W&B's artifact staging, not in the home folder
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"training for the test checkpoint failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )


def make_trained_run(tmp_path_factory: pytest.TempPathFactory, config: pytest.Config) -> Path:
    """The run directory of the shared training run, made on first use (see the module docstring)."""
    base = tmp_path_factory.getbasetemp()
    if hasattr(config, "workerinput"):  # xdist: one run for all workers, in their common parent
        base = base.parent
    root = base / "segvn_trained"
    run_dir = root / "run"
    done = root / "done.json"
    with FileLock(str(base / "segvn_trained.lock")):
        if not done.exists():
            root.mkdir(parents=True, exist_ok=True)
            _train(run_dir, root)
            done.write_text(json.dumps({"run_dir": str(run_dir)}))
    return run_dir


def best_checkpoint(run_dir: Path) -> Path:
    """The best checkpoint (by val/miou) of a training run directory."""
    best = sorted((run_dir / "checkpoints").glob("epoch_*.ckpt"))
    assert best, f"no best checkpoint in {run_dir}"
    return best[0]
