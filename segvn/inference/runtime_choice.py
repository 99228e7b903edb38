"""Which runtime runs ``predict`` and ``evaluate`` (and :func:`segvn.load_model`), and the model it runs.

:func:`inference_model` is the one way in, from the commands' ``device``, ``runtime``, ``model_file``,
``precision`` and ``channels_last``: the runtime asked for (:func:`choose_runtime`), its model
(:func:`runtime_model`: the PyTorch network, or an exported file run by
:class:`~segvn.inference.runtimes.RuntimeModel`), and the precision it runs in
(:mod:`segvn.inference.precision`), returned together as an :class:`InferenceModel`.

``runtime=auto`` on the CPU races ONNX Runtime against OpenVINO (and torch bf16 where the CPU computes
bf16 natively) on one frame and keeps the fastest (:func:`faster_runtime`); the winner is remembered per
checkpoint, frame size, settings, CPU and versions (:mod:`segvn.inference.race_cache`), so later starts
take it without racing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segvn.errors import CheckpointError, ConfigError
from segvn.inference.device import pick_device
from segvn.inference.export import export_metadata, export_network
from segvn.inference.formats import FORMATS, read_metadata
from segvn.inference.options import RUNTIMES
from segvn.inference.precision import InferencePrecision, choose_precision, with_precision
from segvn.inference.race_cache import RaceCache, race_key
from segvn.inference.runtimes import RuntimeModel, open_export, runtime_name
from segvn.inference.scale import ScaleRule, model_stride, training_size
from segvn.models.checkpoint import Checkpoint
from segvn.utils.cpu import native_bf16_cpu

log = logging.getLogger(__name__)

RACE_SIZE = (352, 480)
"""The frame size of the race when the checkpoint was trained at native size."""

RACE_MARGIN = 1.1
"""torch bf16 or OpenVINO replaces ONNX Runtime only when this much faster: two ONNX workers gain a
little more in the video pipeline (``model_workers``) than a single frame's time shows."""


def choose_runtime(runtime: str, precision: str, device: Any, model_file: Any = None) -> tuple[str, bool]:
    """The runtime of ``runtime=auto`` (predict's default), and whether to race the others against it.

    auto: ``model_file``'s format when one is given; ``torch`` on a GPU; ``torch`` for ``precision=bf16``;
    else on the CPU ``onnx`` with ``True``: :func:`inference_model` then times it against OpenVINO fp32,
    and where the CPU has native bf16 (:func:`~segvn.utils.cpu.native_bf16_cpu`) and
    ``precision=auto`` against torch bf16 and OpenVINO bf16 too, on this network, and keeps the fastest
    (:func:`faster_runtime`). Any other ``runtime`` is kept as it is.
    """
    if runtime != "auto":
        return runtime, False
    if model_file:
        return str(read_metadata(Path(str(model_file)).expanduser()).get("format", "onnx")), False
    if torch.device(device).type != "cpu" or str(precision) == "bf16":
        return "torch", False
    return "onnx", True


