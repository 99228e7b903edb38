"""Validate a dataset: ``python -m segvn.check [data=camvid|vietnam|...] [data.root=DIR] [level=full]``.

Prints a table of findings (errors first) and the frames/labels per split and street (and per source of
the unlabelled set, ``data.unlabelled``), writes
``check.json`` into the run directory, and exits with status 1 when there is an error. What is
an error and what a warning: :mod:`segvn.data.check`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from segvn.cli import command
from segvn.data.check import CheckReport, check_dataset
from segvn.data.unlabelled import check_unlabelled
from segvn.errors import DataError
from segvn.utils import save_resolved_config
from segvn.utils.io import write_json

log = logging.getLogger("segvn.check")


def render(report: CheckReport, limit: int) -> list[Table]:
    """Rich tables: frames and labels per split and street, then the findings worst first."""
    counts = Table(title=f"{report.source} at {report.root}")
    for col in ("split", "street", "frames", "labels"):
        counts.add_column(col, justify="right" if col in ("frames", "labels") else "left")
    for split, streets in report.counts.items():
        for street, n in streets.items():
            counts.add_row(split, street, str(n["frames"]), str(n["labels"]))
    found = Table(title=f"{len(report.errors)} error(s), {len(report.warnings)} warning(s) ({report.level})")
    for col in ("severity", "kind", "split", "finding"):
        found.add_column(col, overflow="fold")
    for f in report.sorted()[:limit]:
        style = "bold red" if f.severity == "error" else "yellow"
        found.add_row(f"[{style}]{f.severity}[/]", f.kind, f.split or "", f.message)
    if not report.findings:
        found.add_row("[green]ok[/]", "", "", "no findings")
    if len(report.findings) > limit:
        found.add_row("", "", "", f"... and {len(report.findings) - limit} more in check.json")
    return [counts, found]


def check(cfg: DictConfig) -> CheckReport:
    """Check ``cfg.data`` at ``cfg.level``; write ``check.json``; raise :class:`DataError` on errors."""
    out = Path(cfg.paths.output_dir)
    save_resolved_config(cfg, out / "config.yaml")
    dm = instantiate(cfg.data)
    splits = [str(s) for s in cfg.splits]
    report = check_dataset(dm, str(cfg.level), dm.check["warn_only"], splits, raise_on_error=False)
    check_unlabelled(dm, report, str(cfg.level), dm.check["warn_only"])  # data.unlabelled, when set
    console = Console(width=cfg.width)
    for table in render(report, cfg.limit):
        console.print(table)
    path = out / "check.json"
    write_json(path, report.to_dict())
    log.info("dataset check -> %s", path)
    if not report.ok:
        raise DataError(
            f"dataset check: {len(report.errors)} error(s) in {report.root} (see {path}); fix the data or "
            "demote a kind with data.check.warn_only=[kind,...]"
        )
    return report


main = command("check")(check)


if __name__ == "__main__":
    main()
