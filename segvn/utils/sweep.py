"""The table of a multirun: ``sweep_summary.csv`` and ``sweep_summary.md`` in the sweep directory.

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks.sweep_summary`` in
``conf/hydra/default.yaml``). When a job of a multirun ends, it writes ``job_status.json`` into the
job's own directory (overrides, ok/failed and the error's first line, the optimised metric, epochs
and seconds from the job's ``metrics.json``), then rebuilds both tables from every
``job_status.json`` under the sweep directory, under a file lock. So the table is right however the
jobs run (in this process, in submitit/SLURM processes, several at once) and an interrupted sweep
still has one. At the end of the multirun the best job (and Optuna's ``optimization_results.yaml``)
is added, and the command exits with status 1 if a job failed. Single runs are left alone.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from segvn.utils.io import write_atomic, write_csv, write_json
from segvn.utils.run import SweepJobError

log = logging.getLogger("segvn.sweep")

JOB_STATUS = "job_status.json"
SUMMARY_CSV = "sweep_summary.csv"
SUMMARY_MD = "sweep_summary.md"
DEFAULT_METRIC = "val/miou_best"


def first_line(err: BaseException | None) -> str:
    """The error as one line: its message's first line, with the type for errors that are not segvn's."""
    if err is None:
        return ""
    text = str(err).strip().splitlines()
    msg = text[0] if text else ""
    if isinstance(err, SweepJobError):
        return msg
    return f"{type(err).__name__}: {msg}" if msg else type(err).__name__


def _number(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def job_record(config: DictConfig, job_return: JobReturn, metric: str = DEFAULT_METRIC) -> dict[str, Any]:
    """What ``job_status.json`` holds for one ended job."""
    hc = config.hydra
    out_dir = Path(str(hc.runtime.output_dir))
    ok = job_return.status == JobStatus.COMPLETED
    metric = str(config.get("optimized_metric") or metric)
    record: dict[str, Any] = {
        "job": int(hc.job.num) if hc.job.get("num") is not None else None,
        "overrides": " ".join(str(o) for o in (hc.overrides.task or [])),
        "status": "ok" if ok else "failed",
        "error": "" if ok else first_line(job_return._return_value),
        "metric_name": metric,
        "metric": None,
        "epochs": None,
        "seconds": None,
        "output_dir": str(out_dir),
    }
    metrics_file = out_dir / "metrics.json"
    if metrics_file.is_file():
        try:
            summary = json.loads(metrics_file.read_text())
            record["metric"] = _number((summary.get("metrics") or {}).get(metric))
            record["epochs"] = summary.get("epochs")
            record["seconds"] = summary.get("seconds")
        except (OSError, ValueError, AttributeError) as err:
            log.warning("%s: unreadable (%s); the summary row has no metrics", metrics_file, err)
    elif ok:
        record["metric"] = _number(job_return._return_value)
    return record


def read_records(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every ``job_status.json`` under the sweep directory, by job number."""
    records = []
    for path in Path(sweep_dir).glob(f"**/{JOB_STATUS}"):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # being replaced right now, or broken: skip this time
            continue
    return sorted(records, key=lambda r: (r.get("job") is None, r.get("job") or 0, r.get("output_dir", "")))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def best_record(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ok job with the highest metric (``val/miou_best``: higher is better)."""
    scored = [r for r in records if r.get("status") == "ok" and r.get("metric") is not None]
    return max(scored, key=lambda r: r["metric"]) if scored else None


def write_summary(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Rebuild ``sweep_summary.csv`` and ``sweep_summary.md`` from the job records (locked, atomic)."""
    from filelock import FileLock

    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(sweep_dir / ".sweep_summary.lock"), timeout=120):
        records = read_records(sweep_dir)
        metric = records[0].get("metric_name", DEFAULT_METRIC) if records else DEFAULT_METRIC
        header = ["job", "overrides", "status", "error", metric, "epochs", "seconds", "dir"]
        rows = [
            [
                r.get("job"),
                r.get("overrides", ""),
                r.get("status", ""),
                r.get("error", ""),
                r.get("metric"),
                r.get("epochs"),
                r.get("seconds"),
                _relative(r.get("output_dir", ""), sweep_dir),
            ]
            for r in records
        ]
        write_csv(sweep_dir / SUMMARY_CSV, header, rows)
        write_atomic(sweep_dir / SUMMARY_MD, _markdown(sweep_dir, header, rows, records, metric))
    return records


def _markdown(
    sweep_dir: Path, header: list[str], rows: list[list[Any]], records: list[dict[str, Any]], metric: str
) -> str:
    n_failed = sum(r.get("status") != "ok" for r in records)
    lines = [
        f"# Sweep {sweep_dir.name}",
        "",
        f"{len(records)} jobs: {len(records) - n_failed} ok, {n_failed} failed.",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *("| " + " | ".join(_cell(v) for v in row) + " |" for row in rows),
        "",
    ]
    best = best_record(records)
    if best is not None:
        lines += [
            f"Best job: {best.get('job')} ({best.get('overrides') or 'no overrides'}), "
            f"{metric} = {best['metric']:.4g}, in {_relative(best.get('output_dir', ''), sweep_dir)}",
            "",
        ]
    optuna = sweep_dir / "optimization_results.yaml"
    if optuna.is_file():
        try:
            res = OmegaConf.to_container(OmegaConf.load(optuna))
            params = " ".join(f"{k}={v}" for k, v in (res.get("best_params") or {}).items())
            lines += [f"Optuna's best trial: {params}, value {res.get('best_value')}", ""]
        except Exception as err:  # a report must not fail on a broken results file
            lines += [f"({optuna.name} unreadable: {err})", ""]
    return "\n".join(lines)


def _is_multirun(config: DictConfig) -> bool:
    mode = OmegaConf.select(config, "hydra.mode")
    return mode == RunMode.MULTIRUN or str(mode) in ("MULTIRUN", "RunMode.MULTIRUN")


class SweepSummary(Callback):
    """Hydra callback: the sweep table, rewritten as each job ends; non-zero exit when a job failed."""

    def __init__(self, fail_on_job_failure: bool = True, metric: str = DEFAULT_METRIC) -> None:
        self.fail_on_job_failure = fail_on_job_failure
        self.metric = metric

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # before the sweeper starts: Optuna's storage (sqlite:///<sweep dir>/optuna.db) needs the folder
        Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        record = job_record(config, job_return, self.metric)
        write_json(Path(record["output_dir"]) / JOB_STATUS, record)
        write_summary(str(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        records = write_summary(sweep_dir)
        failed = [r for r in records if r.get("status") != "ok"]
        log.info("sweep summary: %s", sweep_dir / SUMMARY_MD)
        if failed and self.fail_on_job_failure:
            log.error(
                "%d of %d jobs failed (first: job %s: %s); see %s",
                len(failed),
                len(records),
                failed[0].get("job"),
                failed[0].get("error"),
                sweep_dir / SUMMARY_MD,
            )
            sys.exit(1)


__all__ = ["SweepSummary", "best_record", "job_record", "read_records", "write_summary"]
