"""Tally the probes of a ``make reliability`` run: ``python -m tests.reliability.tally DIR``.

Reads the ``probes.*.json`` files the suite's workers wrote into DIR (``SEGVN_PROBE_REPORT``), writes
``DIR/summary.json`` and prints the figures as a Markdown table (the one in ``docs/reliability.md``).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from .conftest import MAX_FRAMES


def tally(folder: Path) -> dict:
    outcomes = [o for part in sorted(folder.glob("probes.*.json")) for o in json.loads(part.read_text())]
    kinds = Counter(o["kind"] for o in outcomes)
    return {
        "probes": len(outcomes),
        "clear_errors": kinds["clear_error"],
        "ran_as_they_should": kinds["ran"],
        "unclear_errors": kinds["unclear_error"],
        "silent_wrong_results": kinds["silent_wrong"],
        "unjudged": kinds["unjudged"],
        "writes_outside": sum(o["writes_outside"] for o in outcomes),
        f"tracebacks_over_{MAX_FRAMES}_frames": sum(o["traceback_frames"] > MAX_FRAMES for o in outcomes),
        "failed": sorted(o["name"] for o in outcomes if o["kind"] in ("silent_wrong", "unclear_error")),
    }


def table(summary: dict) -> str:
    rows = [(k.replace("_", " "), v) for k, v in summary.items() if k != "failed"]
    lines = ["| figure | count |", "| --- | ---: |", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/reliability")
    summary = tally(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table(summary))
    for name in summary["failed"]:
        print(f"not clear: {name}")


if __name__ == "__main__":
    main()
