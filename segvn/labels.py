"""Import labels from labelling tools, or export a street's labels to them.

``python -m segvn.labels import format=cvat|labelstudio|cityscapes|matlab src=EXPORT street=NAME out=DATA_ROOT``
``python -m segvn.labels export format=cvat|cityscapes street=STREET_DIR out=DIR``
``python -m segvn.labels prelabel ckpt_path=PATH street=STREET_DIR format=cvat|labelstudio|palette [out=DIR]``
``python -m segvn.labels next n=K ckpt_path=PATH street=STREET_DIR [min_gap=3 min_distance=0.02 out=DIR]``

Only composes the config (:class:`~segvn.utils.command_configs.LabelsConfig`) and calls
:mod:`segvn.data.labelformats`. Per-file problems are reported and skipped; bad settings, or an import
where nothing could be imported, end in one error line and exit 1.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from segvn.cli import command
from segvn.data.labelformats import REPORT_NAME, export_labels, import_labels
from segvn.errors import ConfigError
from segvn.utils.command_configs import LABEL_ACTION_NEEDS, LabelAction
from segvn.utils.schema import require

log = logging.getLogger("segvn.labels")
ACTIONS = tuple(a.value for a in LabelAction)


def _check_needs(cfg: DictConfig) -> None:
    """:class:`ConfigError` for no action, or a setting the action cannot go without (``LABEL_ACTION_NEEDS``)."""
    if OmegaConf.is_missing(cfg, "action"):
        raise ConfigError(
            f"action=None: start with {', '.join(f'`{a}`' for a in ACTIONS)} (python -m segvn.labels import ...)"
        )
    require(cfg, *LABEL_ACTION_NEEDS[str(cfg.action)], needed_for=str(cfg.action))


def _number(cfg: DictConfig, key: str, kind: type, minimum: float) -> int | float:
    """``cfg[key]`` as ``kind`` (int or float), at least ``minimum``; ``ConfigError`` naming it otherwise."""
    value = cfg.get(key)
    try:
        number = kind(value)
        ok = not isinstance(value, bool) and number >= minimum and (kind is float or number == float(value))
    except (TypeError, ValueError, OverflowError):  # text, a list, inf for a whole number
        ok = False
    if not ok:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(
            f"{key}={value!r}: give {what} >= {minimum:g} (python -m segvn.labels next {key}=...)"
        )
    return number


def _next(cfg: DictConfig) -> str:
    """``next``: propose the next ``n`` frames of the street to label (segvn.inference.next_frames)."""
    from segvn.inference.next_frames import next_frames  # torch only when a model runs

    count = _number(cfg, "n", int, 1)
    min_gap = _number(cfg, "min_gap", int, 0)
    min_distance = _number(cfg, "min_distance", float, 0.0)
    table, chosen = next_frames(
        cfg.ckpt_path,
        cfg.street,
        int(count),
        cfg.out or Path(cfg.paths.output_dir),
        min_gap=int(min_gap),
        min_distance=float(min_distance),
        device=cfg.device,
        image_size=list(cfg.image_size) if cfg.image_size else None,
        batch_size=int(cfg.batch_size),
        frames_dir=cfg.frames_dir,
    )
    return f"next: proposed {len(chosen)} of n={count} frame(s) of {cfg.street} to label, listed in {table}"


def run(cfg: DictConfig) -> str:
    """Run the import, export, pre-labelling or next-frames proposal named by ``cfg.action``; returns the
    summary line."""
    _check_needs(cfg)
    if cfg.action == "next":
        return _next(cfg)
    mapping = OmegaConf.to_container(cfg.mapping) if isinstance(cfg.mapping, DictConfig) else cfg.mapping
    mapping = mapping or {}
    if not isinstance(mapping, dict):
        raise ConfigError(
            f"mapping={cfg.mapping}: give a dict such as mapping={{bike: ignore, pedestrian: person}}"
        )
    fmt = str(cfg.format)
    if cfg.action == "import":
        root = Path(cfg.out or cfg.default_data_root)
        report = import_labels(
            fmt,
            cfg.src,
            root / str(cfg.street),
            mapping=mapping,
            overwrite=bool(cfg.overwrite),
            classes=list(cfg.classes) if cfg.classes else None,
            tasks=cfg.tasks,
            report_path=Path(cfg.paths.output_dir) / REPORT_NAME,
            frames_dir=cfg.frames_dir,
            labels_dir=cfg.labels_dir,
        )
        return report.line()
    if cfg.action == "prelabel":
        from segvn.inference.prelabel import prelabel  # torch only when a model runs

        out, count = prelabel(
            cfg.ckpt_path,
            cfg.street,
            fmt,
            cfg.out or Path(cfg.paths.output_dir) / "prelabels",
            device=cfg.device,
            image_size=list(cfg.image_size) if cfg.image_size else None,
            batch_size=int(cfg.batch_size),
            all_frames=bool(cfg.all_frames),
            label_first_count=int(cfg.label_first),
        )
        return f"{fmt}: pre-labelled {count} frame(s) of {cfg.street} into {out}"
    out = export_labels(fmt, cfg.street, cfg.out, labels_dir=cfg.labels_dir)
    return f"{fmt}: exported the labels of {cfg.street} to {out}"


def _labels(cfg: DictConfig) -> str:
    line = run(cfg)
    log.info("%s", line)
    return line


_main = command("labels")(_labels)


def main() -> None:
    """Accept the action as the first word (``import``/``export``/``prelabel``/``next``) as well as ``action=...``."""
    if len(sys.argv) > 1 and sys.argv[1] in ACTIONS:
        sys.argv = [sys.argv[0], f"action={sys.argv[1]}", *sys.argv[2:]]
    _main()


if __name__ == "__main__":
    main()
