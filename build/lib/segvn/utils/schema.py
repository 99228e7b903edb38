"""Typed schemas for config groups whose values are easy to get wrong.

Registered in Hydra's ConfigStore and pulled into the YAML files through their defaults list,
so a typo such as ``video.backend=decrod`` fails at start-up naming the allowed values.
(``metrics`` has none: Hydra's parser turns ``metrics.absent=nan`` into a float before any enum
sees it, so segvn.evaluate reads that value as text instead.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from hydra.core.config_store import ConfigStore


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
