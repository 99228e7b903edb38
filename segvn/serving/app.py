"""The Label Studio ML backend of segvn: a FastAPI app around one loaded :class:`segvn.SegvnModel`.

Label Studio's ML backend protocol (HumanSignal/label-studio-ml-backend, ``label_studio_ml/api.py``):

- ``GET /health`` (and ``GET /``): ``{"status": "UP", "model_class": ..., "model_version": ...}``;
- ``POST /setup`` ``{"project": "<id>.<created>", "schema": "<label config XML>", ...}``: remembers the
  project's brush-label tag, answers ``{"model_version": ...}``;
- ``POST /predict`` ``{"tasks": [...], "label_config": ..., "project": ...}``: ``{"results": [one
  prediction per task]}``, a prediction being ``{"result": [brushlabels per class, RLE], "score",
  "model_version"}``; a task whose image cannot be read gets ``{"error": {"status", "message"}}`` (no ``result``: Label
  Studio logs it and stores no prediction for it) while the others are answered (all of them failing: the request's status is the first
  error's, 403/404/413/422);
- ``POST /webhook`` ``{"action": "ANNOTATION_CREATED", "task": ..., "annotation": ..., "project": ...}``:
  with fine-tuning on, a background training on the annotations so far (:mod:`segvn.serving.finetune`).

With a ``token`` every request needs it: HTTP basic auth with the token as password (what Label Studio
sends when the backend is connected with "Basic Authentication") or ``Authorization: Token|Bearer
<token>``; otherwise 401. A body that is not JSON is a 400, one over ``max_request_bytes`` a 413.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from segvn.api import SegvnModel, load_model
from segvn.errors import (
    DataError,
    ImageSourceError,
    ImageTooLargeError,
    InputNotFoundError,
    SegvnError,
)
from segvn.serving.finetune import FineTuner, FinetuneSettings
from segvn.serving.labelconfig import BrushConfig, parse_label_config
from segvn.serving.sources import ImageSources

log = logging.getLogger("segvn.serve")

TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
"""Webhook events that start a fine-tuning run (when it is on); Label Studio sends others too."""


@dataclass
class ServeSettings:
    """What ``python -m segvn.serve`` takes (``conf/serve.yaml``)."""

    ckpt_path: str
    device: str = "auto"
    runtime: str = "auto"
    image_size: list[int] | str | None = None
    batch_size: int = 4
    token: str | None = None
    max_request_bytes: int = 20_000_000
    sources: ImageSources = field(default_factory=ImageSources)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)


def model_version(path: Path) -> str:
    """``<file name>@<first 12 hex digits of its sha256>``: a new checkpoint is a new version."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{Path(path).name}@{digest.hexdigest()[:12]}"


def status_of(err: SegvnError) -> int:
    """The HTTP status of a task's error: refused source 403, missing 404, too large 413, unreadable 422."""
    if isinstance(err, ImageSourceError):
        return 403
    if isinstance(err, ImageTooLargeError):
        return 413
    if isinstance(err, InputNotFoundError):
        return 404
    return 422


def brush_results(labels: np.ndarray, probs: np.ndarray, config: BrushConfig) -> list[dict[str, Any]]:
    """One ``brushlabels`` result per class present in ``labels`` (and in the config): its RLE mask
    (Label Studio's RGBA brush encoding) and its mean probability as the score."""
    from label_studio_converter.brush import encode_rle

    height, width = labels.shape
    results = []
    for index, value in sorted(config.labels.items()):
        mask = labels == index
        if not mask.any():
            continue
        rgba = np.repeat(mask.astype(np.uint8).ravel() * 255, 4)
        results.append(
            {
                "id": f"segvn-{index}",
                "from_name": config.from_name,
                "to_name": config.to_name,
                "type": "brushlabels",
                "original_width": int(width),
                "original_height": int(height),
                "image_rotation": 0,
                "value": {"format": "rle", "rle": [int(v) for v in encode_rle(rgba)], "brushlabels": [value]},
                "score": float(probs[index][mask].mean()),
            }
        )
    return results


