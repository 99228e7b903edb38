"""Checking an exported file against the PyTorch network on real frames: what ``segvn.export`` verifies.

The argmax of the logits must agree on :data:`MIN_AGREEMENT` of the pixels (:data:`MIN_AGREEMENT_INT8`
for an int8 network), at the frames' own size and at the training scale; the numbers go into
``<file>.verify.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segvn.errors import ExportError
from segvn.inference.runtimes import open_export
from segvn.inference.scale import resize_frame
from segvn.metrics import class_indices

log = logging.getLogger(__name__)

MIN_AGREEMENT = 0.999
MIN_AGREEMENT_INT8 = 0.95  # int8 approximates: this catches a broken calibration; evaluate measures the cost


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


__all__ = ["MIN_AGREEMENT", "MIN_AGREEMENT_INT8", "as_batch", "compare_models", "verify_export"]
