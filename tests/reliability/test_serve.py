"""Probes of ``python -m segvn.serve``: images outside the allowed roots or on other hosts are refused
without being read or fetched, and a broken checkpoint stops the server at start with one line."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from segvn.serving.sources import ImageSources

from ..test_serve import LABEL_CONFIG, TOKEN, auth, free_port, serving
from .conftest import run_segvn, tree_digest

pytestmark = [pytest.mark.reliability]


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """``root/`` (allowed: a frame and a link to the outside) and its sibling ``outside/`` (a frame, a file)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    frame = Image.fromarray(np.full((24, 32, 3), 90, np.uint8))
    frame.save(root / "inside.png")
    frame.save(outside / "secret.png")
    (outside / "keep.txt").write_text("keep")
    (root / "link.png").symlink_to(outside / "secret.png")
    return root, outside


@pytest.fixture
def other_host() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on loopback that is not allowed, recording every request it gets."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


OUTSIDE_REFS = {
    "dotdot": ("/data/local-files/?d=../outside/secret.png", "roots="),
    "absolute": ("{outside}/secret.png", "roots="),
    "link": ("/data/local-files/?d=link.png", "roots="),
    "file_url": ("file://{outside}/secret.png", "file://"),
    "other_host": ("http://{host}/secret.png", "allowed_hosts"),
    "upload": ("/data/upload/1/secret.png", "upload_dir="),
}


@pytest.mark.parametrize("kind", sorted(OUTSIDE_REFS))
def test_an_image_outside_the_allowed_places(probe, folders, other_host, kind: str) -> None:
    root, outside = folders
    host, hits = other_host
    probe.guard(outside)
    ref, needle = OUTSIDE_REFS[kind]
    ref = ref.format(outside=outside, host=host)
    sources = ImageSources(roots=[root], allowed_hosts=["127.0.0.1:1"])
    assert sources.read("/data/local-files/?d=inside.png")[0].shape == (24, 32, 3)
    with pytest.raises(Exception) as err:
        sources.read(ref)
    probe.error(err.value, needle)
    assert hits == [], f"fetched from a host that is not allowed: {hits}"


def test_an_oversized_image(probe, folders) -> None:
    root, outside = folders
    probe.guard(outside)
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(root / "big.png")
    with pytest.raises(Exception) as err:
        ImageSources(roots=[root], max_pixels=100_000).read("/data/local-files/?d=big.png")
    probe.error(err.value, "max_pixels=")


@pytest.mark.slow
def test_the_server_refuses_paths_outside_its_roots(camvid_checkpoint: Path, folders, tmp_path: Path) -> None:
    """Over HTTP: 403 for each way out, the other task still answered, nothing outside changed."""
    root, outside = folders
    before = tree_digest(outside)
    refs = [
        "/data/local-files/?d=../outside/secret.png",
        f"{outside}/secret.png",
        "/data/local-files/?d=link.png",
    ]
    tasks = [{"id": i, "data": {"image": ref}} for i, ref in enumerate(refs)]
    tasks.append({"id": 9, "data": {"image": "/data/local-files/?d=inside.png"}})
    with serving(
        camvid_checkpoint,
        tmp_path / "run",
        f"token={TOKEN}",
        f"roots=[{root}]",
        "device=cpu",
        "runtime=torch",
    ) as url:
        response = httpx.post(
            f"{url}/predict",
            json={"tasks": tasks, "label_config": LABEL_CONFIG},
            headers=auth(),
            timeout=120,
        )
        alone = httpx.post(
            f"{url}/predict",
            json={"tasks": tasks[:1], "label_config": LABEL_CONFIG},
            headers=auth(),
            timeout=120,
        )
    assert response.status_code == 200, response.text
    *refused, answered = response.json()["results"]
    assert [r["error"]["status"] for r in refused] == [403, 403, 403]
    assert all("roots=" in r["error"]["message"] for r in refused)
    assert answered["result"]
    assert alone.status_code == 403
    assert tree_digest(outside) == before


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["truncated", "missing", "no_ckpt_path", "bad_port"])
def test_the_server_does_not_start(probe, camvid_checkpoint: Path, tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    probe.guard(outside)
    path = tmp_path / "model.ckpt"
    data = camvid_checkpoint.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 3])
    args = [f"ckpt_path={path}", f"port={free_port()}", f"hydra.run.dir={tmp_path / 'run'}", "device=cpu"]
    needle = str(path)
    if kind == "no_ckpt_path":
        args, needle = args[1:], "ckpt_path="
    elif kind == "bad_port":
        path.write_bytes(data)
        args, needle = [*args, "port=70000"], "port=70000"
    proc = run_segvn("serve", *args, root=tmp_path, timeout=300)
    probe.expect_error(proc, needle)
