"""Where a model runs: the one place that turns ``device=auto|cpu|cuda|cuda:N`` into a torch device."""

from __future__ import annotations

import torch

from segvn.errors import ConfigError


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; clear error without a GPU."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device={name!r}: use auto, cpu, cuda or cuda:N ({err})") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA GPU is visible to torch; use device=cpu or device=auto")
    return device
