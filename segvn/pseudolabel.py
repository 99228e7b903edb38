"""Pseudo-label unlabelled frames with a teacher: ``python -m segvn.pseudolabel ckpt_path=PATH
data.unlabelled.streets=[NAME]`` (or ``pool.folders=[DIR]``, ``data.unlabelled.videos=[VIDEO]``).

The pool is the data layer's unlabelled set (:mod:`segvn.data.unlabelled`) of the teacher's data config,
with the ``pool.*`` shorthands applied; a pool frame that is also a validation/test frame is refused unless
``data.unlabelled.transductive=true``. Runs the teacher checkpoint over the pool at its training scale with
test-time augmentation and writes class-balanced pseudo-labels and their record into ``out`` (see
:mod:`segvn.inference.pseudolabel`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segvn.cli import Checkpoint, command
from segvn.errors import DataError
from segvn.inference.pseudolabel import PseudoLabelSettings, pseudolabel
from segvn.utils import save_resolved_config

log = logging.getLogger("segvn.pseudolabel")


def pool_settings(cfg: DictConfig) -> dict:
    """``data.unlabelled`` with the ``pool.*`` shorthands applied: ``pool.folders`` are added to its folders,
    ``pool.pattern`` and ``pool.max_frames`` replace its own when set."""
    stored = OmegaConf.select(cfg, "data.unlabelled", default=None)
    unlabelled = dict(OmegaConf.to_container(stored, resolve=True)) if stored is not None else {}
    if cfg.pool.folders:
        unlabelled["folders"] = [*(unlabelled.get("folders") or []), *(str(f) for f in cfg.pool.folders)]
    if str(cfg.pool.pattern) != "*":
        unlabelled["pattern"] = str(cfg.pool.pattern)
    if cfg.pool.max_frames is not None:
        unlabelled["max_frames"] = cfg.pool.max_frames
    return unlabelled


def pool(cfg: DictConfig) -> list[Path]:
    """The frames to pseudo-label: the unlabelled set of ``cfg.data`` (checked against validation/test)."""
    dm = instantiate(cfg.data, unlabelled=pool_settings(cfg))
    if not dm.unlabelled.configured:
        raise DataError(
            "pool: no unlabelled frames asked for; set data.unlabelled.streets=[NAME,...], "
            "data.unlabelled.folders=[DIR,...] or data.unlabelled.videos=[VIDEO,...] (or pool.folders=[DIR,...])"
        )
    frames = dm.unlabelled_frames()
    if not frames:
        raise DataError(
            f"pool: no frames matching {dm.unlabelled.settings['pattern']!r} in {dm.unlabelled.describe()}; "
            "set data.unlabelled.streets/folders/videos=[...] (or pool.folders=[DIR,...] and pool.pattern)"
        )
    by_source: dict[str, int] = {}
    for f in frames:
        by_source[f.source] = by_source.get(f.source, 0) + 1
    log.info("pool: %s", ", ".join(f"{n} from {src}" for src, n in by_source.items()))
    return [f.image for f in frames]


def run(cfg: DictConfig, ckpt: Checkpoint) -> dict:
    """Pseudo-label the pool as ``cfg`` says; returns the record written to ``pseudolabel.json``."""
    settings = PseudoLabelSettings(
        scales=tuple(float(s) for s in cfg.scales),
        flip=bool(cfg.flip),
        keep=float(cfg.keep),
        max_threshold=float(cfg.max_threshold),
        flow_agree=bool(cfg.flow_agree),
        flow_scale=float(cfg.flow_scale),
    )
    frames = pool(cfg)
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
    if "flow_dropped" in record:
        log.info(
            "flow_agree: %.1f%% of the confident pixels dropped (neighbours disagree)",
            100 * record["flow_dropped"],
        )
    return record


main = command("pseudolabel", from_checkpoint=True)(run)

if __name__ == "__main__":
    main()
