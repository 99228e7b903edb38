"""Prediction spread over machines: each machine takes a shard of the inputs, one summary over all shards.

``python -m segvn.predict input=DIR shard=i num_shards=n`` predicts the inputs whose file name hashes to
``i`` (:func:`shard_of`: BLAKE2 of the name, so every machine computes the same split without talking to
the others, a video keeps its shard when others are added, and the shards come out about equal). As a
Hydra multirun over ``shard=0,1,...,n-1`` with a launcher (``hydra/launcher=slurm`` on a cluster,
``submitit_local`` on one machine) each job writes into its own job folder, and :class:`ShardMerge` (a
Hydra callback in ``conf/predict.yaml``) writes ``shards_summary.json`` in the sweep folder when the
sweep ends: frames, time, class shares over all shards, every input once, and the shards that failed or
are missing. A failed shard is re-run alone into its job folder (``hydra.run.dir=SWEEP/<job>``; the
inputs it finished are kept) and ``python -m segvn.merge sweep_dir=SWEEP`` writes the summary again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from segvn.errors import DataError
from segvn.utils.io import write_json

log = logging.getLogger(__name__)

SHARDS_SUMMARY = "shards_summary.json"
T = TypeVar("T")


def shard_of(name: str, num_shards: int) -> int:
    """The shard (0 .. ``num_shards``-1) of an input, from its file name alone.

    >>> [shard_of(n, 2) for n in ("a.mp4", "b.mp4", "c.mp4")] == [shard_of(n, 2) for n in ("a.mp4", "b.mp4", "c.mp4")]
    True
    >>> shard_of("anything.mp4", 1)
    0
    """
    digest = hashlib.blake2b(Path(name).name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_shards


def take_shard(paths: Sequence[T], shard: int, num_shards: int, key=lambda p: Path(p).name) -> list[T]:
    """The items of ``paths`` that fall into ``shard`` (all of them for one shard)."""
    if num_shards == 1:
        return list(paths)
    return [p for p in paths if shard_of(key(p), num_shards) == shard]


def _job_summaries(sweep_dir: Path) -> list[tuple[Path, dict[str, Any] | None]]:
    """Each job folder of a sweep (a folder holding ``.hydra/``) with its ``summary.json`` (or ``None``)."""
    jobs = []
    for hydra_dir in sorted(sweep_dir.glob("*/.hydra")):
        job = hydra_dir.parent
        try:
            summary = json.loads((job / "summary.json").read_text())
        except (OSError, ValueError):
            summary = None
        jobs.append((job, summary))
    return jobs


def merge_shards(sweep_dir: str | Path) -> dict[str, Any]:
    """One summary over the shards of a prediction sweep, written to ``SWEEP/shards_summary.json``."""
    sweep = Path(sweep_dir).expanduser()
    jobs = _job_summaries(sweep)
    if not jobs:
        raise DataError(f"sweep_dir={sweep_dir}: no job folders (with .hydra/) of a segvn.predict multirun")
    shards: dict[int, dict[str, Any]] = {}
    failures: list[dict[str, Any]] = []
    num_shards = None
    for job, summary in jobs:
        if summary is None:
            failures.append(
                {"job": job.name, "error": "no summary.json: the job did not start or was killed early"}
            )
            continue
        n, i = int(summary.get("num_shards", 1)), int(summary.get("shard", 0))
        num_shards = num_shards or n
        if n != num_shards:
            raise DataError(f"sweep_dir={sweep_dir}: jobs split the inputs into {num_shards} and {n} shards")
        shards[i] = {"job": job.name, **summary}
        if summary.get("status") != "complete":
            failures.append(
                {
                    "job": job.name,
                    "shard": i,
                    "status": summary.get("status"),
                    "errors": summary.get("errors", []),
                }
            )
    num_shards = num_shards or 0
    missing = [i for i in range(num_shards) if i not in shards]
    inputs = [entry for i in sorted(shards) for entry in shards[i].get("inputs", [])]
    frames = sum(int(s.get("frames") or 0) for s in shards.values())
    classes = next((list(s["mean_class_shares"]) for s in shards.values() if s.get("mean_class_shares")), [])
    shares = {
        c: sum(
            (s.get("mean_class_shares") or {}).get(c, 0.0) * int(s.get("frames") or 0)
            for s in shards.values()
        )
        / frames
        if frames
        else None
        for c in classes
    }
    merged = {
        "status": "complete" if shards and not failures and not missing else "partial",
        "sweep_dir": str(sweep),
        "num_shards": num_shards,
        "shards_done": sorted(i for i, s in shards.items() if s.get("status") == "complete"),
        "shards_missing": missing,
        "failures": failures,
        "frames": frames,
        "inputs": len(inputs),
        "seconds_total": sum(float(s.get("seconds") or 0) for s in shards.values()),
        "seconds_longest_shard": max((float(s.get("seconds") or 0) for s in shards.values()), default=0.0),
        "fps_per_shard": {str(i): s.get("fps") for i, s in sorted(shards.items())},
        "mean_class_shares": shares,
        "per_input": [
            {
                "input": e.get("input"),
                "frames": e.get("frames"),
                "output": e.get("output"),
                "error": e.get("error"),
            }
            for e in inputs
        ],
    }
    write_json(sweep / SHARDS_SUMMARY, merged)
    log.info(
        "shards: %d of %d complete, %d frame(s) of %d input(s) -> %s",
        len(merged["shards_done"]), num_shards, frames, len(inputs), sweep / SHARDS_SUMMARY,
    )  # fmt: skip
    return merged


class ShardMerge(Callback):
    """Hydra callback of ``segvn.predict``: after a multirun over shards, :func:`merge_shards` of the sweep."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        return None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if int(OmegaConf.select(config, "num_shards", default=1) or 1) > 1:
            try:
                merge_shards(str(config.hydra.sweep.dir))
            except DataError as err:
                log.error("%s", err)


__all__ = ["SHARDS_SUMMARY", "ShardMerge", "merge_shards", "shard_of", "take_shard"]
