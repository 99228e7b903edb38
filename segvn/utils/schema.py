"""Typed schemas for config groups whose values are easy to get wrong, and the numeric settings check.

Registered in Hydra's ConfigStore and pulled into the YAML files through their defaults list,
so a typo such as ``video.backend=decrod`` fails at start-up naming the allowed values.
(``metrics`` has none: Hydra's parser turns ``metrics.absent=nan`` into a float before any enum
sees it, so segvn.evaluate reads that value as text instead.)

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
from dataclasses import dataclass
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from segvn.errors import ConfigError

PLAIN_NUMBERS: tuple[str, ...] = (
    "seed", "num_frames", "every_n", "fps", "limit", "width", "smoothing", "batch_size", "label_first",
    "prediction_alpha",
)  # fmt: skip
"""Top-level numeric settings of the commands that no constructor signature describes (null allowed)."""


class VideoBackend(str, Enum):
    decord = "decord"
    pyav = "pyav"

    def __str__(self) -> str:
        return self.value


@dataclass
class VideoConfig:
    backend: VideoBackend = VideoBackend.decord
    threads: int = 0


def register_schemas() -> None:
    """Store the schemas as ``video/schema`` (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(group="video", name="schema", node=VideoConfig)


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
            if isinstance(child, DictConfig | ListConfig):
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
