"""Looking inside a network: first-layer filters, layer activations, and class visualisations.

These reproduce the thesis' MATLAB figures (filter montage, ``activations`` montages, the strongest
channel over the frame, ``deepDreamImage`` of each class) for any PyTorch segmentation model, in
particular smp's DeepLabV3+. Layers are addressed by their ``model.named_modules()`` names. Nothing
here changes the model: training mode and ``requires_grad`` flags are restored and weights untouched.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from segvn.viz.overlay import add_title

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------------ helpers
def save_image(image: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 greyscale (H, W) or RGB (H, W, 3) image as PNG/JPEG (by suffix); returns the path."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def tile(images: Sequence[np.ndarray], ncols: int | None = None, pad: int = 1, fill: int = 255) -> np.ndarray:
    """Montage of equally sized images (grey or RGB) on a ``fill`` background, ``pad`` pixels apart.

    The grid is ``ncols`` wide (default ceil(sqrt(n)), square-ish like MATLAB's ``imtile``); its size
    is ``rows * (h + pad) + pad`` by ``ncols * (w + pad) + pad``.
    """
    if len(images) == 0:
        raise ValueError("nothing to tile")
    first = np.asarray(images[0])
    h, w = first.shape[:2]
    ncols = ncols or math.ceil(math.sqrt(len(images)))
    nrows = math.ceil(len(images) / ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, *first.shape[2:]), fill, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = img
    return grid


def _rescale(x: np.ndarray) -> np.ndarray:
    """Min-max to uint8 (MATLAB ``mat2gray``); a constant array maps to 0."""
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < 1e-12:
        return np.zeros(x.shape, np.uint8)
    return np.round((x - lo) / (hi - lo) * 255.0).astype(np.uint8)


@contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration; the caller's state is restored after."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


# ------------------------------------------------------------------------------------------ filters
def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first ``Conv2d`` (in module order) that takes 3 input channels, i.e. sees the RGB image."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            return name, module
    raise ValueError("model has no Conv2d with 3 input channels")


def first_conv_filters(
    model: nn.Module, scale: int = 4, pad: int = 2, ncols: int | None = None
) -> np.ndarray:
    """RGB montage of the first convolution's filters, each min-max normalised on its own.

    Every filter (3 x k x k) becomes a k x k colour tile (input channels read as R, G, B), enlarged
    ``scale`` times with nearest-neighbour so the pixels stay crisp, laid out by :func:`tile` on a
    white background. For ResNet-18's conv1 (64 filters, 7x7) that is an 8 x 8 grid of 28 px tiles.
    """
    _, conv = first_conv(model)
    weights = conv.weight.detach().float().cpu().numpy()  # (out, 3, k, k)
    tiles = []
    for w in weights:
        img = _rescale(w.transpose(1, 2, 0))
        tiles.append(np.repeat(np.repeat(img, scale, axis=0), scale, axis=1))
    return tile(tiles, ncols=ncols, pad=pad)


# -------------------------------------------------------------------------------------- activations
def _resolve(model: nn.Module, layer_names: Sequence[str]) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    unknown = [n for n in layer_names if n not in modules]
    if unknown:
        valid = [n for n in modules if n]
        hints = {n: difflib.get_close_matches(n, valid, n=3) for n in unknown}
        hint_text = "; ".join(f"{n!r}: did you mean {', '.join(h)}?" for n, h in hints.items() if h)
        raise ValueError(
            f"unknown layer name(s) {unknown}. {hint_text + ' ' if hint_text else ''}"
            f"Valid names (model.named_modules()): {', '.join(valid)}"
        )
    return {n: modules[n] for n in layer_names}


def _first_tensor(output: object) -> torch.Tensor | None:
    """A module's output as one tensor; for list/tuple outputs (an smp encoder) the last (deepest) one."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (list, tuple)):
        for item in reversed(output):
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def layer_activations(
    model: nn.Module, image_tensor: torch.Tensor, layer_names: Sequence[str], pad_to: int | None = None
) -> dict[str, torch.Tensor]:
    """Outputs of the named layers for one forward pass, captured with forward hooks.

    ``image_tensor`` is a normalised (N, 3, H, W) batch (usually N = 1). Returns detached CPU tensors
    (N, C, h, w) keyed by name, in the order asked. The model runs in eval mode without gradients and
    is left as it was. Modules that return a list (an smp encoder returns all its stages) give their
    last tensor. Unknown names raise ``ValueError`` listing the valid ones.

    ``pad_to`` (e.g. 16 or 32 for smp models, which reject other sizes) replicate-pads the bottom and
    right edges up to a multiple and crops every activation back to the share covering the real image.
    """
    modules = _resolve(model, layer_names)
    captured: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            tensor = _first_tensor(output)
            if tensor is not None:
                captured[name] = tensor.detach().float().cpu()

        return hook

    height, width = image_tensor.shape[-2:]
    x = image_tensor.to(_device(model))
    if pad_to:
        x = F.pad(x, (0, -width % pad_to, 0, -height % pad_to), mode="replicate")
    handles = [m.register_forward_hook(hook_for(n)) for n, m in modules.items()]
    try:
        with _frozen_eval(model), torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    missing = [n for n in layer_names if n not in captured]
    if missing:
        raise RuntimeError(f"layers {missing} produced no tensor output (not called in forward?)")
    result = {}
    for name in layer_names:
        act = captured[name]
        if pad_to and act.ndim == 4:
            h = max(1, round(act.shape[2] * height / x.shape[2]))
            w = max(1, round(act.shape[3] * width / x.shape[3]))
            act = act[:, :, :h, :w]
        result[name] = act
    return result


def _stages(module: nn.Module, prefix: str) -> list[str]:
    """Names of the parameterised children of ``module``, descending into a lone big container."""
    children = [(f"{prefix}{n}", m) for n, m in module.named_children() if any(True for _ in m.parameters())]
    if len(children) < 3:
        for name, child in children:
            inner = _stages(child, f"{name}.")
            if len(inner) >= 3:
                return inner
    return [name for name, _ in children]


def _spread(names: list[str], k: int) -> list[str]:
    idx = np.unique(np.linspace(0, len(names) - 1, min(k, len(names))).round().astype(int))
    return [names[i] for i in idx]


def default_layers(model: nn.Module) -> list[str]:
    """A few layers spread across encoder and decoder, for activation figures.

    For smp models with a ResNet encoder this is ``encoder.layer1``, ``encoder.layer2``,
    ``encoder.layer4``, ``decoder.aspp`` (DeepLabV3+) and ``decoder``. For other encoders: the first,
    middle and last parameterised stage of ``encoder`` plus the decoder; for models without an
    ``encoder`` (e.g. a torchvision classifier): four stages spread over the network's main body.
    """
    modules = dict(model.named_modules())
    if all(n in modules for n in ("encoder.layer1", "encoder.layer4")):
        preferred = ["encoder.layer1", "encoder.layer2", "encoder.layer4", "decoder.aspp", "decoder"]
        return [n for n in preferred if n in modules]
    if "encoder" in modules:
        stages = _stages(modules["encoder"], "encoder.") or ["encoder"]
        decoder = [n for n in ("decoder.aspp", "decoder") if n in modules]
        return list(dict.fromkeys(_spread(stages, 3) + decoder))
    stages = _stages(model, "")
    if not stages:
        raise ValueError("model has no parameterised layers to show")
    return _spread(stages, 4)


def _as_chw(act: torch.Tensor | np.ndarray) -> np.ndarray:
    act = act.detach().float().cpu().numpy() if isinstance(act, torch.Tensor) else np.asarray(act, np.float32)
    if act.ndim == 4:
        if act.shape[0] != 1:
            raise ValueError(f"expected one image's activations, got batch of {act.shape[0]}")
        act = act[0]
    if act.ndim != 3:
        raise ValueError(f"expected activations of shape (C, h, w), got {act.shape}")
    return act


def activation_grid(
    act: torch.Tensor | np.ndarray,
    max_channels: int = 64,
    normalize: str = "global",
    pad: int = 1,
    min_tile: int = 32,
) -> np.ndarray:
    """Greyscale montage (uint8, H x W) of a layer's channels, like MATLAB's activation montage.

    Takes (C, h, w) or (1, C, h, w). When there are more than ``max_channels`` channels, the ones with
    the highest mean activation are shown, strongest first. ``normalize="global"`` scales all tiles
    together (MATLAB ``mat2gray`` on the whole tensor: strong and weak channels stay comparable);
    ``"channel"`` stretches each tile on its own (shows the pattern of weak channels too). Tiles
    smaller than ``min_tile`` px are enlarged by an integer factor with nearest-neighbour.
    """
    chw = _as_chw(act)
    if normalize not in ("global", "channel"):
        raise ValueError(f"normalize must be 'global' or 'channel', got {normalize!r}")
    order = np.arange(len(chw))
    if len(chw) > max_channels:
        order = np.argsort(-chw.mean(axis=(1, 2)), kind="stable")[:max_channels]
    chosen = chw[order]
    tiles = list(_rescale(chosen)) if normalize == "global" else [_rescale(c) for c in chosen]
    factor = max(1, math.ceil(min_tile / max(1, min(chw.shape[1:]))))
    if factor > 1:
        tiles = [np.repeat(np.repeat(t, factor, axis=0), factor, axis=1) for t in tiles]
    return tile(tiles, pad=pad)


def strongest_channel(act: torch.Tensor | np.ndarray) -> int:
    """Index of the channel with the highest mean activation."""
    return int(np.argmax(_as_chw(act).mean(axis=(1, 2))))


def strongest_channel_overlay(
    image_rgb: np.ndarray,
    act: torch.Tensor | np.ndarray,
    alpha: float = 0.5,
    colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
    """The strongest channel (highest mean activation), upsampled to the frame, as a heat map on it.

    Shows where in the picture that layer responds most; ``alpha`` is the heat map's weight.
    """
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    chw = _as_chw(act)
    channel = chw[strongest_channel(chw)]
    up = cv2.resize(channel, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = cv2.cvtColor(cv2.applyColorMap(_rescale(up), colormap), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)


# ---------------------------------------------------------------------------------- class pictures
def _normaliser(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return mean, std


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """A normalised (1, 3, H, W) tensor back to an RGB uint8 image."""
    mean, std = _normaliser(x.device)
    rgb = (x.detach() * std + mean).clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
    return np.round(rgb * 255).astype(np.uint8)


def to_tensor(image_rgb: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """An RGB uint8 image to a normalised (1, 3, H, W) float tensor (ImageNet mean/std)."""
    x = torch.from_numpy(np.ascontiguousarray(image_rgb)).to(device).permute(2, 0, 1)[None].float() / 255.0
    mean, std = _normaliser(x.device)
    return (x - mean) / std


def initial_noise(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """The starting picture of :func:`class_visualization`: faint noise around mid-grey (RGB uint8)."""
    gen = torch.Generator().manual_seed(seed)
    rgb = (0.5 + 0.08 * torch.randn(size[0], size[1], 3, generator=gen)).clamp(0, 1)
    return np.round(rgb.numpy() * 255).astype(np.uint8)


def _class_score(model: nn.Module, x: torch.Tensor, class_index: int) -> torch.Tensor:
    """Mean logit of the class over the output (segmentation maps) or the logit itself (classifiers)."""
    out = model(x)
    if isinstance(out, (list, tuple)):
        out = out[0]
    if isinstance(out, dict):
        out = out["out"]
    return out[:, class_index].mean()


def class_score(model: nn.Module, image_rgb: np.ndarray, class_index: int) -> float:
    """Mean score (logit) of ``class_index`` for an RGB uint8 picture; the model is left as it was."""
    with _frozen_eval(model), torch.no_grad():
        return float(_class_score(model, to_tensor(image_rgb, _device(model)), class_index))


def _round_to(n: float, multiple: int) -> int:
    return max(multiple, int(round(n / multiple)) * multiple)


def class_visualization(
    model: nn.Module,
    class_index: int,
    size: tuple[int, int] = (256, 256),
    steps: int = 60,
    lr: float = 0.05,
    jitter: int = 16,
    blur_every: int = 4,
    blur_sigma: float = 0.6,
    octaves: int = 3,
    octave_scale: float = 1.4,
    l2_decay: float = 1e-3,
    seed: int = 0,
    multiple: int = 32,
) -> np.ndarray:
    """A picture the model finds most like ``class_index`` (the idea of MATLAB's ``deepDreamImage``).

    Starting from :func:`initial_noise`, the (normalised) input is changed by gradient ascent on the
    mean logit of the class over the output, with the usual regularisers that keep the result
    readable instead of adversarial noise: a random roll of up to ``jitter`` px (at most 1/8 of the
    current size) each step, a Gaussian blur every ``blur_every`` steps, ``octaves`` scales from
    coarse to fine (each ``octave_scale`` times larger, ``steps`` per octave, sizes rounded to
    ``multiple`` for the encoder strides), L2 decay towards the mean colour, and clamping to the
    valid pixel range. Gradient steps are normalised by their mean magnitude, so ``lr`` is in units
    of normalised intensity.

    Deterministic for a given ``seed``. Only the input gets gradients: the model runs in eval mode
    with ``requires_grad`` switched off, and both are restored afterwards. Returns RGB uint8 (H, W, 3)
    of ``size``.
    """
    device = _device(model)
    gen = torch.Generator().manual_seed(seed)
    mean, std = _normaliser(device)
    lo, hi = (0 - mean) / std, (1 - mean) / std
    full_h, full_w = size
    sizes = [
        (_round_to(full_h / octave_scale**k, multiple), _round_to(full_w / octave_scale**k, multiple))
        for k in reversed(range(max(1, octaves)))
    ]
    sizes[-1] = (full_h, full_w)
    x = to_tensor(initial_noise(sizes[0], seed), device)

    with _frozen_eval(model):
        for h, w in sizes:
            if x.shape[-2:] != (h, w):
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
            shift = min(jitter, min(h, w) // 8)  # big rolls on a small octave just scramble it
            for step in range(steps):
                dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=gen))
                shifted = torch.roll(x, shifts=(dy, dx), dims=(2, 3)).requires_grad_(True)
                objective = _class_score(model, shifted, class_index) - l2_decay * shifted.pow(2).mean()
                (grad,) = torch.autograd.grad(objective, shifted)
                with torch.no_grad():
                    grad = torch.roll(grad, shifts=(-dy, -dx), dims=(2, 3))
                    x = x + lr * grad / (grad.abs().mean() + 1e-8)
                    if blur_every and (step + 1) % blur_every == 0:
                        x = gaussian_blur(x, kernel_size=5, sigma=blur_sigma)
                    x = torch.max(torch.min(x, hi), lo)
    if x.shape[-2:] != (full_h, full_w):
        x = F.interpolate(x, size=(full_h, full_w), mode="bilinear", align_corners=False)
    return to_uint8(x)


def class_visualizations(
    model: nn.Module,
    class_names: Sequence[str],
    ncols: int = 4,
    classes: Sequence[int] | None = None,
    **kwargs,
) -> np.ndarray:
    """:func:`class_visualization` for each class (or the given indices), as one titled RGB grid.

    Extra keyword arguments (``size``, ``steps``, ``seed``, ...) go to :func:`class_visualization`;
    every class starts from the same noise so the pictures differ only by what the class asks for.
    """
    indices = list(range(len(class_names))) if classes is None else list(classes)
    panels = [add_title(class_visualization(model, i, **kwargs), class_names[i], scale=0.5) for i in indices]
    return tile(panels, ncols=min(ncols, len(panels)), pad=4)