def runtime_model(
    runtime: str,
    ckpt: Checkpoint,
    module: nn.Module,
    model_file: Any,
    out_dir: Path,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """The model ``predict``/``evaluate`` run: ``module`` for ``torch``, else an exported file.

    ``model_file`` (an export of this checkpoint) is used when given, after checking its classes; without
    it the checkpoint is exported into ``out_dir`` first (under a second for ResNet-18; not verified
    there: ``segvn.export`` verifies on real frames).
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if isinstance(module, RuntimeModel):  # ckpt_path is an exported file: it is the model
        if model_file:
            raise ConfigError(
                f"ckpt_path={module.path} is an exported model already; model_file goes with a .ckpt"
            )
        log.info("runtime %s: ckpt_path %s is a %s export", module.format, module.path, module.format)
        return module
    if runtime in ("onnx", "openvino") and torch.device(device).type != "cpu" and not model_file:
        log.warning("runtime=%s runs on the CPU; on %s runtime=torch is used", runtime, device)
        runtime = "torch"
    if runtime == "torch":
        if model_file:
            raise ConfigError(
                "model_file is run by runtime=onnx, openvino or torchscript; runtime=torch runs ckpt_path"
            )
        return module
    if model_file:
        path = Path(str(model_file)).expanduser()
        expected = runtime
        meta = read_metadata(path)
        if meta.get("format") != expected:
            raise ConfigError(
                f"model_file={path} is a {meta.get('format')} export but runtime={runtime}; "
                f"set runtime={meta.get('format')} or export with format={expected}"
            )
    else:
        path = Path(out_dir) / f"model{FORMATS[runtime]}"
        export_network(module, runtime, path, export_metadata(ckpt, module, runtime))
    exported = open_export(path)
    if exported.class_names != list(module.class_names):
        raise CheckpointError(
            f"{path}: the exported model predicts {', '.join(exported.class_names)} but {ckpt.path} "
            f"{', '.join(module.class_names)}; export this checkpoint (python -m segvn.export ckpt_path=...)"
        )
    log.info("runtime %s: %s", runtime, path)
    return exported


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


def _fast(channels_last: Any) -> InferencePrecision:
    """torch bf16 as the race runs it: channels_last unless ``channels_last=false``."""
    return InferencePrecision(bf16=True, channels_last=True if channels_last is None else bool(channels_last))


def _racers(bf16: bool) -> tuple[str, ...]:
    """The names a race may give (:func:`race_times`)."""
    return ("onnx", "openvino fp32", *(("torch bf16", "openvino bf16") if bf16 else ()))


def race_times(
    exported: nn.Module,
    module: nn.Module,
    size: tuple[int, int],
    fast: InferencePrecision,
    openvino: Any,
    bf16: bool,
) -> dict[str, float]:
    """Milliseconds per ``size`` frame of ONNX Runtime (``exported``), torch bf16 (``module`` in ``fast``;
    when ``bf16``) and OpenVINO (``openvino``: fp32, and bf16 when ``bf16``); ``module`` is left in the
    memory format it had."""
    times = {"onnx": latency_ms(exported, size)}
    if bf16:
        times["torch bf16"] = latency_ms(with_precision(module, fast), size)
        if fast.channels_last:  # back to the module as it was
            module.to(memory_format=torch.contiguous_format)
    if openvino is not None:
        for name in ("fp32", "bf16") if bf16 else ("fp32",):
            if openvino.set_precision(name) == name:  # a bf16 hint without native bf16 runs fp32: no race
                times[f"openvino {name}"] = latency_ms(openvino, size)
    return times


def fastest(times: dict[str, float]) -> str:
    """The winner of ``times``: another runtime beats ``onnx`` only when :data:`RACE_MARGIN` faster."""
    return min(times, key=lambda name: times[name] * (1 if name == "onnx" else RACE_MARGIN))


def _times_text(times: dict[str, float], size: tuple[int, int]) -> str:
    return f"{', '.join(f'{name} {ms:.1f}' for name, ms in times.items())} ms per {size[0]}x{size[1]} frame"


def _winner_model(
    won: str, exported: nn.Module, module: nn.Module, fast: InferencePrecision, openvino: Any
) -> tuple[nn.Module, str, InferencePrecision]:
    """The model, runtime and precision of the race's winner ``won``."""
    if won == "torch bf16":
        return module, "torch", fast
    if won.startswith("openvino"):
        precision = won.split()[1]
        openvino.set_precision(precision)
        return openvino, "openvino", InferencePrecision(bf16=precision == "bf16")
    return exported, "onnx", InferencePrecision()


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
    fast = _fast(channels_last)
    times = race_times(exported, module, size, fast, openvino, bf16)
    won = fastest(times)
    log.info("runtime=auto on the CPU: %s -> %s", _times_text(times, size), won)
    return _winner_model(won, exported, module, fast, openvino)


def cached_race(
    exported: RuntimeModel, module: nn.Module, ckpt: Checkpoint, precision: Any, channels_last: Any
) -> tuple[nn.Module, str, InferencePrecision]:
    """:func:`faster_runtime` for ``runtime=auto`` on the CPU, at the training scale of ``ckpt``, raced
    once per checkpoint and setup: a winner remembered in the :class:`~segvn.inference.race_cache.RaceCache`
    is taken as it is (and logged with the times it won with); otherwise the race runs and is stored."""
    from segvn.inference.openvino import OpenVINOModel

    trained = training_size(ckpt.config) or RACE_SIZE
    size = ScaleRule(min(trained), model_stride(module))(*trained)  # rounded to the stride
    bf16 = str(precision) == "auto" and native_bf16_cpu()
    fast = _fast(channels_last)
    cache = RaceCache()
    try:
        key = race_key(ckpt.path, size, precision=str(precision), channels_last=channels_last, bf16=bf16)
    except OSError:  # a checkpoint without a file to name: race, remember nothing
        key = None
    entry = cache.lookup(key) if key is not None else None
    if entry is not None and entry["winner"] not in _racers(bf16):
        log.warning(
            "%s: unknown runtime %r in the runtime race cache; racing again", cache.path, entry["winner"]
        )
        entry = None
    if entry is not None:
        won = entry["winner"]
        log.info(
            "runtime=auto: %s (cached race from %s: %s)",
            won,
            cache.path,
            _times_text(entry["times_ms"], size),
        )
        twin = OpenVINOModel(exported.path) if won.startswith("openvino") else None
        return _winner_model(won, exported, module, fast, twin)
    twin = OpenVINOModel(exported.path)  # the same ONNX export, read by OpenVINO
    times = race_times(exported, module, size, fast, twin, bf16)
    won = fastest(times)
    log.info("runtime=auto on the CPU: %s -> %s", _times_text(times, size), won)
    if key is not None:
        cache.store(key, won, times)
    return _winner_model(won, exported, module, fast, twin)


@dataclass(frozen=True)
class InferenceModel:
    """What ``predict``/``evaluate`` run: the ``model`` to call on RGB 0-255 batches (the network, an
    exported file's runtime, or either in its :class:`~segvn.inference.precision.PrecisionModel`), the
    name of its ``runtime``, its ``precision`` and the ``device``."""

    model: nn.Module
    runtime: str
    precision: InferencePrecision
    device: torch.device


def inference_model(cfg: Any, ckpt: Any, module: nn.Module, out_dir: Path) -> InferenceModel:
    """The model ``predict``/``evaluate`` run, from their ``device``, ``runtime``, ``model_file``,
    ``precision`` and ``channels_last``: the runtime (:func:`runtime_model`, the race of
    :func:`cached_race` for ``runtime=auto``) with :func:`~segvn.inference.precision.with_precision`."""
    device = pick_device(cfg.device)
    chosen, race = choose_runtime(str(cfg.runtime), str(cfg.precision), device, cfg.model_file)
    model = runtime_model(chosen, ckpt, module, cfg.model_file, out_dir, device)
    runtime = runtime_name(model)
    if race and runtime == "onnx" and model is not module:  # not for an exported ckpt_path
        model, runtime, precision = cached_race(model, module, ckpt, cfg.precision, cfg.channels_last)
    else:
        precision = choose_precision(cfg.precision, cfg.channels_last, device, runtime)
    if runtime == "openvino":  # its precision is a compile hint, not a wrapper
        effective = model.set_precision("bf16" if precision.bf16 else "fp32")
        if precision.bf16 and effective != "bf16":
            log.warning("precision=bf16: this CPU has no native bf16, so OpenVINO computes in fp32")
        precision = InferencePrecision(bf16=effective == "bf16")
    if getattr(model, "precision", "fp32") == "int8":  # a quantized file (segvn.export quantize=int8)
        precision = InferencePrecision(int8=True)
    if runtime != "openvino":
        model = with_precision(model, precision)
    return InferenceModel(model, runtime, precision, device)


__all__ = [
    "InferenceModel",
    "cached_race",
    "choose_runtime",
    "faster_runtime",
    "inference_model",
    "latency_ms",
    "runtime_model",
]
