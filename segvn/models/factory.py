"""Building the segmentation network from config."""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from segvn.models.weights import load_encoder_weights


def pad_to_stride(x: torch.Tensor, stride: int) -> tuple[torch.Tensor, int, int]:
    """``x`` padded at the bottom and right to sides divisible by ``stride`` (reflect; replicate for tiny
    inputs), with the original height and width to crop the output back to."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    ph, pw = (-h) % stride, (-w) % stride
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""The ImageNet statistics the pretrained encoders were trained with, on a 0-1 scale."""


class Normalize(nn.Module):
    """RGB 0-255 ``(B, 3, H, W)`` (float, or uint8 cast here) to ImageNet-normalised float32.

    The network's first step, as mmsegmentation's ``data_preprocessor``: every caller feeds frames as
    they are, and an exported graph carries the normalisation. ``mean`` and ``std`` (0-255 scale) are
    non-persistent buffers, so they follow ``.to(device)`` but stay out of ``state_dict``: checkpoints
    are the same with or without this module.
    """

    def __init__(
        self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255.0, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            x = x.to(self.mean.dtype)  # float32; bf16 when the whole network is (Lightning's bf16-true)
        return (x - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised values back to RGB 0-255 (float, not clamped)."""
        return x * self.std + self.mean


def crop_to(out: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The top-left ``h`` x ``w`` of ``out`` (undoes :func:`pad_to_stride`)."""
    return out[..., :h, :w] if out.shape[-2:] != (h, w) else out


class SegmentationNetwork(nn.Module):
    """An smp model that takes RGB frames as they are and accepts any image size.

    Input: RGB, ``(B, 3, H, W)``, values 0-255, float32 or uint8 (cast here); the network normalises
    with the ImageNet mean and standard deviation itself (:class:`Normalize`, its ``normalize``), so no
    caller can forget it and an exported graph carries it. Output: logits ``(B, C, H, W)`` at the
    input's size. ``model`` (the smp network) takes the normalised input.

    DeepLabV3+ needs sides divisible by its output stride; frames such as 360x480 or
    1080x1920 are padded (reflect) up to the next multiple and the logits cropped back, so the
    output always has the input's size.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.normalize = Normalize()
        self.model = model
        self.stride = int(getattr(model.encoder, "output_stride", 32))
        head = getattr(model, "segmentation_head", None)
        self.num_classes = int(getattr(head[0], "out_channels", 0)) if head is not None else 0
        """Output channels (classes) of the network; 0 when it cannot be told."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = pad_to_stride(self.normalize(x), self.stride)
        return crop_to(self.model(x), h, w)


def network_of(module: nn.Module) -> nn.Module:
    """The network inside ``module``: a LightningModule's ``net``, unwrapped from ``torch.compile``.

    The one way to get from a SegModule (or a checkpoint's model) to its :class:`SegmentationNetwork`;
    anything else (a network already, an exported-file runtime) is returned as it is.
    """
    net = getattr(module, "net", module)
    return getattr(net, "_orig_mod", net)


def build_network(
    arch: str = "DeepLabV3Plus",
    encoder_name: str = "resnet18",
    encoder_weights: str | None = None,
    num_classes: int = 8,
    encoder_output_stride: int = 16,
    **kwargs,
) -> SegmentationNetwork:
    """An smp architecture (``DeepLabV3Plus`` by default) with a native or ``tu-`` timm encoder.

    ``encoder_weights``: ``None`` (random init), ``"imagenet"`` (smp downloads them; needs the
    internet), or a path to a local torchvision/timm state dict of the backbone.
    """
    local = (
        encoder_weights is not None
        and encoder_weights not in ("imagenet",)
        and (
            Path(str(encoder_weights)).suffix in (".pth", ".pt", ".ckpt", ".bin", ".safetensors")
            or Path(str(encoder_weights)).exists()
        )
    )
    cls = getattr(smp, arch)
    extra = {"encoder_output_stride": encoder_output_stride} if arch in ("DeepLabV3", "DeepLabV3Plus") else {}
    model = cls(
        encoder_name=encoder_name,
        encoder_weights=None if local else encoder_weights,
        classes=num_classes,
        **extra,
        **kwargs,
    )
    if local:
        load_encoder_weights(model.encoder, encoder_weights)
    return SegmentationNetwork(model)


def pooled_norms(net: nn.Module) -> list[str]:
    """Names of the BatchNorm layers that follow a global (1x1) pooling, e.g. DeepLabV3+'s image-pooling branch.

    Such a layer sees one value per channel and sample, so in training it needs at least two
    samples per batch: a batch of one fails in PyTorch ("Expected more than 1 value per channel").
    """
    names = []
    for name, module in net.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        pooled = False
        for child_name, child in module.named_children():
            if isinstance(child, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d) and child.output_size in (
                1,
                (1, 1),
            ):
                pooled = True
            elif pooled and isinstance(child, nn.modules.batchnorm._BatchNorm):
                names.append(f"{name}.{child_name}" if name else child_name)
    return names


def encoder_stages(encoder: nn.Module) -> list[nn.Module]:
    """The encoder's stages from the input on, one per output stride (2, 4, 8, 16, 32): the layers
    that produce each feature map the decoder receives. For freezing the early stages of a pretrained
    encoder (mmdetection's ``frozen_stages``); torchvision-style ResNets and MobileNetV2 only."""
    if all(hasattr(encoder, name) for name in ("conv1", "bn1", "layer1", "layer4")):  # ResNet family
        stem = nn.ModuleList([encoder.conv1, encoder.bn1])
        return [stem, encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4]
    ends = getattr(encoder, "_out_indexes", None)  # MobileNetV2: the feature maps' last layers
    if hasattr(encoder, "features") and ends is not None:
        starts = [0, *(i + 1 for i in ends[:-1])]
        return [encoder.features[a : b + 1] for a, b in zip(starts, ends, strict=True)]
    raise ValueError(
        f"cannot tell the stages of a {type(encoder).__name__} encoder (ResNet or MobileNetV2 only)"
    )
