"""Small helpers shared by the entry points: config location, resolvers, instantiation, errors."""

from segvn.utils.config import (
    CONF_DIR,
    instantiate_dict,
    register_resolvers,
    save_resolved_config,
    to_container,
)
from segvn.utils.run import run_task

__all__ = [
    "CONF_DIR",
    "instantiate_dict",
    "register_resolvers",
    "run_task",
    "save_resolved_config",
    "to_container",
]
