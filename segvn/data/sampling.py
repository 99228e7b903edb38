"""Which training frames an epoch draws: uniformly, or rare classes more often.

Rare-class sampling is DAFormer's (Hoyer et al., CVPR 2022, "rare class sampling"): a class c is
drawn with probability P(c) = softmax((1 - f_c) / T) over the classes' pixel shares f_c in the
training labels, then a frame that shows c uniformly. Person and fence cover about 1% of a street's
pixels each, so a uniform epoch shows them little; ``temperature`` sets how strongly the draw leans
towards them (small T: almost only the rarest classes; large T: uniform over classes, which still
favours frames with rare classes). A frame shows a class when it covers at least ``min_share`` of
the frame, so a few stray pixels at the border do not make a frame "rare".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Sampler, WeightedRandomSampler

from segvn.errors import ConfigError

log = logging.getLogger(__name__)

SAMPLERS = ("uniform", "rare_class")
DEFAULTS = {"name": "uniform", "temperature": 0.1, "min_share": 0.001}


def sampler_settings(settings: dict | None) -> dict:
    """``data.sampler`` with its defaults filled in, checked before any data is read."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"data.sampler: unknown setting(s) {unknown}; use name, temperature and min_share")
    settings = {**DEFAULTS, **settings}
    _check(settings["name"], float(settings["temperature"]), float(settings["min_share"]))
    return settings


def _check(name: str, temperature: float, min_share: float) -> None:
    if name not in SAMPLERS:
        raise ConfigError(f"data.sampler.name must be one of {list(SAMPLERS)}, got {name!r}")
    if not temperature > 0:
        raise ConfigError(f"data.sampler.temperature must be > 0, got {temperature}")
    if not 0 <= min_share < 1:
        raise ConfigError(f"data.sampler.min_share must be in [0, 1), got {min_share}")


def rare_class_frame_weights(
    counts: np.ndarray, pixels: np.ndarray, temperature: float = 0.1, min_share: float = 0.001
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame draw probabilities of rare-class sampling and the per-class probabilities P(c).

    ``counts[i, c]`` is frame i's pixels of class c and ``pixels[i]`` all its pixels. Classes that
    no frame shows get no probability; frames that show no class (all unlabelled) are never drawn.
    """
    _check("rare_class", temperature, min_share)
    counts = np.asarray(counts, np.float64)
    shows = counts >= min_share * np.asarray(pixels, np.float64)[:, None]
    shows &= counts > 0
    frames_per_class = shows.sum(0)
    present = frames_per_class > 0
    if not present.any():
        raise ConfigError("data.sampler=rare_class: no training frame shows any class")
    freq = counts.sum(0) / counts.sum()
    logits = np.where(present, (1.0 - freq) / temperature, -np.inf)
    class_p = np.exp(logits - logits[present].max())
    class_p /= class_p.sum()
    per_frame = shows * (class_p / np.maximum(frames_per_class, 1))[None, :]
    weights = per_frame.sum(1)
    return weights / weights.sum(), class_p


def build_train_sampler(
    name: str,
    counts: np.ndarray,
    pixels: np.ndarray,
    class_names: Sequence[str],
    temperature: float = 0.1,
    min_share: float = 0.001,
) -> Sampler | None:
    """The training sampler for ``data.sampler.name`` (``None``: the loader shuffles uniformly).

    An epoch keeps its length (as many draws as frames, with replacement), so epoch-based settings
    mean the same with either sampler. Under DDP Lightning wraps it in a distributed sampler.
    """
    _check(name, temperature, min_share)
    if name == "uniform":
        return None
    weights, class_p = rare_class_frame_weights(counts, pixels, temperature, min_share)
    shown = (np.asarray(counts, np.float64) * weights[:, None]).sum(0)
    uniform = np.asarray(counts, np.float64).sum(0) / len(weights)
    log.info(
        "rare-class sampling (T=%g): class draw probability %s; pixels seen vs uniform %s",
        temperature,
        ", ".join(f"{n}={p:.2f}" for n, p in zip(class_names, class_p, strict=True)),
        ", ".join(f"{n}={s / u:.2f}x" for n, s, u in zip(class_names, shown, uniform, strict=True) if u > 0),
    )
    return WeightedRandomSampler(torch.from_numpy(weights), num_samples=len(weights), replacement=True)
