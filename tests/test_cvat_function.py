"""The CVAT auto-annotation function (``segvn.cvat_function``) through cvat-sdk's own local pieces.

``cvat_sdk.auto_annotation.annotate_task`` needs a CVAT server (it downloads the task's frames and
uploads the shapes); what it does between the two runs here as it does there: the function is built as
``cvat-cli -p`` builds it (``create(**parameters)``), called with the driver's own context class, and its
shapes go through the driver's ``_AnnotationMapper`` (the label matching and the checks ``annotate_task``
applies) against a task's labels. The masks are decoded with ``cvat_sdk.masks.decode_mask`` and compared
pixel for pixel with ``segvn.load_model(...).predict`` on real CamVid frames.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from cvat_sdk import models
from cvat_sdk.auto_annotation import BadFunctionError
from cvat_sdk.auto_annotation.driver import _AnnotationMapper, _DetectionFunctionContextImpl
from cvat_sdk.masks import decode_mask
from scipy import ndimage

import segvn
from segvn import cvat_function
from segvn.data.classes import CLASS_NAMES
from segvn.errors import CheckpointError, ConfigError

pytestmark = [pytest.mark.shared, pytest.mark.slow]  # the checkpoint fixture trains


def frames(camvid_root: Path, count: int = 3) -> list[Path]:
    found = sorted((camvid_root / "val").glob("0016E5_*.png"))
    return found[:: len(found) // count][:count]


def task_labels(names=CLASS_NAMES, kind: str = "mask") -> list[models.Label]:
    """A CVAT task's labels as the server lists them: its own ids, any order, of type ``kind``."""
    return [
        models.Label(id=100 + 7 * i, name=n, type=kind, attributes=[], sublabels=[])
        for i, n in enumerate(reversed(names))
    ]


def run_like_annotate_task(function, images, conv_mask_to_poly=False, conf_threshold=None, labels=None):
    """``annotate_task``'s loop without the server: detect per frame, then validate and remap the shapes."""
    mapper = _AnnotationMapper(
        logging.getLogger("test"),
        function.spec.labels,
        labels or task_labels(),
        allow_unmatched_labels=False,
        conv_mask_to_poly=conv_mask_to_poly,
    )
    out = []
    for frame_index, path in enumerate(images):
        context = _DetectionFunctionContextImpl(
            frame_name=path.name, conf_threshold=conf_threshold, conv_mask_to_poly=conv_mask_to_poly
        )
        tags, shapes = mapper.validate_and_remap(function.detect(context, PIL.Image.open(path)), frame_index)
        assert tags == [] and all(s.frame == frame_index and s.source == "auto" for s in shapes)
        out.append(shapes)
    return out


def painted(shapes, height: int, width: int) -> np.ndarray:
    """The class map of a frame's mask shapes (task label ids mapped back to class names), 255 elsewhere;
    a pixel claimed by two shapes fails the test."""
    class_of = {label.id: CLASS_NAMES.index(label.name) for label in task_labels()}
    out = np.full((height, width), 255, np.uint8)
    for shape in shapes:
        assert shape.type.value == "mask"
        region = decode_mask(shape.points, image_width=width, image_height=height)
        assert not (out[region] != 255).any(), "two shapes claim the same pixel"
        out[region] = class_of[shape.label_id]
    return out


@pytest.fixture(scope="module")
def function(camvid_checkpoint):
    return cvat_function.create(ckpt_path=str(camvid_checkpoint), device="cpu")


@pytest.fixture(scope="module")
def reference(camvid_checkpoint):
    return segvn.load_model(camvid_checkpoint, device="cpu")


def test_spec_names_one_mask_label_per_class(function):
    labels = function.spec.labels
    assert [(lab.id, lab.name, lab.type) for lab in labels] == [
        (i, n, "mask") for i, n in enumerate(CLASS_NAMES)
    ]


def test_masks_equal_segvn_predict_pixel_for_pixel(function, reference, camvid_root):
    images = frames(camvid_root)
    results = run_like_annotate_task(function, images)
    for path, shapes in zip(images, results, strict=True):
        want = reference.predict(path)
        got = painted(shapes, *want.shape)
        assert got.shape == (360, 480)
        np.testing.assert_array_equal(got, want)  # every pixel: one shape, the predicted class
        assert len(shapes) == len(np.unique(want))


def test_checkpoint_from_the_environment(camvid_checkpoint, camvid_root, monkeypatch):
    monkeypatch.setenv(cvat_function.CKPT_ENV, str(camvid_checkpoint))
    function = cvat_function.create(device="cpu", image_size="48,64")  # cvat-cli without -p ckpt_path
    path = frames(camvid_root, 1)[0]
    (shapes,) = run_like_annotate_task(function, [path])
    want = segvn.load_model(camvid_checkpoint, device="cpu", image_size=[48, 64]).predict(path)
    np.testing.assert_array_equal(painted(shapes, 360, 480), want)


def test_conf_threshold_leaves_unsure_pixels_unlabelled(function, reference, camvid_root):
    path = frames(camvid_root, 1)[0]
    labels, probs = reference.predict(path, probabilities=True)
    threshold = float(np.quantile(probs.max(axis=0), 0.3))  # about 30% of the pixels are below it
    (shapes,) = run_like_annotate_task(function, [path], conf_threshold=threshold)
    got = painted(shapes, *labels.shape)
    unsure = probs.max(axis=0) < threshold
    assert 0.1 < unsure.mean() < 0.5
    assert (got[unsure] == 255).all()
    np.testing.assert_array_equal(got[~unsure], labels[~unsure])


def test_polygons_when_cvat_asks_for_them(function, reference, camvid_root):
    import cv2

    path = frames(camvid_root, 1)[0]
    want = reference.predict(path)
    # labels of type "any" (CVAT's default) take polygons; a task whose labels are masks would refuse them
    (shapes,) = run_like_annotate_task(
        function, [path], conv_mask_to_poly=True, labels=task_labels(kind="any")
    )
    assert shapes and all(s.type.value == "polygon" for s in shapes)
    class_of = {label.id: CLASS_NAMES.index(label.name) for label in task_labels()}
    for index in np.unique(want):
        filled = np.zeros(want.shape, np.uint8)
        for s in shapes:
            if class_of[s.label_id] == index:
                points = np.asarray(s.points, np.int32).reshape(-1, 2)
                cv2.fillPoly(filled, [points], 1)
        region = want == index
        assert filled[region].all()  # every pixel of the class inside one of its outlines
        holes_filled = ndimage.binary_fill_holes(region)
        assert (filled.astype(bool) == holes_filled).mean() > 0.99  # and little else (holes are covered)


def test_task_labels_are_matched_by_name(function, camvid_root):
    path = frames(camvid_root, 1)[0]
    names = [n.capitalize() for n in CLASS_NAMES]  # a task whose labels are named otherwise
    with pytest.raises(BadFunctionError, match="'building' is not in dataset"):
        run_like_annotate_task(function, [path], labels=task_labels(names))


def test_no_checkpoint_is_one_error_naming_the_setting(monkeypatch, tmp_path):
    monkeypatch.delenv(cvat_function.CKPT_ENV, raising=False)
    with pytest.raises(ConfigError, match=r"ckpt_path.*SEGVN_CVAT_CKPT") as err:
        cvat_function.create()
    assert "\n" not in str(err.value)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.ckpt"):
        cvat_function.create(ckpt_path=str(broken), device="cpu")
    with pytest.raises(ConfigError, match="image_size='big'"):
        cvat_function.create(ckpt_path=str(broken), image_size="big")
