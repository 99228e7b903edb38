"""``python -m segvn.serve``: the Label Studio ML backend, over real HTTP on a loopback port.

A real server (uvicorn, a subprocess) serves the ``camvid_checkpoint`` model; requests carry real CamVid
frames through Label Studio's local-files URLs. The predictions' RLE masks, decoded with Label Studio's
own decoder (label-studio-converter), must give ``segvn.load_model(...).predict``'s labels pixel for pixel.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from .conftest import running_server, segvn_env

pytestmark = [pytest.mark.slow, pytest.mark.shared]

TOKEN = "s3cret-token"
FRAMES = ("0001TP_006690.png", "0016E5_07959.png")
CLASSES = ("building", "car", "fence", "person", "road", "sidewalk", "sky", "vegetation")
LABEL_CONFIG = (
    '<View><Image name="image" value="$image" zoom="true"/>'
    '<BrushLabels name="tag" toName="image">'
    + "".join(f'<Label value="{name.capitalize()}"/>' for name in CLASSES)
    + "</BrushLabels></View>"
)
MAX_PIXELS = 360 * 480


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def auth(token: str = TOKEN) -> dict[str, str]:
    """Label Studio's "Basic Authentication" header, the token as password."""
    return {"Authorization": "Basic " + base64.b64encode(f"labelstudio:{token}".encode()).decode()}


@contextmanager
def serving(ckpt: Path, run_dir: Path, *args: str, timeout: float = 180) -> Iterator[str]:
    """``python -m segvn.serve`` on a free loopback port until the block ends; yields its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "segvn.serve", f"ckpt_path={ckpt}", f"port={port}",
               f"hydra.run.dir={run_dir}", *args]  # fmt: skip
    with running_server(
        command,
        f"{url}/health",
        run_dir / "server.log",
        env=segvn_env(run_dir),
        headers=auth(),
        timeout=timeout,
    ):
        yield url


def image_root(camvid_root: Path, root: Path) -> Path:
    """A local-files document root: two real frames, a corrupt PNG, and a frame over MAX_PIXELS."""
    (root / "frames").mkdir(parents=True, exist_ok=True)
    for name in FRAMES:
        split = "train" if name.startswith("0001TP") else "val"
        shutil.copy(camvid_root / split / name, root / "frames" / name)
    (root / "frames" / "broken.png").write_bytes((root / "frames" / FRAMES[0]).read_bytes()[:300])
    big = np.asarray(Image.open(root / "frames" / FRAMES[0]))
    Image.fromarray(np.concatenate([big, big], axis=0)).save(root / "frames" / "big.png")
    return root


def task(task_id: int, name: str) -> dict:
    return {"id": task_id, "data": {"image": f"/data/local-files/?d=frames/{name}"}}


def decode(result: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """Class indices from brushlabels results, decoded with Label Studio's decode_rle (255: no class)."""
    from label_studio_converter.brush import decode_rle

    labels = np.full(shape, 255, np.uint8)
    for item in result:
        assert item["type"] == "brushlabels" and item["value"]["format"] == "rle"
        assert (item["from_name"], item["to_name"]) == ("tag", "image")
        mask = decode_rle(item["value"]["rle"]).reshape(*shape, 4)[..., 3] > 127
        index = CLASSES.index(item["value"]["brushlabels"][0].lower())
        assert not (mask & (labels != 255)).any(), "two classes claim a pixel"
        labels[mask] = index
    return labels


