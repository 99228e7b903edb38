"""Shared fixtures. Real data comes from ``$SEGVN_SHARED`` (default ``../shared`` beside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("SEGVN_SHARED", REPO_ROOT.parent / "shared")).resolve()

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path}; set SEGVN_SHARED to the shared/ folder")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _need(SHARED_DIR)


@pytest.fixture(scope="session")
def camvid_root(shared_dir: Path) -> Path:
    return _need(shared_dir / "datasets" / "camvid")


@pytest.fixture(scope="session")
def video_path(shared_dir: Path) -> Path:
    return _need(shared_dir / "videos" / "solidWhiteRight.mp4")


@pytest.fixture(scope="session")
def weights_dir(shared_dir: Path) -> Path:
    return _need(shared_dir / "weights")
