"""Exporting a checkpoint's network to ONNX or TorchScript, and running exported files like the model.

The exported graph is the network's normalisation and its smp network (``SegmentationNetwork.normalize``
and ``.model``) with a dynamic batch, height and width: input ``images``, RGB 0-255 float32 ``(B, 3, H, W)``
as the PyTorch network takes it, sides divisible by the output stride. Padding to the stride and cropping
back are done outside the graph, by the same :func:`~segvn.models.factory.pad_to_stride` /
:func:`~segvn.models.factory.crop_to` the PyTorch model uses, in :class:`RuntimeModel` (the runtimes'
common wrapper). This exports cleanly with the TorchScript-based ONNX exporter (``dynamo=False``) and
``torch.jit.trace``: DeepLabV3+'s ASPP global pooling upsamples to the traced feature-map shape, which
both record as a shape computation, so one file runs at any stride-multiple size.

Metadata travel with the file (ONNX ``metadata_props``; TorchScript ``_extra_files["segvn.json"]``):
``class_names``, ``training_image_size``, ``output_stride``, ``checkpoint``, ``format``, ``input``
(:data:`INPUT_RGB255`: the graph normalises) and the stored ``data``/``model`` ``config``. A file whose
``input`` is not :data:`INPUT_RGB255` is an older export of the smp network alone, which takes
ImageNet-normalised input: :class:`RuntimeModel` normalises for it, so it runs as before.

At export the file is checked on real frames against PyTorch
(:func:`verify_export`), and the numbers are written to ``<file>.verify.json``. Because the config
travels too, an exported file can stand in for its checkpoint: ``ckpt_path=model.onnx`` in
``evaluate`` and ``predict`` (:class:`ExportedCheckpoint`, :func:`read_model_source`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segvn.errors import CheckpointError, ConfigError, ExportError
from segvn.inference.options import RUNTIMES
from segvn.inference.scale import model_stride, resize_frame, training_size
from segvn.metrics import class_indices
from segvn.models.checkpoint import CONFIG_KEY, Checkpoint, output_channels
from segvn.models.factory import Normalize, crop_to, network_of, pad_to_stride
from segvn.utils.io import replace_link

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "openvino": ".xml"}  # openvino: IR, weights in .bin
META_KEY = "segvn"  # ONNX metadata_props key / TorchScript extra file "segvn.json", a JSON object
MIN_AGREEMENT = 0.999
MIN_AGREEMENT_INT8 = 0.95  # int8 approximates: this catches a broken calibration; evaluate measures the cost
QUANTIZE = ("int8",)
OPSET = 17
STATIC_SHAPES = 4  # input shapes given a fixed-shape ONNX Runtime session each (RuntimeModel)
INPUT_RGB255 = "rgb255"
"""Metadata ``input`` of an export whose graph normalises: it takes RGB 0-255 like the PyTorch network."""


def check_format(fmt: str, name: str = "format") -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"{name} must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def check_quantize(quantize: str | None, fmt: str) -> None:
    """:class:`ConfigError` unless ``quantize`` is null, or int8 with ``format=onnx``."""
    if quantize is None:
        return
    if quantize not in QUANTIZE:
        raise ConfigError(f"quantize must be null or {' | '.join(QUANTIZE)}, got {quantize!r}")
    if fmt not in ("onnx", "openvino"):
        raise ConfigError(
            f"quantize={quantize} needs format=onnx or format=openvino (their runtimes run the int8 network), "
            f"got {fmt}"
        )


def export_metadata(ckpt: Checkpoint, module: nn.Module, fmt: str) -> dict[str, Any]:
    trained = training_size(ckpt.config)
    return {
        "format": fmt,
        "class_names": list(module.class_names),
        "training_image_size": list(trained) if trained else None,
        "output_stride": model_stride(module),
        "checkpoint": str(ckpt.path.resolve()),
        "input": INPUT_RGB255,  # RGB 0-255 float (B, 3, H, W), H and W multiples of output_stride
        "output": "logits (B, C, H, W)",
        # what evaluate/predict rebuild from a checkpoint, so the file can replace it (ckpt_path=FILE)
        "config": {key: _plain(ckpt.config.get(key)) for key in ("data", "model")},
    }


def _plain(node: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def export_network(module: nn.Module, fmt: str, out: Path, meta: dict[str, Any]) -> Path:
    """Write the network of ``module`` (a SegModule) as ``fmt`` to ``out``, metadata included: its
    normalisation and smp network (not the padding, done around the runtime), input ``images`` 0-255."""
    if fmt == "openvino":  # converted from this function's ONNX graph (segvn.inference.openvino)
        from segvn.inference.openvino import export_ir

        export_ir(module, out, meta)
        return out
    net = network_of(module)
    inner = nn.Sequential(OrderedDict(normalize=net.normalize, model=net.model)).eval()
    stride = model_stride(module)
    sample = torch.zeros(1, 3, 4 * stride, 6 * stride)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = replace_link(out.with_name(out.name + ".partial"))  # a link there would send the write out
    with warnings.catch_warnings(), torch.no_grad():
        # torch deprecates the TorchScript-based exporters used here on purpose (ONNX with dynamo=False,
        # torch.jit.trace/save); they still export these networks exactly, and export verifies the file
        warnings.filterwarnings(
            "ignore", r"You are using the legacy TorchScript-based ONNX", DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore", r"The feature will be removed", DeprecationWarning, r"torch\.onnx\."
        )
        warnings.filterwarnings(
            "ignore", r"`torch\.jit\.(trace|trace_method|save)` is deprecated", FutureWarning
        )
        if fmt == "onnx":
            torch.onnx.export(
                inner, (sample,), str(partial), dynamo=False, opset_version=OPSET,
                input_names=["images"], output_names=["logits"],
                dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                              "logits": {0: "batch", 2: "height", 3: "width"}},
            )  # fmt: skip
            write_onnx_metadata(partial, meta)
        else:
            traced = torch.jit.trace(inner, sample)
            torch.jit.save(traced, str(partial), _extra_files={f"{META_KEY}.json": json.dumps(meta)})
    partial.replace(out)  # a rename: a link at ``out`` is replaced, not written through
    return out


def write_onnx_metadata(path: Path, meta: dict[str, Any]) -> None:
    """Store ``meta`` in the ONNX file at ``path`` (``metadata_props``, replacing an earlier entry)."""
    import onnx

    model = onnx.load(str(path))
    for entry in [e for e in model.metadata_props if e.key == META_KEY]:
        model.metadata_props.remove(entry)
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.save(model, str(path))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The segvn metadata of an exported file (``format`` tells which runtime runs it)."""
    return _read_export(path)[0]


