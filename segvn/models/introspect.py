"""Looking inside a network: first-layer weights, layer activations, pictures of each class.

The computations behind the thesis' MATLAB figures (filters, ``activations``, ``deepDreamImage``)
for any PyTorch segmentation model, in particular smp's DeepLabV3+; :mod:`segvn.viz.features` turns
what they return into pictures. Layers are addressed by their ``model.named_modules()`` names.
Nothing here changes the model: training mode and ``requires_grad`` flags are restored, weights
untouched.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from segvn.errors import ConfigError
from segvn.models.factory import Normalize, SegmentationNetwork, network_of


def check_layers(model: nn.Module, names: Sequence[str]) -> list[str]:
    """``names`` if the model has them all, else :class:`ConfigError` listing the valid names."""
    modules = [n for n, _ in model.named_modules() if n]
    unknown = [n for n in names if n not in modules]
    if not unknown:
        return list(names)
    close = {n: difflib.get_close_matches(n, modules, n=3, cutoff=0.5) for n in unknown}
    hints = "; ".join(f"{n!r}: did you mean {', '.join(c)}?" for n, c in close.items() if c)
    shallow = [n for n in modules if n.count(".") <= 1]
    raise ConfigError(
        f"unknown layer {', '.join(map(repr, unknown))}. {hints + ' ' if hints else ''}"
        f"Valid layers include: {', '.join(shallow)} (and every deeper name of model.named_modules(), "
        f"e.g. {next((n for n in modules if n.count('.') >= 2), modules[-1])}); the default is "
        f"{', '.join(default_layers(model))}"
    )


def inner_model(module: nn.Module) -> tuple[nn.Module, int]:
    """The smp model inside a SegModule (layer names are relative to it) and the input multiple it needs."""
    net = network_of(module)
    return getattr(net, "model", net), int(getattr(net, "stride", 32))


def _layers(model: nn.Module) -> nn.Module:
    """Where layer names start: the smp model inside a segvn network, else the model itself."""
    return model.model if isinstance(model, SegmentationNetwork) else model


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


def first_conv_weights(model: nn.Module) -> np.ndarray:
    """The weights ``(out, 3, k, k)`` of :func:`first_conv` as a float32 array."""
    return first_conv(model)[1].weight.detach().float().cpu().numpy()


def _resolve(model: nn.Module, layer_names: Sequence[str]) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    unknown = [n for n in layer_names if n not in modules]
    if unknown:
        valid = [n for n in modules if n]
        hints = {n: difflib.get_close_matches(n, valid, n=3) for n in unknown}
        hint_text = "; ".join(f"{n!r}: did you mean {', '.join(h)}?" for n, h in hints.items() if h)
        raise ConfigError(
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

    ``image_tensor`` is the (N, 3, H, W) batch ``model`` takes (usually N = 1): RGB 0-255 for a segvn
    :class:`~segvn.models.factory.SegmentationNetwork`, whose layer names are those of its smp model. Returns detached CPU tensors
    (N, C, h, w) keyed by name, in the order asked. The model runs in eval mode without gradients and
    is left as it was. Modules that return a list (an smp encoder returns all its stages) give their
    last tensor. Unknown names raise ``ValueError`` listing the valid ones.

    ``pad_to`` (e.g. 16 or 32 for smp models, which reject other sizes) replicate-pads the bottom and
    right edges up to a multiple and crops every activation back to the share covering the real image.
    """
    modules = _resolve(_layers(model), layer_names)
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


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """A network input (1, 3, H, W), RGB 0-255, back to an RGB uint8 image (clamped, rounded)."""
    return x.detach()[0].clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def to_tensor(image_rgb: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """An RGB uint8 image as a network input: a (1, 3, H, W) float tensor, RGB 0-255."""
    return torch.from_numpy(np.ascontiguousarray(image_rgb)).to(device).permute(2, 0, 1)[None].float()


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

    ``model`` takes RGB 0-255 (a segvn network normalises inside). The picture is optimised in
    ImageNet-normalised units (:class:`~segvn.models.factory.Normalize`) and given to the model in 0-255,
    so for a segvn network the steps are those on its smp model's own input.
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
    norm = Normalize().to(device)
    lo, hi = (
        norm(torch.zeros(1, 3, 1, 1, device=device)),
        norm(torch.full((1, 3, 1, 1), 255.0, device=device)),
    )
    full_h, full_w = size
    sizes = [
        (_round_to(full_h / octave_scale**k, multiple), _round_to(full_w / octave_scale**k, multiple))
        for k in reversed(range(max(1, octaves)))
    ]
    sizes[-1] = (full_h, full_w)
    x = norm(to_tensor(initial_noise(sizes[0], seed), device))

    with _frozen_eval(model):
        for h, w in sizes:
            if x.shape[-2:] != (h, w):
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
            shift = min(jitter, min(h, w) // 8)  # big rolls on a small octave just scramble it
            for step in range(steps):
                dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=gen))
                shifted = torch.roll(x, shifts=(dy, dx), dims=(2, 3)).requires_grad_(True)
                score = _class_score(model, norm.inverse(shifted), class_index)
                objective = score - l2_decay * shifted.pow(2).mean()
                (grad,) = torch.autograd.grad(objective, shifted)
                with torch.no_grad():
                    grad = torch.roll(grad, shifts=(-dy, -dx), dims=(2, 3))
                    x = x + lr * grad / (grad.abs().mean() + 1e-8)
                    if blur_every and (step + 1) % blur_every == 0:
                        x = gaussian_blur(x, kernel_size=5, sigma=blur_sigma)
                    x = torch.max(torch.min(x, hi), lo)
    if x.shape[-2:] != (full_h, full_w):
        x = F.interpolate(x, size=(full_h, full_w), mode="bilinear", align_corners=False)
    return to_uint8(norm.inverse(x))


def class_visualizations(model: nn.Module, classes: Sequence[int], **kwargs) -> list[np.ndarray]:
    """:func:`class_visualization` for each class index; keyword arguments (``size``, ``steps``, ...) go
    to it. Every class starts from the same noise, so the pictures differ only by what the class asks for.
    """
    return [class_visualization(model, int(i), **kwargs) for i in classes]
