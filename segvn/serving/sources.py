"""A task's image as Label Studio gives it, read only where the server is allowed to read.

- ``/data/local-files/?d=REL`` (Label Studio's local-files storage): ``REL`` under one of ``roots``;
- ``/data/upload/...`` (files uploaded to Label Studio): under ``upload_dir`` when it is set (Label
  Studio's ``media/upload`` folder), else fetched from ``label_studio_url``;
- ``http(s)://host/...``: only from the host of ``label_studio_url`` or one of ``allowed_hosts``;
- a plain file path: under one of ``roots``.

A path is resolved (symbolic links followed) before the check, so neither ``..`` nor a link leads out
of a root; anything else (another scheme, another host, a path outside) is an :class:`ImageSourceError`
and nothing is read. An image over ``max_pixels`` (read from its header) or ``max_bytes`` is an
:class:`ImageTooLargeError`, refused before it is decoded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urljoin, urlparse

import numpy as np
from PIL import Image

from segvn.data.io import to_rgb
from segvn.errors import DataError, ImageSourceError, ImageTooLargeError, InputNotFoundError

LOCAL_FILES = "/data/local-files/"
UPLOADS = "/data/upload/"


@dataclass
class ImageSources:
    """Where images may come from, and how large they may be (see the module docstring)."""

    roots: list[Path] = field(default_factory=list)
    upload_dir: Path | None = None
    label_studio_url: str | None = None
    label_studio_token: str | None = None
    allowed_hosts: list[str] = field(default_factory=list)
    max_pixels: int = 50_000_000
    max_bytes: int = 200_000_000
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        self.roots = [Path(r).expanduser().resolve() for r in self.roots]
        self.upload_dir = Path(self.upload_dir).expanduser().resolve() if self.upload_dir else None

    def hosts(self) -> set[str]:
        """``host[:port]`` of every server images may be fetched from."""
        hosts = {h.lower() for h in self.allowed_hosts}
        if self.label_studio_url:
            hosts.add(urlparse(self.label_studio_url).netloc.lower())
        return hosts

    def learn_token(self, hostname: Any, token: Any) -> None:
        """Take the API token Label Studio sends in /setup, only when ``hostname`` is ``label_studio_url``'s
        host and no ``label_studio_token`` is set (uploads are then fetched with it)."""
        if self.label_studio_token or not (isinstance(hostname, str) and isinstance(token, str) and token):
            return
        if self._is_label_studio(urlparse(hostname).netloc):
            self.label_studio_token = token

    def read(self, ref: Any) -> tuple[np.ndarray, str]:
        """The RGB ``uint8`` frame of an image reference, and its file name."""
        if not isinstance(ref, str) or not ref:
            raise DataError(f"image reference {ref!r}: expected a URL or a path in the task's data")
        parsed = urlparse(ref)
        if parsed.scheme in ("http", "https"):
            if parsed.path.startswith(LOCAL_FILES) and self._is_label_studio(parsed.netloc):
                return self._local_files(parsed.query, ref)
            return self._fetch(ref)
        if parsed.scheme:
            raise ImageSourceError(
                f"{ref}: {parsed.scheme}:// images are not read; serve them through Label Studio "
                "(local files or uploads) or an allowed http(s) host"
            )
        if parsed.path.startswith(LOCAL_FILES):
            return self._local_files(parsed.query, ref)
        if parsed.path.startswith(UPLOADS):
            if self.upload_dir is not None:
                rel = unquote(parsed.path[len(UPLOADS) :])
                return self._file(self._under([self.upload_dir], rel, ref, "upload_dir"), ref)
            if self.label_studio_url:
                return self._fetch(urljoin(self.label_studio_url, ref))
            raise ImageSourceError(
                f"{ref}: an upload of Label Studio; set upload_dir=<Label Studio's media/upload folder> "
                "or label_studio_url=... (and label_studio_token) to read it"
            )
        return self._file(self._under(self.roots, unquote(ref), ref, "roots"), ref)

    def _is_label_studio(self, netloc: str) -> bool:
        return (
            bool(self.label_studio_url) and netloc.lower() == urlparse(self.label_studio_url).netloc.lower()
        )

    def _local_files(self, query: str, ref: str) -> tuple[np.ndarray, str]:
        rel = (parse_qs(query).get("d") or [""])[0]
        if not rel:
            raise DataError(f"{ref}: a local-files URL without ?d=<path>")
        return self._file(self._under(self.roots, rel, ref, "roots"), ref)

    @staticmethod
    def _under(roots: list[Path], rel: str, ref: str, setting: str) -> Path:
        """``rel`` under the first root that holds it, resolved; refused when it is under none."""
        if not roots:
            raise ImageSourceError(
                f"{ref}: no local folder is allowed ({setting}=[]); add the folder of the images to {setting}"
            )
        inside: list[Path] = []
        for root in roots:
            candidate = Path(rel) if Path(rel).is_absolute() else root / rel
            try:
                resolved = candidate.resolve()
            except (OSError, RuntimeError):  # a link loop
                continue
            if resolved.is_relative_to(root):
                if resolved.exists():
                    return resolved
                inside.append(resolved)
        if inside:
            return inside[0]  # under a root, but missing: "not found"
        raise ImageSourceError(
            f"{ref}: outside the allowed folders ({setting}={[str(r) for r in roots]}); "
            f"add its folder to {setting} or move the image there"
        )

    def _file(self, path: Path, ref: str) -> tuple[np.ndarray, str]:
        if not path.is_file():
            raise InputNotFoundError(f"{ref}: image not found ({path})")
        if path.stat().st_size > self.max_bytes:
            raise ImageTooLargeError(f"{ref}: over max_bytes={self.max_bytes}; give a smaller image")
        return self._decode(path.read_bytes(), ref), path.name

    def _fetch(self, url: str) -> tuple[np.ndarray, str]:
        import httpx

        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or parsed.netloc.lower() not in self.hosts():
            raise ImageSourceError(
                f"{url}: host {parsed.netloc or '?'} is not allowed; set label_studio_url to the Label Studio "
                "that serves it or add the host to allowed_hosts"
            )
        headers = {}
        if self.label_studio_token and self._is_label_studio(parsed.netloc):
            headers["Authorization"] = f"Token {self.label_studio_token}"
        try:
            with httpx.stream(
                "GET", url, headers=headers, timeout=self.timeout_s, follow_redirects=False
            ) as response:
                if response.status_code != 200:
                    raise DataError(f"{url}: HTTP {response.status_code}; the image cannot be downloaded")
                data = bytearray()
                for chunk in response.iter_bytes():
                    data.extend(chunk)
                    if len(data) > self.max_bytes:
                        raise ImageTooLargeError(
                            f"{url}: over max_bytes={self.max_bytes}; give a smaller image"
                        )
        except httpx.HTTPError as err:
            raise DataError(f"{url}: cannot download the image ({type(err).__name__}: {err})") from None
        name = unquote(parsed.path).rsplit("/", 1)[-1]
        if parsed.path.startswith(LOCAL_FILES) or not name:
            name = (parse_qs(parsed.query).get("d") or [name])[0].rsplit("/", 1)[-1]
        return self._decode(bytes(data), url), name

    def _decode(self, data: bytes, ref: str) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > self.max_pixels:
                    raise ImageTooLargeError(
                        f"{ref}: {width}x{height} pixels, over max_pixels={self.max_pixels}; give a smaller image"
                    )
                img.load()
                return to_rgb(img)
        except (ImageTooLargeError, Image.DecompressionBombError) as err:
            if isinstance(err, ImageTooLargeError):
                raise
            raise ImageTooLargeError(f"{ref}: {err}") from None
        except Exception as err:  # noqa: BLE001 - PIL raises many types on damaged data
            raise DataError(f"{ref}: cannot read the image ({type(err).__name__}: {err})") from None