def _onnx_channels(model: Any) -> int | None:
    """The class dimension of an ONNX graph's first output (``logits`` (B, C, H, W)); ``None`` if not fixed."""
    outputs = model.graph.output
    dims = outputs[0].type.tensor_type.shape.dim if outputs else []
    return int(dims[1].dim_value) if len(dims) == 4 and dims[1].HasField("dim_value") else None


def _read_export(path: str | Path) -> tuple[dict[str, Any], int | None]:
    """The metadata of an exported file and, for ONNX, its output channels (read from the one load)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: exported model not found; make one with python -m segvn.export")
    if path.suffix == FORMATS["openvino"]:
        from segvn.inference.openvino import read_ir

        return read_ir(path)
    try:
        if path.suffix == ".onnx":
            import onnx

            model = onnx.load(str(path), load_external_data=False)
            props = {p.key: p.value for p in model.metadata_props}
            return json.loads(props[META_KEY]), _onnx_channels(model)
        extra = {f"{META_KEY}.json": ""}
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        return json.loads(extra[f"{META_KEY}.json"]), None
    except Exception as err:  # noqa: BLE001 - anything unreadable is the same problem for the user
        raise ExportError(
            f"{path}: not a segvn export (no readable '{META_KEY}' metadata: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); export it with python -m segvn.export"
        ) from err


class RuntimeModel(nn.Module):
    """An exported file run like the PyTorch network: RGB 0-255 ``(B, 3, H, W)`` (float or uint8) in, logits
    at that size out.

    Pads to the output stride and crops back around the runtime, exactly as ``SegmentationNetwork``
    does. An older export (metadata ``input`` not :data:`INPUT_RGB255`: the smp network alone) gets its
    input normalised here first, so it predicts as it always did.

    ``class_names``, ``training_image_size`` and ``stride`` come from the file's metadata. ONNX runs
    on onnxruntime's CPU provider (CUDA provider when the input is on a GPU and it is installed).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path).expanduser()
        self.meta, channels = _read_export(self.path)
        self.format = check_format(self.meta.get("format", ""), f"{self.path}: format")
        self.class_names = list(self.meta["class_names"])
        self.stride = int(self.meta["output_stride"])
        self.precision = str(self.meta.get("precision", "fp32"))  # fp32, or int8 (quantized ONNX)
        # an older export takes ImageNet-normalised input: normalise for it, outside the graph
        self.normalize = None if self.meta.get("input") == INPUT_RGB255 else Normalize()
        trained = self.meta.get("training_image_size")
        self.training_image_size = tuple(trained) if trained else None
        self._sessions: dict[tuple[int, ...] | None, Any] = {}  # by input shape; None: dynamic
        self._session_lock = threading.Lock()
        self._script = None
        self.threads = int(threads) if threads else None
        if self.format == "torchscript":
            self._script = torch.jit.load(str(self.path), map_location="cpu")
            self._script.eval()
            channels = output_channels(dict(self._script.state_dict()))
        if channels is not None and channels != len(self.class_names):
            raise CheckpointError(
                f"{self.path}: the exported network outputs {channels} channels but its metadata names "
                f"{len(self.class_names)} classes ({', '.join(self.class_names)}); the file is damaged or "
                "not the export of its checkpoint - export the checkpoint again with python -m segvn.export"
            )

    def _onnx_session(self, shape: tuple[int, ...]):
        """The ONNX Runtime session for inputs of ``shape``, built on first use.

        The first :data:`STATIC_SHAPES` input shapes each get a session with those dimensions fixed
        (``add_free_dimension_override_by_name``): ONNX Runtime then folds the shape computations and
        plans memory once, a few percent faster (measured: docs/notes/code_defaults.md). A video or a data set
        has one or two shapes; any further shape runs on one session with the dynamic axes.
        """
        with self._session_lock:
            key = shape if shape in self._sessions or len(self._sessions) < STATIC_SHAPES else None
            if key not in self._sessions:
                self._sessions[key] = self._new_session(key)
            return self._sessions[key]

    def _run(self, image: np.ndarray) -> np.ndarray:
        """Logits of the padded numpy ``image`` (ONNX Runtime here; :class:`OpenVINOModel` overrides it)."""
        session = self._onnx_session(image.shape)
        return session.run(None, {session.get_inputs()[0].name: image})[0]  # "image" in older exports

    def _new_session(self, shape: tuple[int, ...] | None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        # onnxruntime's idle threads spin by default, taking the CPU from the threads that decode,
        # resize, draw and encode around the model: faster without spinning, model-only and end to end
        # (measured: docs/notes/code_defaults.md)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if shape is not None:
            for name, size in zip(("batch", "height", "width"), (shape[0], *shape[2:]), strict=True):
                options.add_free_dimension_override_by_name(name, size)
        return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def set_threads(self, threads: int | None) -> None:
        """ONNX Runtime's intra-op threads per call (``None``: one per physical core), from the next call on."""
        threads = int(threads) if threads else None
        with self._session_lock:
            if threads != self.threads:
                self._sessions.clear()
            self.threads = threads

    def _apply(self, fn, recurse=True):  # .to(device) moves the TorchScript module too
        if self._script is not None:
            self._script._apply(fn)
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x) if self.normalize is not None else x.float()
        x, h, w = pad_to_stride(x, self.stride)
        if self._script is None:
            image = x.detach().cpu().contiguous().numpy()
            out = torch.from_numpy(self._run(image)).to(x.device)
        else:
            out = self._script(x)
        return crop_to(out, h, w)


