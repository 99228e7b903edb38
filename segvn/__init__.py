"""segvn: semantic segmentation of street-scene videos (PyTorch Lightning + Hydra, DeepLabV3+).

The commands are ``python -m segvn.<verb>``; the Python API (:mod:`segvn.api`) is here::

    import segvn
    model = segvn.load_model("last.ckpt")          # or an export: model.onnx
    labels = model.predict("frame.png")            # (H, W) uint8 class indices
    picture = segvn.overlay("frame.png", labels, model.class_names)

``import segvn`` stays cheap: :mod:`segvn.api` (and torch) load on the first use of its names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from segvn.errors import SegvnError

if TYPE_CHECKING:
    from segvn.api import SegvnModel, load_model, overlay

_API = ("SegvnModel", "load_model", "overlay")

__all__ = ["SegvnError", "SegvnModel", "load_model", "overlay"]


def __getattr__(name: str) -> Any:
    """The API's names, imported from :mod:`segvn.api` when first asked for."""
    if name in _API:
        from segvn import api

        return getattr(api, name)
    raise AttributeError(f"module 'segvn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
