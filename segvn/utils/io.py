"""Writing results that people and programs read: JSON and CSV, atomically and NaN-safe; safe targets.

Every ``*.json`` that segvn writes goes through :func:`write_json`: through a temporary file and a
rename, so a reader (or a run killed half-way) never sees half a file, and with NaN/inf written as
``null`` so the file is strict JSON that any tool parses.

Every file segvn writes lands inside the folder the user named: a writer that opens its target itself
(PIL, OpenCV, PyAV, ONNX, ``open``) first calls :func:`replace_link`, so an existing symbolic link at the
target is removed and replaced by a regular file instead of being followed to the file it points to;
:func:`write_atomic` renames over the link, which replaces it too. Inputs found inside a folder or an
archive someone else made are checked with :func:`inside`, and archives are unpacked by
:func:`unpack_zip` under a cap on their member count and unpacked size.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segvn.errors import DataError

log = logging.getLogger("segvn")

MAX_ARCHIVE_MEMBERS = 20_000
"""Most members an archive may hold to be unpacked (zip-bomb guard: each member is a file on disk).

Label exports are the archives segvn unpacks. CVAT writes two or three files per frame, so some 6,000
labelled frames fit; Label Studio writes one PNG per class painted per frame, 2,500 frames even with all
8 classes in every frame -- more than a street's labels (CamVid has 701 labelled frames in all). A larger
export can be unpacked by hand and given as a folder.
"""

MAX_ARCHIVE_BYTES = 8 * 1024**3
"""Most bytes (8 GiB) an archive may unpack to, summed over its members (zip-bomb guard).

A full-HD mask PNG is at most a few hundred kB, so tens of thousands of masks fit; a zip that claims
more is refused before anything is unpacked. The sizes are the ones the archive declares, which
:mod:`zipfile` enforces while unpacking (it stops a member at its declared size).
"""


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


def _warn_link(path: Path) -> bool:
    """Log that the link at ``path`` is replaced (its target left alone); ``False`` when it is no link."""
    if not path.is_symlink():
        return False
    log.warning(
        "%s is a symbolic link (to %s): replaced by a regular file; the file it points to is left as it is",
        path,
        os.readlink(path),
    )
    return True


def replace_link(path: str | Path) -> Path:
    """Make ``path`` safe to write: a symbolic link there is removed (and logged), never followed.

    Call it just before a library opens ``path`` for writing (PIL, OpenCV, PyAV, ``open``): they follow a
    link and would overwrite the file it points to, possibly outside the output folder. Folders on the
    way (``out/labels`` itself a link) are the user's layout and stay followed. Returns ``path``.
    """
    path = Path(path)
    if _warn_link(path):
        path.unlink()
    return path


class LinkSafeFileHandler(logging.FileHandler):
    """:class:`logging.FileHandler` (the run's ``<task>.log``) that replaces a link at its file, never appends through it."""

    def __init__(self, filename: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        replace_link(filename)
        super().__init__(filename, *args, **kwargs)


def inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path``, with every link resolved, lies under ``root`` (resolved too).

    For inputs found in a folder someone else made (a labelling tool's export): a file there that is a
    link to a file elsewhere is reported and skipped, not read.
    """
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):  # a link loop
        return False


def unpack_zip(
    archive: str | Path,
    dest: str | Path,
    setting: str = "src",
    max_members: int | None = None,
    max_bytes: int | None = None,
) -> Path:
    """Unpack a zip into ``dest``, refusing (:class:`DataError` naming ``setting=archive`` and the cap) one
    with more than ``max_members`` members or more than ``max_bytes`` unpacked (default:
    :data:`MAX_ARCHIVE_MEMBERS` and :data:`MAX_ARCHIVE_BYTES`, read at the call).

    :mod:`zipfile` drops absolute paths and ``..`` and writes links as plain files, so every file lands
    under ``dest``; the caps keep a zip bomb from filling the disk.
    """
    dest = Path(dest)
    max_members = MAX_ARCHIVE_MEMBERS if max_members is None else max_members
    max_bytes = MAX_ARCHIVE_BYTES if max_bytes is None else max_bytes
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        if len(members) > max_members:
            raise DataError(
                f"{setting}={archive}: {len(members)} files in the archive, more than the {max_members} "
                "segvn unpacks (MAX_ARCHIVE_MEMBERS); unpack it yourself and give the folder"
            )
        total = sum(m.file_size for m in members)
        if total > max_bytes:
            raise DataError(
                f"{setting}={archive}: unpacks to {total} bytes, more than the {max_bytes} segvn unpacks "
                "(MAX_ARCHIVE_BYTES); unpack it yourself and give the folder"
            )
        zf.extractall(dest)
    return dest


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 hex digest of a file, read in chunks (archives and checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A killed process leaves the old file or the new one, never half of one (no fsync: this guards
    against crashes of segvn, not of the machine, and keeps frame extraction fast). The rename
    replaces a symbolic link at ``path`` (logged) instead of writing through it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = replace_link(path.with_name(f".{path.name}.{os.getpid()}.tmp"))
    if isinstance(data, str):
        data = data.encode()
    tmp.write_bytes(data)
    _warn_link(path)
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
