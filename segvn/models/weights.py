"""Loading pretrained encoder weights from local files, safely.

Real users may pass ``encoder_weights: imagenet`` (smp downloads them); offline machines and
tests pass a path to a torchvision or timm state dict. Files are read with
``torch.load(weights_only=True)`` (or safetensors), so no pickled code ever runs.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from pathlib import Path

import torch
from torch import nn

from segvn.errors import WeightsError

log = logging.getLogger(__name__)


_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")


def _exists(name: str) -> bool:
    """Whether ``module.attr`` names a real object, without importing anything new below a package."""
    module, _, attr = name.rpartition(".")
    module = module or "builtins"
    if module in sys.modules:
        return hasattr(sys.modules[module], attr)
    if "." not in module:
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            return False
    return True  # a submodule not imported yet: assume real rather than import it


def blocked_global(err: BaseException) -> str | None:
    """The Python object a weights-only ``torch.load`` refused to rebuild, when the file really names one.

    ``None`` when no object was named, or the name is cut off (``torch._utils._reb``): then the file is
    truncated or corrupt, not unsafe.
    """
    match = _GLOBAL.search(str(err))
    return match.group(1) if match and _exists(match.group(1)) else None


def load_failure(err: BaseException) -> str:
    """torch.load's reason in a few words, without its advice to retry with ``weights_only=False``
    (never to be given for a file from elsewhere: unpickling it can run code)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
        text = text.split("Check the documentation of torch.load", 1)[0].split(" was not an allowed global")[
            0
        ]
    elif "weights_only" in text:
        text = ""
    reason = " ".join(text.split())
    return f"{type(err).__name__}: {reason}" if reason else type(err).__name__


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` dict from a .pth/.pt/.ckpt/.safetensors file.

    Unwraps ``state_dict``/``model`` containers and strips DDP's ``module.`` prefix.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
        unsafe = blocked_global(err)
        if unsafe:
            raise WeightsError(
                f"{path}: refused to load: the file is not a plain tensor file or state dict, it holds pickled "
                f"Python objects ({unsafe}) that could run code; give a state dict saved with "
                "torch.save(model.state_dict(), PATH) or a .safetensors file"
            ) from err
        raise WeightsError(
            f"{path}: cannot read weights ({load_failure(err)}): the file is not a plain tensor file or state "
            "dict; give one saved with torch.save(model.state_dict(), PATH) or a .safetensors file"
        ) from err
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> list[str]:
    """Copy a torchvision/timm backbone state dict into an smp encoder; returns the unused keys.

    smp's native encoders (``resnet18``, ``mobilenet_v2``...) are torchvision modules minus the
    classifier, so the file's keys match directly; ``tu-`` encoders keep the timm model under
    ``encoder.model``. Every encoder parameter must be covered, else nothing is loaded.
    """
    state = read_state_dict(path)
    target = encoder.state_dict()
    for prefix in ("", "model."):
        mapped = {prefix + k: v for k, v in state.items() if prefix + k in target}
        if len(mapped) == len(target):
            break
    else:
        missing = sorted(set(target) - set(mapped))
        raise WeightsError(
            f"{path}: does not fit the encoder: {len(missing)} of {len(target)} encoder tensors have no "
            f"match (e.g. {', '.join(missing[:4])}); is it a state dict of the same backbone?"
        )
    wrong = [k for k, v in mapped.items() if v.shape != target[k].shape]
    if wrong:
        k = wrong[0]
        raise WeightsError(
            f"{path}: shape of {k} is {tuple(mapped[k].shape)}, encoder expects {tuple(target[k].shape)}"
        )
    encoder.load_state_dict(mapped, strict=True)
    unused = sorted(k for k in state if k not in mapped and "model." + k not in mapped)
    log.info(
        "loaded %d encoder tensors from %s (unused: %d, e.g. classifier)", len(mapped), path, len(unused)
    )
    return unused
