"""A CVAT auto-annotation function: segvn's model labels a CVAT task's images with masks of its classes.

It follows ``cvat_sdk.auto_annotation``'s detection-function interface (a ``spec`` naming one ``mask``
label per class, and ``detect(context, image)``), so ``cvat-cli`` runs it against a CVAT server::

    cvat-cli --server-host URL --auth USER task auto-annotate TASK_ID \\
        --function-module segvn.cvat_function -p ckpt_path=str:runs/.../checkpoints/best.ckpt
    cvat-cli --server-host URL --auth USER function create-native segvn \\
        --function-module segvn.cvat_function -p ckpt_path=str:model.onnx
    cvat-cli --server-host URL --auth USER function run-agent FUNCTION_ID \\
        --function-module segvn.cvat_function -p ckpt_path=str:model.onnx

``cvat-cli`` calls :func:`create` with the ``-p`` parameters (``ckpt_path``, ``device``, ``runtime``,
``image_size``); without ``-p ckpt_path=...`` the checkpoint comes from the environment variable
``SEGVN_CVAT_CKPT``. The model is loaded once, by :func:`segvn.load_model`, and labels each image as
``segvn.load_model(...).predict`` does; a class present in an image becomes one mask shape (encoded by
``cvat_sdk.masks.encode_mask``), or polygons when CVAT asks for them (``conv_mask_to_poly``). With a
confidence threshold (``--conf-threshold``), pixels whose top class probability is below it are left
unlabelled. The task's labels must be named like the model's classes (``building``, ``car``, ...).
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np
import PIL.Image
from cvat_sdk import models
from cvat_sdk.auto_annotation import (
    DetectionFunctionContext,
    DetectionFunctionSpec,
    label_spec,
    mask,
    polygon,
)
from cvat_sdk.masks import encode_mask

from segvn.api import SegvnModel, load_model
from segvn.errors import ConfigError

CKPT_ENV = "SEGVN_CVAT_CKPT"
"""The environment variable naming the checkpoint when ``cvat-cli`` gives no ``-p ckpt_path=...``."""


class SegvnFunction:
    """A detection function of ``cvat_sdk.auto_annotation`` around one loaded :class:`SegvnModel`."""

    def __init__(self, model: SegvnModel) -> None:
        self.model = model
        self.spec = DetectionFunctionSpec(
            labels=[label_spec(name, index, type="mask") for index, name in enumerate(model.class_names)]
        )

    def class_map(self, image: PIL.Image.Image, conf_threshold: float | None = None) -> np.ndarray:
        """The image's ``(H, W)`` class indices; pixels under ``conf_threshold`` are 255 (no class)."""
        rgb = np.asarray(image.convert("RGB"))
        if conf_threshold is None:
            return self.model.predict(rgb)
        labels, probs = self.model.predict(rgb, probabilities=True)
        labels = labels.copy()
        labels[probs.max(axis=0) < conf_threshold] = 255
        return labels

    def detect(
        self, context: DetectionFunctionContext, image: PIL.Image.Image
    ) -> list[models.LabeledShapeRequest]:
        """One mask shape per class present in ``image`` (polygons when ``context.conv_mask_to_poly``)."""
        labels = self.class_map(image, context.conf_threshold)
        shapes: list[models.LabeledShapeRequest] = []
        for index in np.unique(labels):
            if index >= len(self.model.class_names):
                continue
            region = labels == index
            if context.conv_mask_to_poly:
                shapes.extend(polygon(int(index), points) for points in polygons(region))
            else:
                shapes.append(mask(int(index), encode_mask(region)))
        return shapes


def polygons(region: np.ndarray) -> list[list[float]]:
    """The outer outlines of a boolean region as CVAT polygon points ``[x1, y1, x2, y2, ...]``.

    CVAT's polygons have no holes: a hole inside a region is covered by its outline. A speck or a straight
    line one pixel wide (an outline of one or two points) becomes the four corners of its bounding box, as
    a polygon needs three points at least.
    """
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outlines = []
    for contour in contours:
        if len(contour) < 3:
            x, y, w, h = cv2.boundingRect(contour)
            contour = np.array([[x, y], [x + w - 1, y], [x + w - 1, y + h - 1], [x, y + h - 1]])
        outlines.append(contour.reshape(-1, 2).astype(float).ravel().tolist())
    return outlines


def _image_size(value: Any) -> Any:
    """``image_size`` as ``cvat-cli -p image_size=str:...`` gives it: ``H,W``, ``native`` or ``training``."""
    if value is None or value in ("", "training"):
        return None
    if value == "native":
        return "native"
    try:
        size = [int(v) for v in str(value).replace("x", ",").split(",")]
    except ValueError:
        size = []
    if len(size) != 2:
        raise ConfigError(f"image_size={value!r}: give H,W (e.g. image_size=str:270,480), native or training")
    return size


def create(
    ckpt_path: str | None = None,
    device: str = "auto",
    runtime: str = "auto",
    image_size: str | None = None,
) -> SegvnFunction:
    """The function for ``cvat-cli -p NAME=TYPE:VALUE``: the model of ``ckpt_path`` (a ``.ckpt`` or an
    export; default: the environment variable ``SEGVN_CVAT_CKPT``), loaded once."""
    path = ckpt_path or os.environ.get(CKPT_ENV)
    if not path:
        raise ConfigError(
            f"ckpt_path: not given; pass -p ckpt_path=str:PATH to cvat-cli or set {CKPT_ENV}=PATH"
        )
    options = {} if _image_size(image_size) is None else {"image_size": _image_size(image_size)}
    return SegvnFunction(load_model(path, device=device, runtime=runtime, **options))
