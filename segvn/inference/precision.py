"""How a PyTorch network runs for ``predict`` and ``evaluate``: number format and memory order per device.

On a GPU, bf16 autocast and channels_last (NHWC) are the fast way to run a convolutional network
(tensor cores, cuDNN's NHWC kernels), and segmentation labels barely move: the argmax of bf16 logits
agrees with fp32 on all but a few boundary pixels. On the CPU the default stays fp32 NCHW, the numbers
training's own test step computes and the exports are verified against; ``precision=bf16`` and
``channels_last=true`` are there for CPUs where they pay (``benchmarks/bench_runtimes.py``; measured:
docs/notes/code_defaults.md).

``precision`` and ``channels_last`` apply to ``runtime=torch``; ``precision=bf16`` also to
``runtime=openvino`` (its bf16 precision hint); other exported files (ONNX, TorchScript) run as they
were exported, in fp32.

:func:`~segvn.inference.runtime_choice.inference_model` applies the choice made here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from segvn.errors import ConfigError
from segvn.inference.options import Precision

PRECISIONS = tuple(p.value for p in Precision)


@dataclass(frozen=True)
class InferencePrecision:
    """The resolved choice: bf16 autocast or fp32, and whether weights and inputs are channels_last
    (``int8``: a quantized ONNX file, whose precision is the file's own)."""

    bf16: bool = False
    channels_last: bool = False
    int8: bool = False

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "int8" if self.int8 else "fp32"

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

    auto: bf16 + channels_last on a GPU; fp32 (NCHW, :data:`CPU_CHANNELS_LAST`) on the CPU (``runtime=auto``
    may still pick torch bf16 there: :func:`~segvn.inference.runtime_choice.faster_runtime`).
    ``runtime=openvino`` takes fp32 or bf16 (its precision hint; auto: fp32). The other exported runtimes
    run in fp32 as exported: asking them for bf16 is a :class:`ConfigError`.
    """
    if str(precision) not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if channels_last not in (None, True, False):
        raise ConfigError(f"channels_last must be true, false or null (auto), got {channels_last!r}")
    if runtime == "openvino" and not channels_last:
        return InferencePrecision(bf16=str(precision) == "bf16")
    if runtime != "torch":
        if str(precision) == "bf16" or channels_last:
            raise ConfigError(
                f"precision=bf16 and channels_last=true apply to runtime=torch (precision=bf16 to openvino "
                f"too); the {runtime} export runs in fp32 as exported (set runtime=torch, or leave precision=auto)"
            )
        return InferencePrecision()
    gpu = torch.device(device).type == "cuda"
    bf16 = gpu if str(precision) == "auto" else str(precision) == "bf16"
    if channels_last is None:
        channels_last = gpu or CPU_CHANNELS_LAST
    return InferencePrecision(bf16=bf16, channels_last=bool(channels_last))


class PrecisionModel(nn.Module):
    """``model`` run with ``precision``: channels_last weights and inputs, bf16 autocast; fp32 logits out.

    Only a wrapper around the call: what the model is (``class_names``, its network) is read from
    ``model`` itself, the model it was given.
    """

    def __init__(self, model: nn.Module, precision: InferencePrecision) -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        if precision.channels_last:
            model.to(memory_format=torch.channels_last)

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
