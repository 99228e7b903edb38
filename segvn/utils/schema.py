"""The pieces of the commands' typed configs, and the checks of what a type cannot say.

Every command but ``segvn.train`` has one dataclass as its config (``<verb>_schema`` in Hydra's
ConfigStore, named first in ``conf/<verb>.yaml``'s defaults list): it holds each default once, a
:class:`Choice` for every setting with a fixed set of values, and :func:`bounded` for numbers with a
range. A wrong type or value then fails when the config is composed (``video.backend=decrod``,
``batch_size=abc``; :func:`segvn.cli.run_hydra` shows it as one line naming the setting and the
allowed values), and :func:`check_bounds` reports a number out of its range in one line.
(``metrics.absent`` of segvn.evaluate stays text: Hydra's parser turns ``metrics.absent=nan`` into a
float before any enum sees it.)

:func:`check_numbers` covers every node that Hydra instantiates (``_target_``: the optimizer, scheduler,
trainer, data module, network, callbacks...) without a schema per group: the target's own signature says
which arguments take numbers only, so ``model.optimizer.lr=abc`` ends in one line naming the setting
before any set-up, not in a traceback from inside ``torch.optim.SGD``. :data:`PLAIN_NUMBERS` lists the
numeric settings that are not constructor arguments.
"""

from __future__ import annotations

import inspect
import numbers
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from segvn.errors import ConfigError

PLAIN_NUMBERS: tuple[str, ...] = ("seed",)
"""Numeric settings of segvn.train (no schema) that no constructor signature describes (null allowed)."""


class Choice(str, Enum):
    """A setting with a fixed set of values. Members are named as they are written on the command line
    (OmegaConf matches names) and compare equal to that text (``Runtime.onnx == "onnx"``)."""

    def __str__(self) -> str:
        return self.value


class Split(Choice):
    train = "train"
    val = "val"
    test = "test"
    predict = "predict"


class OnError(Choice):
    """An input that cannot be read: skip it (record it, go on, exit 1 at the end) or stop there."""

    skip = "skip"
    stop = "stop"


class VideoBackend(Choice):
    decord = "decord"
    pyav = "pyav"


@dataclass(frozen=True)
class Bounds:
    """The range of a numeric setting; ``None`` leaves that side open."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def holds(self, value: float) -> bool:
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )

    def describe(self) -> str:
        """``>= 1``, ``in [0, 1]``, ``in (0, 1]``..."""
        low = self.ge if self.ge is not None else self.gt
        high = self.le if self.le is not None else self.lt
        if low is not None and high is not None:
            return f"in {'[' if self.ge is not None else '('}{low:g}, {high:g}{']' if self.le is not None else ')'}"
        if low is not None:
            return f"{'>=' if self.ge is not None else '>'} {low:g}"
        return f"{'<=' if self.le is not None else '<'} {high:g}"


def bounded(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A numeric dataclass field with a range (checked by :func:`check_bounds`), e.g. ``bounded(2, ge=1)``."""
    return field(default=default, metadata={"bounds": Bounds(ge, gt, le, lt)})


@dataclass
class VideoConfig:
    """Video decoding (segvn.data.video). Both backends give identical frames, indices and timestamps;
    damaged files are always decoded with PyAV. decord decodes in a background thread, so it is the
    faster one where decoding runs in the main thread (benchmarks/bench_decode.py)."""

    backend: VideoBackend = VideoBackend.decord
    threads: int = bounded(0, ge=0)  # decoder threads; 0 lets FFmpeg choose