def as_batch(frames: Sequence[np.ndarray]) -> torch.Tensor:
    """RGB uint8 frames ``(H, W, 3)`` of one size as the network's input: float ``(B, 3, H, W)``, 0-255."""
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()


@torch.inference_mode()
def compare_models(reference: nn.Module, other: nn.Module, batches: Sequence[torch.Tensor]) -> dict[str, Any]:
    """Argmax agreement and max |Δ logits| of ``other`` against ``reference`` over ``batches``."""
    same = total = 0
    max_diff = 0.0
    for x in batches:
        ref, got = reference(x), other(x)
        if got.shape != ref.shape:
            raise ExportError(
                f"the exported model gives logits of {list(got.shape)}, PyTorch {list(ref.shape)}"
            )
        same += int((class_indices(ref) == class_indices(got)).sum())
        total += ref.shape[0] * ref.shape[2] * ref.shape[3]
        max_diff = max(max_diff, float((ref - got).abs().max()))
    return {"pixels": total, "argmax_agreement": same / max(total, 1), "max_abs_logit_diff": max_diff}


def verify_export(
    module: nn.Module,
    path: Path,
    frames: Sequence[np.ndarray],
    sizes: Sequence[tuple[int, int]],
    minimum: float = MIN_AGREEMENT,
) -> dict[str, Any]:
    """``path`` against ``module`` on ``frames`` resized to each of ``sizes``; :class:`ExportError` when
    the argmax agrees on fewer than ``minimum`` of the pixels."""
    exported = open_export(path)
    module = module.eval()
    checks = []
    for h, w in sizes:
        batch = as_batch([resize_frame(f, (h, w)) for f in frames])
        result = compare_models(module, exported, [batch[i : i + 1] for i in range(len(batch))])
        checks.append({"size": [h, w], "frames": len(frames), **result})
        log.info(
            "%s at %dx%d on %d frames: argmax agreement %.5f, max |d logits| %.2e",
            path.name, h, w, len(frames), result["argmax_agreement"], result["max_abs_logit_diff"],
        )  # fmt: skip
    worst = min(c["argmax_agreement"] for c in checks)
    report = {
        "argmax_agreement": worst,
        "max_abs_logit_diff": max(c["max_abs_logit_diff"] for c in checks),
        "min_agreement": minimum,
        "checks": checks,
    }
    if worst < minimum:
        raise ExportError(
            f"{path}: the exported model agrees with PyTorch on only {worst:.4%} of the pixels (needs "
            f"{minimum:.1%}; verify.min_agreement); see {path.name}.verify.json"
        )
    return report


