"""Fail when a tracked file is over 1 MB: checkpoints, videos and result dumps stay out of git.

Run by ``make lint`` (``make check-size``). Reads ``git ls-files`` from the repository root, so it checks
what a clone holds; files staged for deletion or missing from the work tree are skipped.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LIMIT_BYTES = 1_000_000


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    too_big = []
    for name in filter(None, listed.decode().split("\0")):
        path = root / name
        if path.is_file() and not path.is_symlink() and path.stat().st_size > LIMIT_BYTES:
            too_big.append((path.stat().st_size, name))
    for size, name in sorted(too_big, reverse=True):
        print(f"{name}: {size / 1e6:.1f} MB is over the {LIMIT_BYTES / 1e6:.0f} MB limit for tracked files")
    if too_big:
        print("keep large files out of git (outputs/, ../shared, or a release asset)", file=sys.stderr)
        return 1
    print(f"check-size: no tracked file over {LIMIT_BYTES / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
