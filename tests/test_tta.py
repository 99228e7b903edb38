"""Flip test-time augmentation: the flip-back is right, and it changes nothing it should not."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from segvn.inference.predictor import Predictor
from segvn.models.factory import build_network
from segvn.models.tta import flip_tta, predict_logits


class _LeftBias(nn.Module):
    """Logits that depend on the column: class 0 on the left half of what it sees, class 1 on the right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1]
        ramp = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(x.shape[0], 1, x.shape[2], w)
        return torch.cat([-ramp, ramp], dim=1)


def test_flip_back_undoes_the_flip() -> None:
    x = torch.randn(2, 3, 4, 6)
    model = _LeftBias()
    # the mirrored input's logits, flipped back, say the opposite of the plain ones: the average is 0
    assert torch.allclose(flip_tta(model, x), torch.zeros(2, 2, 4, 6), atol=1e-6)
    conv = nn.Conv2d(3, 5, kernel_size=(1, 3), padding=(0, 1))
    manual = (conv(x) + torch.flip(conv(torch.flip(x, dims=[-1])), dims=[-1])) / 2
    assert torch.allclose(flip_tta(conv, x), manual, atol=1e-6)
    pointwise = nn.Conv2d(3, 5, kernel_size=1)  # mirror-equivariant: TTA must change nothing
    assert torch.allclose(predict_logits(pointwise, x, flip=True), pointwise(x), atol=1e-6)
    with torch.no_grad():
        plain = predict_logits(conv, x, flip=False)
        assert torch.equal(plain, conv(x)), "flip=False: the model's own logits, untouched"
        assert not torch.allclose(plain, manual, atol=1e-3), "and not the TTA average (the test can tell)"


def test_tta_labels_of_a_symmetric_frame_are_symmetric() -> None:
    torch.manual_seed(0)
    net = build_network(encoder_name="resnet18", num_classes=8).eval()
    half = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    frame = np.concatenate([half, half[:, ::-1]], axis=1)  # a left-right symmetric frame
    plain = Predictor(net, "cpu", None, None, 8)([frame]).labels[0]
    tta = Predictor(net, "cpu", None, None, 8, tta_flip=True)([frame]).labels[0]
    assert np.array_equal(tta, tta[:, ::-1]), "the TTA prediction of a mirror-symmetric frame is symmetric"
    assert not np.array_equal(plain, plain[:, ::-1]), "without TTA it is not (the test can tell)"