def register_schemas() -> None:
    """Store the schemas as ``video/schema`` (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(group="video", name="schema", node=VideoConfig)


def require(cfg: DictConfig, *keys: str, needed_for: str = "") -> None:
    """One :class:`ConfigError` naming every one of ``keys`` that is missing (``???``), null or empty."""
    missing = [k for k in keys if OmegaConf.is_missing(cfg, k) or cfg.get(k) in (None, "")]
    if missing:
        where = f" for {needed_for}" if needed_for else ""
        raise ConfigError(f"missing required setting(s){where}: {', '.join(f'{k}=...' for k in missing)}")


def switch(value: Any, name: str) -> bool:
    """``value`` of the on/off setting ``name``; anything but true/false is a :class:`ConfigError`
    naming it (``bool("maybe")`` would silently switch it on).

    >>> switch(False, "data.pseudo.strong")
    False
    >>> switch("maybe", "data.pseudo.strong")
    Traceback (most recent call last):
    ...
    segvn.errors.ConfigError: data.pseudo.strong='maybe': give true or false
    """
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r}: give true or false")
    return value


def _schema_fields(node: DictConfig) -> list[Any]:
    schema = OmegaConf.get_type(node)
    return list(fields(schema)) if isinstance(schema, type) and is_dataclass(schema) else []


def _out_of_bounds(node: DictConfig, prefix: str) -> Iterator[str]:
    for f in _schema_fields(node):
        bounds = f.metadata.get("bounds")
        if bounds is None or OmegaConf.is_missing(node, f.name):
            continue
        value = OmegaConf.select(node, f.name, throw_on_resolution_failure=False)
        if value is None or not _is_number(value) or bounds.holds(value):
            continue
        child = node._get_node(f.name)
        kind = "an integer" if isinstance(value, int) else "a number"
        null = " or null" if child is not None and child._is_optional() else ""
        yield f"{prefix}{f.name}={value}: out of range; give {kind} {bounds.describe()}{null}"
    for key in node:
        child = node._get_node(key)
        if key == "hydra" or not isinstance(child, DictConfig) or child._is_none() or child._is_missing():
            continue
        yield from _out_of_bounds(child, f"{prefix}{key}.")


def check_bounds(cfg: DictConfig) -> None:
    """One :class:`ConfigError` ``setting=value: out of range; give ...`` for the first number of a typed
    config (and its typed sub-configs) outside the range its :func:`bounded` field declares.
    ``cfg`` may also be a schema's dataclass instance."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.structured(cfg)
    for message in _out_of_bounds(cfg, ""):
        raise ConfigError(message)


def _union_args(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return tuple(a for arg in typing.get_args(annotation) for a in _union_args(arg))
    if origin is typing.Literal:
        return tuple(type(v) for v in typing.get_args(annotation))
    return (annotation,)


def wants_number(annotation: Any) -> bool:
    """Whether a parameter annotated so takes numbers (``float``, ``int | None``, ``float | Tensor``) and no text."""
    if annotation is inspect.Parameter.empty:
        return False
    kinds = _union_args(annotation)
    if any(k is str or k is Any or k is object for k in kinds):
        return False
    plain = [typing.get_origin(k) or k for k in kinds]
    return any(isinstance(k, type) and issubclass(k, numbers.Number) and k is not bool for k in plain)


def _number_params(target: str) -> dict[str, Any]:
    """Parameter name -> default, for the parameters of ``target`` that take numbers only."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
        fn = obj.__init__ if inspect.isclass(obj) else obj
        hints = typing.get_type_hints(fn)
        params = inspect.signature(obj).parameters
    except Exception:  # noqa: BLE001 - an unknown or odd target is instantiate's to report
        return {}
    return {name: p.default for name, p in params.items() if wants_number(hints.get(name, p.annotation))}


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, numbers.Number) and not isinstance(value, str))


def _targets(node: Any, prefix: str = "") -> Iterator[tuple[str, DictConfig]]:
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield prefix, node
        for key in node:
            if key == "hydra":
                continue
            child = node._get_node(key)
            if isinstance(child, DictConfig | ListConfig) and not (child._is_none() or child._is_missing()):
                yield from _targets(child, f"{prefix}{key}.")
    elif isinstance(node, ListConfig):
        for i, child in enumerate(node):
            yield from _targets(child, f"{prefix}{i}.")


def check_numbers(cfg: DictConfig) -> None:
    """One :class:`ConfigError` naming the setting when a numeric setting holds a non-number.

    Checks the arguments of every ``_target_`` node that its signature types as numbers, and the
    :data:`PLAIN_NUMBERS` at the top. Interpolations are resolved first; ``null`` passes (the target
    says whether it may be absent).
    """
    bad: list[tuple[str, Any, Any]] = []
    for prefix, node in _targets(cfg):
        target = OmegaConf.select(node, "_target_", throw_on_missing=False)
        if not isinstance(target, str):
            continue
        for name, default in _number_params(target).items():
            if name in node and not OmegaConf.is_missing(node, name):
                value = OmegaConf.select(node, name, throw_on_resolution_failure=False)
                if not _is_number(value):
                    bad.append((f"{prefix}{name}", value, default))
    for name in PLAIN_NUMBERS:
        if name in cfg and not OmegaConf.is_missing(cfg, name):
            value = OmegaConf.select(cfg, name, throw_on_resolution_failure=False)
            if not _is_number(value):
                bad.append((name, value, None))
    if bad:
        key, value, default = bad[0]
        shown = OmegaConf.to_container(value) if isinstance(value, DictConfig | ListConfig) else value
        example = f", e.g. {key}={default}" if _is_number(default) and default is not None else ""
        more = f" (and {len(bad) - 1} more: {', '.join(k for k, _, _ in bad[1:4])})" if len(bad) > 1 else ""
        raise ConfigError(f"{key}={shown!r}: not a number; give a number{example}{more}")
