"""``python -m segvn.curves run_dir=DIR``: the training-progress figure from a run's real CSV log."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from segvn.curves import curves
from segvn.viz.curves import draw_progress, find_run_csv, progress_frame

from .conftest import REPO_ROOT, run_segvn
from .fixtures_ckpt import make_trained_run


@pytest.fixture(scope="session")
def trained_run(camvid_root, tmp_path_factory, request) -> Path:
    return make_trained_run(tmp_path_factory, request.config)


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size, np.asarray(im.convert("RGB"))


@pytest.mark.slow
@pytest.mark.xdist_group("trained_run")
def test_progress_command_draws_the_figure_of_a_real_run(trained_run, tmp_path):
    out = tmp_path / "progress.png"
    before = sorted(REPO_ROOT.iterdir()), sorted((REPO_ROOT / "outputs").glob("curves/runs/*"))
    proc = run_segvn("curves", f"run_dir={trained_run}", f"out={out}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    size, picture = _png(out)
    # the same figure the training run drew at its end (same CSV, same defaults but the title)
    assert size == _png(trained_run / "training_progress.png")[0]
    assert picture.std() > 10
    after = sorted(REPO_ROOT.iterdir()), sorted((REPO_ROOT / "outputs").glob("curves/runs/*"))
    assert after == before, "the command leaves nothing behind but the picture (no run dir, no log)"


@pytest.mark.slow
@pytest.mark.xdist_group("trained_run")
def test_progress_default_output_is_the_run_dir_and_per_class_curves_are_optional(
    trained_run, tmp_path, compose_cfg
):
    run = tmp_path / "copied_run"
    shutil.copytree(trained_run / "csv", run / "csv")
    csv = find_run_csv(run)
    assert csv == run / "csv" / "metrics.csv"
    columns = pd.read_csv(csv).columns
    assert {"train/loss_step", "train/acc_step", "val/miou", "val/loss", "lr-SGD"} <= set(columns)
    assert any(c.startswith("val/iou/") for c in columns)
    assert not any(c.startswith("val/iou/") for c in progress_frame(csv).columns)
    assert any(c.startswith("val/iou/") for c in progress_frame(csv, per_class=True).columns)

    cfg = compose_cfg([f"run_dir={run}"], config_name="curves")
    path = curves(cfg)
    assert path == run / "training_progress.png"
    (w, h), _ = _png(path)
    # per-class curves make a taller legend but the same figure size: just check both draw
    (w2, h2), _ = _png(draw_progress(csv, tmp_path / "per_class.png", per_class=True))
    assert (w, h) == (w2, h2)


def test_progress_falls_back_to_epoch_metrics_csv(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame(
        {
            "epoch": [0, 1, 2],
            "step": [9, 19, 29],
            "lr": [1e-3, 1e-3, 3e-4],
            "train/loss": [2.0, 1.5, 1.2],
            "val/loss": [2.1, 1.7, 1.4],
            "val/miou": [0.1, 0.2, 0.3],
            "val/iou/car": [0.0, 0.1, 0.2],
        }
    ).to_csv(run / "epoch_metrics.csv", index=False)
    assert find_run_csv(run) == run / "epoch_metrics.csv"
    size, _ = _png(draw_progress(run / "epoch_metrics.csv", run / "p.png"))
    assert size[0] > 500 and size[1] > 500


@pytest.mark.slow
def test_progress_without_a_csv_log_is_one_clear_error(tmp_path):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    (empty / "config.yaml").write_text("a: 1\n")
    proc = run_segvn("curves", f"run_dir={empty}", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "has no CSV log" in out and "csv/metrics.csv" in out and "Traceback" not in out
    assert sorted(p.name for p in empty.iterdir()) == ["config.yaml"], "nothing written"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_run_csv(tmp_path / "missing")
