"""How a PyTorch network runs for ``predict`` and ``evaluate``: number format and memory order per device.

On a GPU, bf16 autocast and channels_last (NHWC) are the fast way to run a convolutional network
(tensor cores, cuDNN's NHWC kernels), and segmentation labels barely move: the argmax of bf16 logits
agrees with fp32 on all but a few boundary pixels. On the CPU the default stays fp32 NCHW, the numbers
training's own test step computes and the exports are verified against; ``precision=bf16`` and
``channels_last=true`` are there for CPUs where they pay (``benchmarks/bench_runtimes.py``, README).

``precision`` and ``channels_last`` apply to ``runtime=torch``; an exported file (ONNX, TorchScript)
runs as it was exported, in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segvn.errors import ConfigError
from segvn.inference.device import pick_device
from segvn.inference.export import runtime_model, runtime_name

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class InferencePrecision:
    """The resolved choice: bf16 autocast or fp32, and whether weights and inputs are channels_last."""

    bf16: bool = False
    channels_last: bool = False

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def describe(self) -> str:
        return f"{self.name}{', channels_last' if self.channels_last else ''}"


CPU_CHANNELS_LAST = False
"""On the CPU ``runtime=torch`` runs as the LightningModule does by default (fp32, NCHW), so evaluate
reproduces the test metrics of training exactly; the fast CPU path is the default ``runtime=onnx``
(channels_last and bf16 are measured beside it in ``benchmarks/bench_runtimes.py``)."""


def choose_precision(
    precision: str = "auto", channels_last: Any = None, device: Any = "cpu", runtime: str = "torch"
) -> InferencePrecision:
    """``precision`` (auto | fp32 | bf16) and ``channels_last`` (null = auto, true, false) for ``device``.

    auto: bf16 + channels_last on a GPU; fp32 (NCHW, :data:`CPU_CHANNELS_LAST`) on the CPU. Exported runtimes
    run in fp32 as exported: asking them for bf16 is a :class:`ConfigError`.
    """
    if str(precision) not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if channels_last not in (None, True, False):
        raise ConfigError(f"channels_last must be true, false or null (auto), got {channels_last!r}")
    if runtime != "torch":
        if str(precision) == "bf16" or channels_last:
            raise ConfigError(
                f"precision=bf16 and channels_last=true apply to runtime=torch; the {runtime} export runs in "
                "fp32 as exported (set runtime=torch, or leave precision=auto)"
            )
        return InferencePrecision()
    gpu = torch.device(device).type == "cuda"
    bf16 = gpu if str(precision) == "auto" else str(precision) == "bf16"
    if channels_last is None:
        channels_last = gpu or CPU_CHANNELS_LAST
    return InferencePrecision(bf16=bf16, channels_last=bool(channels_last))


class PrecisionModel(nn.Module):
    """``model`` run with ``precision``: channels_last weights and inputs, bf16 autocast; fp32 logits out.

    Attributes of the wrapped model (``class_names``, ...) are read through, so it stands in for it.
    """

    def __init__(self, model: nn.Module, precision: InferencePrecision) -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        if precision.channels_last:
            model.to(memory_format=torch.channels_last)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.precision.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.precision.bf16):
            logits = self.model(images)
        return logits.float().contiguous()


def with_precision(model: nn.Module, precision: InferencePrecision) -> nn.Module:
    """``model`` itself when ``precision`` changes nothing (fp32, NCHW), else a :class:`PrecisionModel`."""
    if not precision.bf16 and not precision.channels_last:
        return model
    return PrecisionModel(model, precision)


def inference_model(
    cfg: Any, ckpt: Any, module: nn.Module, out_dir: Path
) -> tuple[nn.Module, str, InferencePrecision, torch.device]:
    """The model ``predict``/``evaluate`` run, from their ``device``, ``runtime``, ``model_file``,
    ``precision`` and ``channels_last``: the runtime (:func:`~segvn.inference.export.runtime_model`)
    with :func:`with_precision`; returns it, the runtime's name, the precision and the device."""
    device = pick_device(cfg.device)
    model = runtime_model(cfg.runtime, ckpt, module, cfg.model_file, out_dir, device)
    runtime = runtime_name(model)
    precision = choose_precision(cfg.precision, cfg.channels_last, device, runtime)
    return with_precision(model, precision), runtime, precision, device