def export_checkpoint(
    ckpt: Checkpoint,
    fmt: str,
    out: str | Path | None = None,
    frames: Sequence[np.ndarray] = (),
    sizes: Sequence[tuple[int, int]] | None = None,
    model_cfg: Any = None,
    quantize: str | None = None,
    calibration: Sequence[np.ndarray] = (),
    min_agreement: float | None = None,
) -> dict[str, Any]:
    """Export ``ckpt`` as ``fmt`` (default file: beside the checkpoint), verify it on ``frames``.

    ``sizes`` default: the frames' own size and the training scale of it (one of them usually not a
    multiple of the stride, so the padding is checked too). ``quantize="int8"`` (ONNX only) writes the
    int8 network calibrated on the RGB ``calibration`` frames at the training scale
    (:mod:`segvn.inference.quantize`). The argmax must agree on ``min_agreement`` of the pixels
    (default :data:`MIN_AGREEMENT`, :data:`MIN_AGREEMENT_INT8` for int8). Writes ``<file>.verify.json``;
    returns it.
    """
    from segvn.inference.scale import ScaleRule
    from segvn.utils.io import write_json

    check_format(fmt)
    check_quantize(quantize, fmt)
    module = ckpt.model(model_cfg)
    suffix = f".{quantize}{FORMATS[fmt]}" if quantize else FORMATS[fmt]
    path = Path(out).expanduser() if out else ckpt.path.with_suffix(suffix)
    meta = export_metadata(ckpt, module, fmt)
    trained = training_size(ckpt.config)

    def at_scale(h: int, w: int) -> tuple[int, int]:
        """The training scale of an ``h`` x ``w`` frame (its own without one), sides stride multiples."""
        return ScaleRule(min(trained or (h, w)), model_stride(module))(h, w)

    start = time.perf_counter()
    if quantize:
        from segvn.inference.quantize import quantize_onnx

        images = [as_batch([resize_frame(f, at_scale(*f.shape[:2]))]).numpy() for f in calibration]
    if quantize and fmt == "openvino":  # NNCF on the same frames (segvn.inference.openvino)
        from segvn.inference.openvino import export_ir

        if not images:
            raise ExportError(f"{path}: int8 quantization needs calibration frames (calibration.frames >= 1)")
        meta = export_ir(module, path, meta, calibration=images)
    elif quantize:
        partial = replace_link(path.with_name(path.name + ".partial"))
        log.info("quantizing to %s, calibrated on %d frames at the training scale", quantize, len(images))
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export_network(module, fmt, Path(tmp) / "fp32.onnx", meta)
            meta |= {"precision": quantize, "calibration": quantize_onnx(fp32, partial, images)}
        write_onnx_metadata(partial, meta)
        partial.replace(path)
    else:
        export_network(module, fmt, path, meta)
    seconds = time.perf_counter() - start
    report: dict[str, Any] = {
        "file": str(path.resolve()),
        "format": fmt,
        "precision": quantize or "fp32",
        "export_seconds": round(seconds, 3),
        "metadata": meta,
        "versions": _versions(fmt),
    }
    if frames:
        if sizes is None:
            h, w = frames[0].shape[:2]
            sizes = [(h, w)]
            if trained:
                sizes.append(at_scale(h, w))
        minimum = (
            min_agreement if min_agreement is not None else MIN_AGREEMENT_INT8 if quantize else MIN_AGREEMENT
        )
        report["verification"] = verify_export(module, path, frames, sizes, minimum)
    write_json(path.with_name(path.name + ".verify.json"), report)
    return report


