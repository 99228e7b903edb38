"""Writing results that people and programs read: JSON and CSV, atomically and NaN-safe.

Every ``*.json`` that segvn writes goes through :func:`write_json`: through a temporary file and a
rename, so a reader (or a run killed half-way) never sees half a file, and with NaN/inf written as
``null`` so the file is strict JSON that any tool parses.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def json_safe(obj: Any, digits: int | None = 6) -> Any:
    """Plain JSON types: NaN/inf -> None, numpy and torch scalars -> Python, floats rounded to ``digits``."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v, digits) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist(), digits)
    if isinstance(obj, np.generic) or (hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0):
        obj = obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        return round(obj, digits) if digits is not None else obj
    return obj


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A killed process leaves the old file or the new one, never half of one (no fsync: this guards
    against crashes of segvn, not of the machine, and keeps frame extraction fast).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, str):
        data = data.encode()
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, obj: Any, digits: int | None = None) -> Path:
    """``obj`` as indented strict JSON (see :func:`json_safe`), written atomically."""
    text = json.dumps(json_safe(obj, digits), indent=2, allow_nan=False) + "\n"
    return write_atomic(path, text)


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """A CSV table (``None`` as an empty cell), written atomically."""
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return write_atomic(path, buf.getvalue())
