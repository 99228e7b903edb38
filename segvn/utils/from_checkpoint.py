"""Let commands that start from a checkpoint reuse its config through Hydra.

``python -m segvn.evaluate ckpt_path=X data.root=Y`` must rebuild the data and model settings
stored in X, with command-line overrides winning. Before Hydra starts, the stored ``data`` and
``model`` configs are written as the options ``data=checkpoint`` and ``model=checkpoint`` of a
temporary config folder added to Hydra's search path; the command's config selects them by
default, so ``data.root=Y`` edits the stored data config and ``data=camvid`` replaces it.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from segvn.models.checkpoint import CheckpointError, checkpoint_config, load_checkpoint

log = logging.getLogger("segvn")


def _arg(argv: list[str], key: str) -> str | None:
    for a in argv:
        if a.startswith(f"{key}="):
            return a.split("=", 1)[1]
    return None


def add_checkpoint_configs(argv: list[str] | None = None) -> None:
    """Rewrite ``sys.argv`` in place so Hydra sees the checkpoint's configs; exits on a bad checkpoint."""
    argv = sys.argv if argv is None else argv
    if any(a in ("--help", "-h", "--info", "--hydra-help") for a in argv[1:]):
        return
    ckpt_path = _arg(argv[1:], "ckpt_path")
    if ckpt_path is None:
        logging.basicConfig(format="[%(levelname)s] %(message)s")
        log.error(
            "ckpt_path=PATH is required: the checkpoint to %s", Path(argv[0]).stem.replace("__main__", "use")
        )
        sys.exit(1)
    try:
        cfg = checkpoint_config(load_checkpoint(ckpt_path))
    except CheckpointError as err:
        logging.basicConfig(format="[%(levelname)s] %(message)s")
        log.error("%s", err)
        sys.exit(1)
    tmp = Path(tempfile.mkdtemp(prefix="segvn_ckpt_conf_"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    if "data" in cfg and "root" in cfg.data and "source" in cfg.data:
        cfg.data.source.root = "${data.root}"  # so data.root=DIR moves the source too
    for group in ("data", "model"):
        if group in cfg and cfg[group] is not None:
            (tmp / group).mkdir()
            (tmp / group / "checkpoint.yaml").write_text(OmegaConf.to_yaml(cfg[group]))
    argv.append(f"hydra.searchpath=[file://{tmp}]")