class Backend:
    """The served model (swappable: fine-tuning replaces it), the projects' label configs and the fine-tuner."""

    def __init__(self, settings: ServeSettings, model: SegvnModel | None = None) -> None:
        self.settings = settings
        self.model = model or self.load(settings.ckpt_path)
        self.version = model_version(self.model.path)
        self.projects: dict[str, BrushConfig] = {}
        self.lock = threading.Lock()
        self.finetuner = FineTuner(
            settings.finetune, settings.sources, self.switch, served=lambda: Path(self.model.path)
        )

    def load(self, path: str | Path) -> SegvnModel:
        s = self.settings
        options: dict[str, Any] = {"batch_size": int(s.batch_size)}
        if s.image_size not in (None, ""):
            options["image_size"] = s.image_size
        return load_model(path, device=s.device, runtime=s.runtime, **options)

    def switch(self, path: Path) -> None:
        """Serve the checkpoint at ``path`` from now on (a fine-tuning run's best)."""
        model = self.load(path)
        version = model_version(path)
        with self.lock:
            self.model, self.version = model, version
        log.info("serving %s (model_version %s)", path, version)

    def config_for(self, body: dict[str, Any]) -> BrushConfig:
        """The request's label config, else the one /setup gave for its project."""
        if body.get("label_config"):
            return parse_label_config(body["label_config"], self.model.class_names)
        project = str(body.get("project") or "").split(".", 1)[0]
        if project in self.projects:
            return self.projects[project]
        raise DataError(
            "label_config: none in the request and no /setup for this project; connect the backend to the "
            "project in Label Studio (it sends /setup) or give label_config"
        )

    def predict(self, tasks: list[Any], config: BrushConfig) -> list[dict[str, Any]]:
        """One prediction (or error) per task. The readable frames go through the model together,
        ``batch_size`` tasks at a time (so a long request never holds all its frames at once)."""
        answers: list[dict[str, Any]] = []
        step = max(1, int(self.settings.batch_size))
        for start in range(0, len(tasks), step):
            answers += self._predict_chunk(tasks[start : start + step], start, config)
        return answers

    def _predict_chunk(self, tasks: list[Any], offset: int, config: BrushConfig) -> list[dict[str, Any]]:
        frames: list[np.ndarray] = []
        slots: list[int] = []
        answers: list[dict[str, Any]] = [{} for _ in tasks]
        for i, task in enumerate(tasks):
            try:
                frame, _ = self.settings.sources.read(config.image_of(task, f"task {offset + i}"))
            except SegvnError as err:
                log.warning(
                    "task %s: %s", task.get("id", offset + i) if isinstance(task, dict) else offset + i, err
                )
                # no "result": Label Studio stores no prediction for this task
                answers[i] = {"error": {"status": status_of(err), "message": str(err)}}
                continue
            frames.append(frame)
            slots.append(i)
        with self.lock:
            model, version = self.model, self.version
            if frames:
                labels, probs = model.predict(frames, probabilities=True)
        for n, i in enumerate(slots):
            score = float(probs[n].max(axis=0).mean())
            answers[i] = {"result": brush_results(labels[n], probs[n], config), "score": score}
        for answer in answers:
            answer["model_version"] = version
        return answers


def _refused(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"status": "error", "error": message}, status_code=status, headers=headers or None)


def authorised(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (basic auth password, or Token/Bearer)."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            _, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(password.encode(), token.encode())
    if scheme in ("token", "bearer"):
        return hmac.compare_digest(value.strip().encode(), token.encode())
    return False


def create_app(settings: ServeSettings, backend: Backend | None = None) -> FastAPI:
    """The app; loads the model now (a broken checkpoint raises its ``SegvnError`` here, before serving)."""
    backend = backend or Backend(settings)
    app = FastAPI(title="segvn Label Studio ML backend", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.backend = backend

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable) -> Any:
        if settings.token and not authorised(request.headers.get("authorization"), settings.token):
            return _refused(
                401, "unauthorised: give the backend's token", **{"WWW-Authenticate": 'Basic realm="segvn"'}
            )
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_request_bytes):
            return _refused(413, f"request body over max_request_bytes={settings.max_request_bytes}")
        return await call_next(request)

    async def body_of(request: Request) -> dict[str, Any] | JSONResponse:
        raw = bytearray()
        async for chunk in request.stream():
            raw.extend(chunk)
            if len(raw) > settings.max_request_bytes:
                return _refused(413, f"request body over max_request_bytes={settings.max_request_bytes}")
        try:
            body = json.loads(bytes(raw))
        except (ValueError, UnicodeDecodeError) as err:
            return _refused(400, f"the request body is not JSON ({err})")
        if not isinstance(body, dict):
            return _refused(400, f"the request body is JSON {type(body).__name__}, expected an object")
        return body

    @app.get("/")
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "UP",
            "model_class": "segvn",
            "model_version": backend.version,
            "classes": backend.model.class_names,
            "finetune": backend.finetuner.status(),
        }

    @app.get("/metrics")
    async def metrics() -> dict[str, Any]:
        return {}

    @app.post("/setup")
    async def setup(request: Request) -> Any:
        body = await body_of(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            config = parse_label_config(
                body.get("schema") or body.get("label_config"), backend.model.class_names
            )
        except DataError as err:
            return _refused(422, str(err))
        project = str(body.get("project") or "").split(".", 1)[0]
        backend.projects[project] = config
        backend.settings.sources.learn_token(body.get("hostname"), body.get("access_token"))
        return {"model_version": backend.version}

    @app.post("/predict")
    async def predict(request: Request) -> Any:
        body = await body_of(request)
        if isinstance(body, JSONResponse):
            return body
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            return _refused(422, "tasks: expected a non-empty list of Label Studio tasks")
        try:
            config = backend.config_for(body)
        except DataError as err:
            return _refused(422, str(err))
        answers = await run_in_threadpool(backend.predict, tasks, config)
        errors = [a["error"] for a in answers if "error" in a]
        if len(errors) == len(answers):
            return JSONResponse(
                {"status": "error", "error": errors[0]["message"], "results": answers},
                status_code=errors[0]["status"],
            )
        return {"results": answers, "model_version": backend.version}

    @app.post("/webhook")
    async def webhook(request: Request) -> Any:
        body = await body_of(request)
        if isinstance(body, JSONResponse):
            return body
        action = body.get("action")
        if action not in TRAIN_EVENTS:
            return {"status": "Unknown event", "action": action}
        if not settings.finetune.enabled:
            return {"status": "ignored", "reason": "fine-tuning is off (finetune.enabled=false)"}
        project = body.get("project") if isinstance(body.get("project"), dict) else {}
        try:
            config = backend.config_for(
                {"label_config": project.get("label_config"), "project": project.get("id")}
            )
            state = backend.finetuner.add(body.get("task"), body.get("annotation"), config)
        except SegvnError as err:
            return _refused(422, str(err))
        return JSONResponse({"status": "ok", "result": state}, status_code=201)

    return app
