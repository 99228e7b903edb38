"""Merge the shards of a prediction sweep: ``python -m segvn.merge sweep_dir=SWEEP``.

Writes ``SWEEP/shards_summary.json`` (see :mod:`segvn.inference.fleet`); a multirun of ``segvn.predict``
over ``shard=`` does this by itself at its end, so this is for after re-running a shard alone.
"""

from __future__ import annotations

from omegaconf import DictConfig

from segvn.cli import command
from segvn.errors import PartialResultError
from segvn.inference.fleet import merge_shards


def merge(cfg: DictConfig) -> dict:
    """Merge the shard summaries of ``cfg.sweep_dir``; exit 1 when a shard is missing or failed."""
    merged = merge_shards(cfg.sweep_dir)
    if merged["status"] != "complete":
        raise PartialResultError(
            f"sweep_dir={cfg.sweep_dir}: shards missing {merged['shards_missing']}, failed "
            f"{[f.get('shard', f['job']) for f in merged['failures']]}; re-run them (shard=i num_shards="
            f"{merged['num_shards']} hydra.run.dir=SWEEP/<job>) and merge again"
        )
    return merged


main = command("merge")(merge)

if __name__ == "__main__":
    main()