def _versions(fmt: str) -> dict[str, str]:
    versions = {"torch": torch.__version__}
    if fmt == "onnx":
        import onnx
        import onnxruntime

        versions |= {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "opset": str(OPSET)}
    if fmt == "openvino":
        import nncf
        import openvino

        versions |= {"openvino": openvino.__version__, "nncf": nncf.__version__, "opset": str(OPSET)}
    return versions


def is_exported_file(path: str | Path) -> bool:
    """Whether ``path`` is a segvn export (ONNX by suffix; TorchScript: a zip with our metadata file)
    rather than a Lightning checkpoint."""
    path = Path(path).expanduser()
    if path.suffix in (".onnx", FORMATS["openvino"]):
        return True
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith(f"extra/{META_KEY}.json") for name in zf.namelist())


@dataclass
class ExportedCheckpoint(Checkpoint):
    """An exported file given as ``ckpt_path``: config and classes from its metadata, and it is the model.

    ``model()`` returns the :class:`RuntimeModel` that runs the file, so evaluate and predict work the
    same as from the ``.ckpt`` (runtime: the file's format). Commands that need the PyTorch network
    (``visualize``, ``export``) refuse it.
    """

    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def read(cls, path: str | Path) -> ExportedCheckpoint:
        path = Path(path).expanduser()
        meta, channels = _read_export(path)
        config = meta.get("config")
        if not config or not config.get("model"):
            raise CheckpointError(
                f"{path}: this export carries no training config (it predates ckpt_path=FILE); export the "
                f"checkpoint again with python -m segvn.export, or give ckpt_path=<the .ckpt> model_file={path}"
            )
        ckpt = cls(path, {CONFIG_KEY: config, "state_dict": {}}, meta)
        ckpt.require_outputs(channels, "exported network")  # ONNX; TorchScript when its model loads
        return ckpt

    def model(self, model_cfg: Any = None) -> RuntimeModel:
        model = open_export(self.path)
        if model.class_names != self.class_names:
            raise CheckpointError(
                f"{self.path}: its metadata names {len(model.class_names)} classes "
                f"({', '.join(model.class_names)}) but its stored config {len(self.class_names)} "
                f"({', '.join(self.class_names)}); export the checkpoint again with python -m segvn.export"
            )
        return model


def read_model_source(path: str | Path) -> Checkpoint:
    """``ckpt_path`` read once: a :class:`Checkpoint`, or an :class:`ExportedCheckpoint` for an export."""
    return ExportedCheckpoint.read(path) if is_exported_file(path) else Checkpoint.read(path)


def open_export(path: str | Path, threads: int | None = None) -> RuntimeModel:
    """The :class:`RuntimeModel` of an exported file: an OpenVINO IR (``.xml``) runs in OpenVINO."""
    if Path(path).suffix == FORMATS["openvino"]:
        from segvn.inference.openvino import OpenVINOModel

        return OpenVINOModel(path, threads)
    return RuntimeModel(path, threads)


def runtime_name(model: nn.Module) -> str:
    """The runtime that runs ``model``: ``torch``, or the format of an exported file."""
    return model.format if isinstance(model, RuntimeModel) else "torch"


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


__all__ = [
    "ExportError",
    "ExportedCheckpoint",
    "FORMATS",
    "INPUT_RGB255",
    "RuntimeModel",
    "as_batch",
    "compare_models",
    "export_checkpoint",
    "export_network",
    "is_exported_file",
    "open_export",
    "read_metadata",
    "read_model_source",
    "runtime_model",
    "runtime_name",
    "verify_export",
]
