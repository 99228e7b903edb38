"""The parts of a Label Studio labelling config that a brush-label prediction needs.

A project's config (XML) names a ``<BrushLabels name=... toName=...>`` tag with ``<Label value=...>``
children and the ``<Image name=... value="$key">`` it paints on. A prediction's results carry
``from_name`` (the brush tag), ``to_name`` (the image tag) and the label values; the image of a task is
``task["data"][key]``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from segvn.data.classes import CLASS_NAMES
from segvn.data.labelformats.common import ClassMatcher
from segvn.errors import DataError

MAX_CONFIG_CHARS = 200_000
"""A label config longer than this is refused (a project's config is a few kilobytes)."""


@dataclass(frozen=True)
class BrushConfig:
    """``from_name``/``to_name`` of the brush tag, the task data key of its image, and per class index of
    the model the config's label value (classes the config lacks are not predicted)."""

    from_name: str
    to_name: str
    image_key: str
    labels: dict[int, str] = field(default_factory=dict)

    def image_of(self, task: Any, name: str) -> str:
        """The image reference of a Label Studio task, ``task["data"][image_key]``; ``DataError`` naming
        the task (``name``) when it has none (a /predict task or a webhook's task alike)."""
        data = task.get("data") if isinstance(task, dict) else None
        ref = data.get(self.image_key) if isinstance(data, dict) else None
        if not isinstance(ref, str) or not ref:
            raise DataError(
                f'{name}: no data.{self.image_key} (the image of <Image value="${self.image_key}">)'
            )
        return ref


def parse_label_config(text: str, class_names: list[str]) -> BrushConfig:
    """The brush-label part of ``text`` for a model of ``class_names``; ``DataError`` when there is none.

    Label values match the classes case-insensitively and through segvn's default label mapping
    (pedestrian -> person, tree -> vegetation...), as ``segvn.labels import`` matches them.
    """
    if not isinstance(text, str) or not text.strip():
        raise DataError("label_config: empty; give the project's labelling config (XML with <BrushLabels>)")
    if len(text) > MAX_CONFIG_CHARS:
        raise DataError(
            f"label_config: over {MAX_CONFIG_CHARS} characters; give the project's labelling config"
        )
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        raise DataError("label_config: a DOCTYPE or entity declaration; give a plain labelling config")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise DataError(f"label_config: not valid XML ({err}); give the project's labelling config") from None
    brush = next((el for el in root.iter() if el.tag.lower() == "brushlabels"), None)
    if brush is None or not brush.get("name") or not brush.get("toName"):
        raise DataError(
            'label_config: no <BrushLabels name="..." toName="..."> tag; segvn predicts brush labels '
            "(add one with our classes to the project's labelling interface)"
        )
    to_name = str(brush.get("toName")).split(",")[0].strip()
    image = next((el for el in root.iter() if el.tag.lower() == "image" and el.get("name") == to_name), None)
    value = image.get("value", "") if image is not None else ""
    if not value.startswith("$") or len(value) < 2:
        raise DataError(
            f'label_config: no <Image name="{to_name}" value="$..."> for the brush labels to paint on'
        )
    matcher = ClassMatcher()
    wanted = {name.lower(): i for i, name in enumerate(class_names)}
    labels: dict[int, str] = {}
    for label in brush:
        if label.tag.lower() != "label" or not label.get("value"):
            continue
        index = matcher.index(str(label.get("value")))
        name = CLASS_NAMES[index] if index is not None and index < len(CLASS_NAMES) else ""
        if name in wanted and wanted[name] not in labels:
            labels[wanted[name]] = str(label.get("value"))
    if not labels:
        raise DataError(
            f"label_config: none of the labels of <BrushLabels name={brush.get('name')!r}> is one of the model's "
            f"classes ({', '.join(class_names)}); add them as <Label value=...>"
        )
    return BrushConfig(str(brush.get("name")), to_name, value[1:], labels)
