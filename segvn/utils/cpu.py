"""What this CPU computes natively, for choices that depend on it (training and inference precision)."""

from __future__ import annotations

from pathlib import Path

import torch

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags (``/proc/cpuinfo``) of native bf16 arithmetic, where bf16 autocast pays on the CPU."""


def native_bf16_cpu(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX; Linux, from ``cpuinfo``).

    Without it bf16 is emulated: autocast runs several times slower than fp32 (a training step, an
    inference), so bf16 is only chosen where this is true.
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = set(text.split())
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def on_cpu(accelerator: str) -> bool:
    """Whether Lightning's ``trainer.accelerator`` trains on the CPU (``auto`` does without CUDA)."""
    accelerator = str(accelerator).lower()
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def bf16_if_native(accelerator: str = "cpu", cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """Lightning's ``trainer.precision`` for a fast recipe: ``bf16-mixed`` on a GPU and on a CPU with
    native bf16, else ``32-true`` (emulated bf16 would make every step slower, not faster).

    ``${segvn.bf16_if_native:${trainer.accelerator}}`` in a config; ``auto`` is a GPU when CUDA is there.

    >>> bf16_if_native("gpu")
    'bf16-mixed'
    >>> bf16_if_native("cpu", cpuinfo="/nonexistent")
    '32-true'
    """
    return "bf16-mixed" if not on_cpu(accelerator) or native_bf16_cpu(cpuinfo) else "32-true"
