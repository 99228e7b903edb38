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
from segvn.inference.export import read_metadata, runtime_model, runtime_name

PRECISIONS = ("auto", "fp32", "bf16")

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags (``/proc/cpuinfo``) of native bf16 arithmetic, where bf16 autocast pays on the CPU."""


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


def native_bf16_cpu(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX; Linux, from ``cpuinfo``).

    There bf16 autocast with channels_last ran DeepLabV3+ ResNet-18 at 2.3-2.5x eager fp32 and ahead of
    ONNX Runtime fp32 (1.6-2.0x eager) on both CPUs measured (AMD EPYC with AVX512-BF16, Intel Xeon with
    AMX; ``bench_runtimes.py``, README); without it bf16 is emulated and slower than fp32.
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = set(text.split())
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def choose_runtime(runtime: str, precision: str, device: Any, model_file: Any = None) -> tuple[str, bool]:
    """The runtime of ``runtime=auto`` (predict's default), and whether it is torch for bf16 on the CPU.

    auto: ``model_file``'s format when one is given; ``torch`` on a GPU; on the CPU ``torch`` in bf16
    (+ channels_last) where the CPU has native bf16 (:func:`native_bf16_cpu`) and ``precision`` allows it,
    else ``onnx`` (fp32): the fastest by measurement on each (``bench_runtimes.py``, README). Any other
    ``runtime`` is kept as it is.
    """
    if runtime != "auto":
        return runtime, False
    if model_file:
        return str(read_metadata(Path(str(model_file)).expanduser()).get("format", "onnx")), False
    if torch.device(device).type != "cpu":
        return "torch", False
    if str(precision) != "fp32" and native_bf16_cpu():
        return "torch", True
    return ("torch", False) if str(precision) == "bf16" else ("onnx", False)


def choose_precision(
    precision: str = "auto",
    channels_last: Any = None,
    device: Any = "cpu",
    runtime: str = "torch",
    cpu_bf16: bool = False,
) -> InferencePrecision:
    """``precision`` (auto | fp32 | bf16) and ``channels_last`` (null = auto, true, false) for ``device``.

    auto: bf16 + channels_last on a GPU, and on the CPU when ``cpu_bf16`` (``runtime=auto`` chose torch for
    native bf16, :func:`choose_runtime`); else fp32 (NCHW, :data:`CPU_CHANNELS_LAST`) on the CPU. Exported
    runtimes run in fp32 as exported: asking them for bf16 is a :class:`ConfigError`.
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
    fast = gpu or cpu_bf16
    bf16 = fast if str(precision) == "auto" else str(precision) == "bf16"
    if channels_last is None:
        channels_last = fast or CPU_CHANNELS_LAST
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
    chosen, cpu_bf16 = choose_runtime(str(cfg.runtime), str(cfg.precision), device, cfg.model_file)
    model = runtime_model(chosen, ckpt, module, cfg.model_file, out_dir, device)
    runtime = runtime_name(model)
    precision = choose_precision(
        cfg.precision, cfg.channels_last, device, runtime, cpu_bf16=cpu_bf16 and runtime == "torch"
    )
    return with_precision(model, precision), runtime, precision, device
