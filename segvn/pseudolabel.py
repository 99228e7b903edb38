"""Pseudo-label unlabelled frames with a teacher: ``python -m segvn.pseudolabel ckpt_path=PATH pool.folders=[DIR]``.

Runs the teacher checkpoint over the pool at its training scale with test-time augmentation and writes
class-balanced pseudo-labels and their record into ``out`` (see :mod:`segvn.inference.pseudolabel`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from segvn.cli import Checkpoint, command
from segvn.data.pseudo import pool_frames
from segvn.inference.pseudolabel import PseudoLabelSettings, pseudolabel
from segvn.utils import save_resolved_config

log = logging.getLogger("segvn.pseudolabel")


def run(cfg: DictConfig, ckpt: Checkpoint) -> dict:
    """Pseudo-label the pool as ``cfg`` says; returns the record written to ``pseudolabel.json``."""
    settings = PseudoLabelSettings(
        scales=tuple(float(s) for s in cfg.scales),
        flip=bool(cfg.flip),
        keep=float(cfg.keep),
        max_threshold=float(cfg.max_threshold),
    )
    frames = pool_frames(list(cfg.pool.folders), str(cfg.pool.pattern), cfg.pool.max_frames)
    run_dir = Path(cfg.paths.output_dir)
    save_resolved_config(cfg, run_dir / "config.yaml")
    out = Path(cfg.out).expanduser() if cfg.out else run_dir / "pseudo"
    log.info("pseudo-labelling %d frame(s) with %s into %s", len(frames), ckpt.path, out)

    def progress(done: int, total: int) -> None:
        if done == total or done % 25 == 0:
            log.info("teacher: %d/%d frame(s)", done, total)

    record = pseudolabel(ckpt, frames, out, settings, cfg.device, progress)
    kept = ", ".join(f"{n} {v:.0%}" for n, v in record["kept_share"].items() if v is not None)
    log.info(
        "%d frame(s): %.0f%% of pixels kept (%s) -> %s", len(frames), 100 * record["kept_pixels"], kept, out
    )
    return record


main = command("pseudolabel", from_checkpoint=True)(run)

if __name__ == "__main__":
    main()