@pytest.fixture(scope="module")
def served(
    camvid_checkpoint: Path, camvid_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("serve")
    root = image_root(camvid_root, base / "root")
    args = (f"token={TOKEN}", f"roots=[{root}]", "device=cpu", "runtime=torch", f"max_pixels={MAX_PIXELS}",
            "max_request_bytes=1000000")  # fmt: skip
    with serving(camvid_checkpoint, base / "run", *args) as url:
        yield {"url": url, "root": root, "ckpt": camvid_checkpoint}


def post(served: dict, path: str, **kwargs) -> httpx.Response:
    headers = {**auth(), **kwargs.pop("headers", {})}
    return httpx.post(served["url"] + path, headers=headers, timeout=120, **kwargs)


def test_health_and_setup(served: dict) -> None:
    health = httpx.get(served["url"] + "/health", headers=auth(), timeout=10)
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "UP" and body["model_version"].startswith("last.ckpt@")
    setup = post(served, "/setup", json={"project": "7.1700000000", "schema": LABEL_CONFIG})
    assert setup.status_code == 200 and setup.json() == {"model_version": body["model_version"]}
    bad = post(
        served, "/setup", json={"project": "8.1", "schema": "<View><Image name='i' value='$i'/></View>"}
    )
    assert bad.status_code == 422 and "BrushLabels" in bad.json()["error"]


def test_predict_matches_the_model_pixel_for_pixel(served: dict) -> None:
    import segvn

    tasks = [task(1, FRAMES[0]), task(2, FRAMES[1])]
    response = post(served, "/predict", json={"tasks": tasks, "label_config": LABEL_CONFIG, "project": "1.1"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2
    model = segvn.load_model(served["ckpt"], device="cpu", runtime="torch")
    for name, prediction in zip(FRAMES, results, strict=True):
        path = served["root"] / "frames" / name
        expected = model.predict(path)
        labels = decode(prediction["result"], expected.shape)
        assert (labels != 255).all(), "every pixel has a class"
        np.testing.assert_array_equal(labels, expected)
        assert 0 < prediction["score"] <= 1 and prediction["model_version"].startswith("last.ckpt@")
        assert all(0 < item["score"] <= 1 for item in prediction["result"])
    # after /setup, a request without a label config uses the project's
    post(served, "/setup", json={"project": "3.5", "schema": LABEL_CONFIG.replace('"tag"', '"brush"')})
    again = post(served, "/predict", json={"tasks": tasks[:1], "project": "3.5"})
    assert again.status_code == 200
    assert {item["from_name"] for item in again.json()["results"][0]["result"]} == {"brush"}
    assert decode(
        [{**i, "from_name": "tag"} for i in again.json()["results"][0]["result"]], (360, 480)
    ).tolist() == (decode(results[0]["result"], (360, 480)).tolist())


def test_malformed_requests_get_a_4xx(served: dict) -> None:
    assert post(served, "/predict", content=b'{"tasks": [').status_code == 400
    assert post(served, "/predict", content=b"\xff\xfe not json").status_code == 400
    assert post(served, "/predict", json=[1, 2]).status_code == 400
    assert post(served, "/predict", json={"tasks": "x", "label_config": LABEL_CONFIG}).status_code == 422
    assert post(served, "/predict", json={"tasks": [task(1, FRAMES[0])]}).status_code == 422  # no config
    assert post(served, "/webhook", content=b"nope").status_code == 400
    too_big = post(served, "/predict", content=b"{" + b" " * 2_000_000 + b"}")
    assert too_big.status_code == 413
    assert httpx.get(served["url"] + "/health", headers=auth(), timeout=10).status_code == 200  # still up


def test_unauthorised_requests_are_refused(served: dict) -> None:
    url = served["url"]
    assert httpx.get(url + "/health", timeout=10).status_code == 401
    assert httpx.get(url + "/health", headers=auth("wrong"), timeout=10).status_code == 401
    refused = httpx.post(url + "/predict", json={"tasks": [task(1, FRAMES[0])], "label_config": LABEL_CONFIG})
    assert refused.status_code == 401 and "WWW-Authenticate" in refused.headers
    assert (
        httpx.get(url + "/health", headers={"Authorization": f"Token {TOKEN}"}, timeout=10).status_code == 200
    )


def test_an_unreadable_image_is_a_task_error_and_the_others_are_answered(served: dict) -> None:
    tasks = [task(1, "broken.png"), task(2, FRAMES[0]), task(3, "missing.png"), task(4, "big.png"), {"id": 5}]
    response = post(served, "/predict", json={"tasks": tasks, "label_config": LABEL_CONFIG})
    assert response.status_code == 200, response.text
    broken, good, missing, big, no_image = response.json()["results"]
    assert no_image["error"] == {
        "status": 422,
        "message": 'task 4: no data.image (the image of <Image value="$image">)',
    }
    assert (
        broken["error"]["status"] == 422
        and "broken.png" in broken["error"]["message"]
        and "result" not in broken
    )
    assert missing["error"]["status"] == 404 and "missing.png" in missing["error"]["message"]
    assert big["error"]["status"] == 413 and "max_pixels" in big["error"]["message"]
    assert good["result"] and "error" not in good
    alone = post(served, "/predict", json={"tasks": [task(4, "big.png")], "label_config": LABEL_CONFIG})
    assert alone.status_code == 413


def test_webhook_is_ignored_when_fine_tuning_is_off(served: dict) -> None:
    response = post(served, "/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 1}})
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert post(served, "/webhook", json={"action": "PROJECT_UPDATED"}).json()["status"] == "Unknown event"


def test_webhook_fine_tunes_and_switches_the_model(
    camvid_checkpoint: Path, camvid_root: Path, tmp_path: Path
) -> None:
    root = image_root(camvid_root, tmp_path / "root")
    tiny = ["+experiment=resnet18", "data.image_size=[64,96]", "data.num_workers=0", "data.batch_size=2",
            "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "logger=csv",
            "data.check.level=off"]  # fmt: skip
    args = (f"roots=[{root}]", "device=cpu", "runtime=torch", "finetune.enabled=true",
            "finetune.overrides=[" + ",".join(f"'{o}'" for o in tiny) + "]")  # fmt: skip
    with serving(camvid_checkpoint, tmp_path / "run", *args) as url:
        tasks = [task(11, FRAMES[0]), task(12, FRAMES[1])]
        predicted = httpx.post(
            f"{url}/predict", json={"tasks": tasks, "label_config": LABEL_CONFIG}, timeout=120
        )
        before = predicted.json()["results"][0]["model_version"]
        project = {"id": 1, "label_config": LABEL_CONFIG}
        for i, (t, p) in enumerate(zip(tasks, predicted.json()["results"], strict=True)):
            event = {"action": "ANNOTATION_CREATED", "project": project, "task": t,
                     "annotation": {"id": 100 + i, "result": p["result"]}}  # fmt: skip
            answer = httpx.post(f"{url}/webhook", json=event, timeout=30)
            assert answer.status_code == 201, answer.text
            assert answer.json()["result"]["training"] in ("started", "queued")
        deadline = time.monotonic() + 600
        while True:
            state = httpx.get(f"{url}/health", timeout=10).json()
            if (
                state["finetune"]["last"].get("status") in ("done", "failed")
                and not state["finetune"]["running"]
            ):
                break
            assert time.monotonic() < deadline, state
            time.sleep(2)
        assert state["finetune"]["last"]["status"] == "done", state
        assert state["model_version"] != before
        labels = tmp_path / "run" / "finetune" / "data" / "labelstudio" / "labels"
        assert sorted(p.name for p in labels.glob("*.png")) == sorted(FRAMES)
        after = httpx.post(
            f"{url}/predict", json={"tasks": tasks[:1], "label_config": LABEL_CONFIG}, timeout=120
        )
        assert after.json()["results"][0]["model_version"] == state["model_version"]
    # each run's network started from the model served when it started: the served checkpoint until a
    # run ends well, then that run's best (finetune.init_from_served, on by default). A run of the first
    # annotation alone fails (one frame, batch_size=2): the server keeps its model
    served = str(camvid_checkpoint)
    runs = sorted((tmp_path / "run" / "finetune" / "runs").glob("[0-9][0-9][0-9]"))
    assert runs and state["finetune"]["runs"] == len(runs)
    for run in runs:
        assert f"init_from={served}" in (run / "train" / ".hydra" / "overrides.yaml").read_text(), run
        if (run / "train" / "metrics.json").exists():
            assert json.loads((run / "train" / "metrics.json").read_text())["init_from"] == served, run
            served = str(sorted((run / "train" / "checkpoints").glob("epoch_*.ckpt"))[0])
    assert state["finetune"]["last"]["checkpoint"] == served != str(camvid_checkpoint)


def test_fine_tuning_from_the_served_model_needs_a_checkpoint(tmp_path: Path, caplog) -> None:
    """``init_from=`` names the served .ckpt; an exported model, the setting off, or overrides that name
    the start themselves give none (a log line says why)."""
    from segvn.serving.finetune import FineTuner, FinetuneSettings
    from segvn.serving.sources import ImageSources

    def tuner(served: Path, **settings) -> FineTuner:
        return FineTuner(
            FinetuneSettings(workdir=str(tmp_path), **settings), ImageSources(), print, lambda: served
        )

    ckpt = tmp_path / "best.ckpt"
    assert tuner(ckpt).init_from() == [f"init_from={ckpt}"]
    assert tuner(ckpt, init_from_served=False).init_from() == []
    with caplog.at_level("INFO", logger="segvn.serve"):
        assert tuner(tmp_path / "model.onnx").init_from() == []
        assert tuner(ckpt, overrides=["+experiment=resnet18", "ckpt_path=/x/last.ckpt"]).init_from() == []
    said = caplog.text
    assert "model.onnx is an exported model, not a .ckpt" in said and "(ckpt_path=/x/last.ckpt)" in said
