"""End to end with a real Label Studio (``make labelstudio``, then ``make test-labelstudio``).

Label Studio 1.23.2 from its own venv (``.venv-labelstudio``: it pins numpy and OpenCV apart from segvn)
runs on sqlite in a temporary data folder on a loopback port, its user and API token created on the
command line. Through its REST API: a project with a brush-label config of our 8 classes, real CamVid
frames imported from a local-files storage, ``python -m segvn.serve`` connected as its ML backend
(basic auth with the backend's token), predictions retrieved, an annotation made from each prediction,
the project exported as "Brush labels to PNG" and brought back with ``python -m segvn.labels import
format=labelstudio``: the imported labels equal the model's labels pixel for pixel.
"""

from __future__ import annotations

import io
import os
import shutil
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest

from .conftest import REPO_ROOT, run_segvn, running_server
from .test_serve import CLASSES, LABEL_CONFIG, TOKEN, free_port, serving

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow, pytest.mark.shared]

LABEL_STUDIO = REPO_ROOT / ".venv-labelstudio" / "bin" / "label-studio"
LS_TOKEN = "5e9f0c1a2b3d4e5f60718293a4b5c6d7e8f90a1b"
STREET = "camvid_ls"
FRAMES = ("0001TP_006690.png", "0001TP_006720.png")


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A Label Studio on a free loopback port: its URL, API headers and local-files document root."""
    if not LABEL_STUDIO.exists():
        pytest.skip(f"Label Studio is not installed ({LABEL_STUDIO} missing): run `make labelstudio` first")
    base = tmp_path_factory.mktemp("labelstudio")
    documents = base / "documents"
    (documents / STREET / "frames").mkdir(parents=True)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "DJANGO"))},
        "LABEL_STUDIO_BASE_DATA_DIR": str(base / "data"),
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(documents),
        "ML_BLOCK_LOCAL_IP": "false",  # the ML backend listens on loopback
        "SSRF_PROTECTION_ENABLED": "false",  # and so do its webhooks
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
    }
    command = [str(LABEL_STUDIO), "start", "--no-browser", "--port", str(port), "--internal-host", "127.0.0.1",
               "--data-dir", str(base / "data"), "--username", "segvn@example.com", "--password", "segvn-e2e-pass",
               "--user-token", LS_TOKEN, "--enable-legacy-api-token"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Token {LS_TOKEN}"}
    with running_server(
        command, f"{url}/api/projects", base / "label_studio.log", env=env, cwd=base, headers=headers,
        timeout=900, poll_s=2, stop_timeout=30,  # the first start migrates its database
    ):  # fmt: skip
        yield {"url": url, "headers": headers, "documents": documents, "base": base}


def call(ls: dict, method: str, path: str, **kwargs) -> httpx.Response:
    response = httpx.request(method, ls["url"] + path, headers=ls["headers"], timeout=300, **kwargs)
    assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:2000]}"
    return response


def test_label_studio_round_trip(
    label_studio: dict, camvid_checkpoint: Path, camvid_root: Path, tmp_path: Path
) -> None:
    import segvn
    from segvn.data.classes import PALETTE

    started = time.monotonic()
    ls = label_studio
    frames_dir = ls["documents"] / STREET / "frames"
    for name in FRAMES:
        shutil.copy(camvid_root / "train" / name, frames_dir / name)

    project = call(
        ls, "POST", "/api/projects", json={"title": "segvn e2e", "label_config": LABEL_CONFIG}
    ).json()
    storage = call(ls, "POST", "/api/storages/localfiles", json={
        "project": project["id"], "path": str(frames_dir), "regex_filter": r".*\.png", "use_blob_urls": True,
    }).json()  # fmt: skip
    call(ls, "POST", f"/api/storages/localfiles/{storage['id']}/sync")
    tasks = call(ls, "GET", "/api/tasks", params={"project": project["id"], "page_size": 100}).json()["tasks"]
    assert sorted(t["data"]["image"].rsplit("/", 1)[-1] for t in tasks) == sorted(FRAMES)
    assert all(t["data"]["image"].startswith("/data/local-files/?d=") for t in tasks)

    args = (f"token={TOKEN}", f"roots=[{ls['documents']}]", "device=cpu", "runtime=torch")
    with serving(camvid_checkpoint, tmp_path / "serve", *args) as backend_url:
        call(ls, "POST", "/api/ml", json={
            "url": backend_url, "project": project["id"], "title": "segvn", "auth_method": "BASIC_AUTH",
            "basic_auth_user": "labelstudio", "basic_auth_pass": TOKEN, "is_interactive": False,
        })  # fmt: skip
        call(ls, "POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project["id"]},
             json={"selectedItems": {"all": True, "excluded": []}})  # fmt: skip

    model = segvn.load_model(camvid_checkpoint, device="cpu", runtime="torch")
    expected: dict[str, np.ndarray] = {}
    for t in tasks:
        predictions = call(ls, "GET", "/api/predictions", params={"task": t["id"]}).json()
        assert len(predictions) == 1, predictions
        prediction = predictions[0]
        assert prediction["model_version"].startswith("last.ckpt@") and prediction["score"] > 0
        name = t["data"]["image"].rsplit("/", 1)[-1]
        expected[Path(name).stem] = model.predict(frames_dir / name)
        call(ls, "POST", f"/api/tasks/{t['id']}/annotations",
             json={"result": prediction["result"], "parent_prediction": prediction["id"]})  # fmt: skip

    export = tmp_path / "export"
    export.mkdir()
    brush = call(ls, "GET", f"/api/projects/{project['id']}/export", params={"exportType": "BRUSH_TO_PNG"})
    zipfile.ZipFile(io.BytesIO(brush.content)).extractall(export / "png")
    (export / "tasks.json").write_bytes(call(ls, "GET", f"/api/projects/{project['id']}/export").content)
    data_root = tmp_path / "data"
    (data_root / STREET / "frames").mkdir(parents=True)
    for name in FRAMES:
        shutil.copy(frames_dir / name, data_root / STREET / "frames" / name)
    proc = run_segvn("labels", "import", "format=labelstudio", f"src={export / 'png'}",
                     f"tasks={export / 'tasks.json'}", f"street={STREET}", f"out={data_root}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]

    from PIL import Image

    for stem, labels in expected.items():
        rgb = np.asarray(Image.open(data_root / STREET / "labels" / f"{stem}.png").convert("RGB"))
        imported = np.full(rgb.shape[:2], 255, np.uint8)
        for index in range(len(CLASSES)):
            imported[(rgb == PALETTE[index]).all(axis=-1)] = index
        np.testing.assert_array_equal(imported, labels)
    print(f"\nLabel Studio round trip: {time.monotonic() - started:.0f} s after Label Studio was up")
