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
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segvn.errors import ConfigError
from segvn.inference.device import pick_device
from segvn.inference.export import read_metadata, runtime_model, runtime_name
from segvn.inference.options import Precision
from segvn.inference.scale import ScaleRule, model_stride, training_size
from segvn.utils.cpu import native_bf16_cpu

log = logging.getLogger(__name__)

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


def choose_runtime(runtime: str, precision: str, device: Any, model_file: Any = None) -> tuple[str, bool]:
    """The runtime of ``runtime=auto`` (predict's default), and whether to race the others against it.

    auto: ``model_file``'s format when one is given; ``torch`` on a GPU; ``torch`` for ``precision=bf16``;
    else on the CPU ``onnx`` with ``True``: :func:`inference_model` then times it against OpenVINO fp32,
    and where the CPU has native bf16 (:func:`native_bf16_cpu`) and ``precision=auto`` against torch bf16
    and OpenVINO bf16 too, on this network, and keeps the fastest (:func:`faster_runtime`). Any other
    ``runtime`` is kept as it is.
    """
    if runtime != "auto":
        return runtime, False
    if model_file:
        return str(read_metadata(Path(str(model_file)).expanduser()).get("format", "onnx")), False
    if torch.device(device).type != "cpu" or str(precision) == "bf16":
        return "torch", False
    return "onnx", True


RACE_SIZE = (352, 480)
"""The frame size of the race when the checkpoint was trained at native size."""

RACE_MARGIN = 1.1
"""torch bf16 or OpenVINO replaces ONNX Runtime only when this much faster: two ONNX workers gain a
little more in the video pipeline (``model_workers``) than a single frame's time shows."""


def latency_ms(model: nn.Module, size: tuple[int, int], repeats: int = 3) -> float:
    """The fastest of ``repeats`` calls of ``model`` on one ``size`` frame, after a warm-up call (ms)."""
    x = torch.randint(0, 256, (1, 3, *size), dtype=torch.uint8)  # an RGB frame as predict feeds it
    with torch.inference_mode():
        model(x)  # oneDNN primitives, ONNX Runtime allocations
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def faster_runtime(
    exported: nn.Module,
    module: nn.Module,
    size: tuple[int, int],
    channels_last: Any = None,
    openvino: Any = None,
    bf16: bool = True,
) -> tuple[nn.Module, str, InferencePrecision]:
    """The fastest on one ``size`` frame of ONNX Runtime fp32 (``exported``), torch bf16 (``module``; when
    ``bf16``) and OpenVINO (``openvino``, an :class:`~segvn.inference.openvino.OpenVINOModel` of the same
    export: fp32, and bf16 when ``bf16``).

    The network decides which is faster (docs/notes/code_defaults.md), so it is measured on one frame
    and every time is logged; another runtime replaces ONNX Runtime when :data:`RACE_MARGIN` faster.
    """
    fast = InferencePrecision(bf16=True, channels_last=True if channels_last is None else bool(channels_last))
    times = {"onnx": latency_ms(exported, size)}
    if bf16:
        times["torch bf16"] = latency_ms(with_precision(module, fast), size)
    if openvino is not None:
        for name in ("fp32", "bf16") if bf16 else ("fp32",):
            if openvino.set_precision(name) == name:  # a bf16 hint without native bf16 runs fp32: no race
                times[f"openvino {name}"] = latency_ms(openvino, size)
    won = min(times, key=lambda name: times[name] * (1 if name == "onnx" else RACE_MARGIN))
    log.info(
        "runtime=auto on the CPU: %s ms per %dx%d frame -> %s",
        ", ".join(f"{name} {ms:.1f}" for name, ms in times.items()), *size, won,
    )  # fmt: skip
    if fast.channels_last and won != "torch bf16":  # back to the module as it was
        module.to(memory_format=torch.contiguous_format)
    if won == "torch bf16":
        return module, "torch", fast
    if won.startswith("openvino"):
        precision = won.split()[1]
        openvino.set_precision(precision)
        return openvino, "openvino", InferencePrecision(bf16=precision == "bf16")
    return exported, "onnx", InferencePrecision()


def choose_precision(
    precision: str = "auto", channels_last: Any = None, device: Any = "cpu", runtime: str = "torch"
) -> InferencePrecision:
    """``precision`` (auto | fp32 | bf16) and ``channels_last`` (null = auto, true, false) for ``device``.

    auto: bf16 + channels_last on a GPU; fp32 (NCHW, :data:`CPU_CHANNELS_LAST`) on the CPU (``runtime=auto``
    may still pick torch bf16 there: :func:`faster_runtime`). ``runtime=openvino`` takes fp32 or bf16 (its
    precision hint; auto: fp32). The other exported runtimes run in fp32 as exported: asking them for
    bf16 is a :class:`ConfigError`.
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
    chosen, race = choose_runtime(str(cfg.runtime), str(cfg.precision), device, cfg.model_file)
    model = runtime_model(chosen, ckpt, module, cfg.model_file, out_dir, device)
    runtime = runtime_name(model)
    if race and runtime == "onnx" and model is not module:  # not for an exported ckpt_path
        from segvn.inference.openvino import OpenVINOModel

        trained = training_size(ckpt.config) or RACE_SIZE
        size = ScaleRule(min(trained), model_stride(module))(*trained)  # rounded to the stride
        bf16 = str(cfg.precision) == "auto" and native_bf16_cpu()
        twin = OpenVINOModel(model.path)  # the same ONNX export, read by OpenVINO
        model, runtime, precision = faster_runtime(model, module, size, cfg.channels_last, twin, bf16)
    else:
        precision = choose_precision(cfg.precision, cfg.channels_last, device, runtime)
    if runtime == "openvino":  # its precision is a compile hint, not a wrapper
        effective = model.set_precision("bf16" if precision.bf16 else "fp32")
        if precision.bf16 and effective != "bf16":
            log.warning("precision=bf16: this CPU has no native bf16, so OpenVINO computes in fp32")
        precision = InferencePrecision(bf16=effective == "bf16")
    if getattr(model, "precision", "fp32") == "int8":  # a quantized file (segvn.export quantize=int8)
        precision = InferencePrecision(int8=True)
    if runtime == "openvino":
        return model, runtime, precision, device
    return with_precision(model, precision), runtime, precision, device
