"""Network factory, real pretrained weights from a local file, and real training steps."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from segvn.data.camvid import CamVid
from segvn.data.datamodule import SegDataModule
from segvn.data.transforms import to_tensor
from segvn.errors import ConfigError, WeightsError
from segvn.models.factory import Normalize, build_network
from segvn.models.module import SegModule
from segvn.models.weights import load_encoder_weights, read_state_dict


@pytest.mark.parametrize("size", [(360, 480), (100, 130)])
def test_any_image_size_is_padded_and_cropped_back(size):
    net = build_network(encoder_name="resnet18", num_classes=8).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, *size))
    assert out.shape == (1, 8, *size)


def test_network_takes_rgb255_and_normalises_inside():
    """network(x 0-255) is the smp model on the ImageNet-normalised x; uint8 and float give the same."""
    torch.manual_seed(0)
    net = build_network(encoder_name="resnet18", num_classes=8).eval()
    x = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = net.model((x.float() / 255 - mean) / std)
        got = net(x)
        assert torch.allclose(got, expected, atol=1e-4)
        assert torch.allclose(net(x.float()), got, atol=1e-5)
        assert not torch.allclose(net.model(x.float()), got, atol=1e-2)  # the test can tell
    # the statistics are buffers that are not saved: state_dict (every checkpoint) is the smp model's
    assert not any(key.startswith("normalize") for key in net.state_dict())
    assert {k.removeprefix("model.") for k in net.state_dict()} == set(net.model.state_dict())
    assert net.normalize.mean.device == net.model.encoder.conv1.weight.device


def test_output_stride_16_and_timm_encoder():
    net = build_network(encoder_name="resnet18")
    assert net.stride == 16
    tu = build_network(encoder_name="tu-resnet18", num_classes=3).eval()
    with torch.no_grad():
        assert tu(torch.randn(1, 3, 72, 88)).shape == (1, 3, 72, 88)


def _classify(model: torch.nn.Module, path) -> tuple[int, float]:
    x = Normalize()(to_tensor(np.asarray(Image.open(path).convert("RGB")))[None])  # a torchvision classifier
    with torch.no_grad():
        p = model.eval()(x).softmax(1)[0]
    return int(p.argmax()), float(p.max())


def test_real_imagenet_weights_reach_the_encoder(weights_dir):
    """The local-file path loads real MobileNetV2 weights: the encoder then classifies birds."""
    path = weights_dir / "mobilenet_v2_imagenet.pth"
    net = build_network(encoder_name="mobilenet_v2", encoder_weights=str(path), num_classes=8)
    classifier = torchvision.models.mobilenet_v2()
    state = read_state_dict(path)
    merged = {
        **net.model.encoder.state_dict(),
        **{k: v for k, v in state.items() if k.startswith("classifier")},
    }
    classifier.load_state_dict(merged, strict=True)
    labels = (weights_dir / "imagenet_labels.txt").read_text().splitlines()
    cls, p = _classify(classifier, weights_dir / "check_bird.png")
    assert cls == 19 and labels[cls + 1] == "chickadee" and p > 0.9
    cls, p = _classify(classifier, weights_dir / "check_sunflower.png")
    assert cls == 985 and labels[cls + 1] == "daisy" and p > 0.5


def test_weights_that_do_not_fit_are_refused(weights_dir, tmp_path):
    net = build_network(encoder_name="resnet18")
    with pytest.raises(WeightsError, match="does not fit the encoder"):
        load_encoder_weights(net.model.encoder, weights_dir / "mobilenet_v2_imagenet.pth")
    with pytest.raises(WeightsError, match="not found"):
        build_network(encoder_name="resnet18", encoder_weights=str(tmp_path / "missing.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weights"):
        read_state_dict(bad)


def test_resnet_state_dict_file_round_trip(tmp_path):
    src = torchvision.models.resnet18()
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    net = build_network(encoder_name="resnet18", encoder_weights=str(tmp_path / "r18.pth"))
    assert torch.equal(net.model.encoder.conv1.weight, src.conv1.weight)


@pytest.mark.slow
def test_training_steps_on_real_camvid_reduce_the_loss(camvid_root, tmp_path):
    """A few real optimisation steps on downscaled CamVid frames: the loss falls."""
    torch.manual_seed(0)
    src = CamVid(camvid_root, group_by="sequence", train=["0001TP"], val=["0016E5"])
    dm = SegDataModule(
        src,
        batch_size=4,
        image_size=(64, 96),
        augment={"hflip": 0, "translate_px": 0},
        shuffle=False,
        cache_dir=tmp_path,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module = SegModule(
        build_network(encoder_name="resnet18"),
        partial(torch.optim.SGD, lr=0.01, momentum=0.9),
        class_weighting="none",
    )
    opt = module.configure_optimizers()
    module.train()
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss, _, _ = module._step(batch)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_train_accuracy_is_the_pixel_accuracy_of_the_epoch():
    """train/acc = correct / labelled pixels over all batches (ignored pixels and empty batches left out)."""
    from torchmetrics.classification import MulticlassAccuracy

    module = SegModule(
        net=build_network(encoder_name="resnet18", num_classes=8), optimizer=partial(torch.optim.SGD, lr=0.01)
    ).eval()  # eval: the same outputs twice (no dropout)
    reference = MulticlassAccuracy(8, average="micro", ignore_index=255)
    gen = torch.Generator().manual_seed(0)
    for unlabelled in (0.1, 0.7, 1.0):  # the last batch has no labelled pixel: its step accuracy is NaN
        batch = {
            "image": torch.rand(2, 3, 32, 48, generator=gen),
            "mask": torch.randint(0, 8, (2, 32, 48), generator=gen),
        }
        batch["mask"][torch.rand(2, 32, 48, generator=gen) < unlabelled] = 255
        with torch.no_grad():
            module.training_step(batch, 0)
            reference.update(module(batch["image"]).argmax(1), batch["mask"])
    assert float(module.train_acc.compute()) == pytest.approx(float(reference.compute()), abs=1e-6)


def test_encoder_learns_at_its_own_rate():
    """encoder_lr_mult splits the parameters into [decoder+head, encoder]; 1.0 keeps one group."""
    net = build_network(encoder_name="resnet18", num_classes=8)
    sgd = partial(torch.optim.SGD, lr=0.01, momentum=0.9)
    one = SegModule(net=net, optimizer=sgd).configure_optimizers()
    assert [g["lr"] for g in one.param_groups] == [0.01]
    two = SegModule(net=net, optimizer=sgd, encoder_lr_mult=0.1).configure_optimizers()
    rest, enc = two.param_groups
    assert rest["lr"] == 0.01 and enc["lr"] == pytest.approx(0.001)
    encoder = {id(p) for p in net.model.encoder.parameters()}
    assert {id(p) for p in enc["params"]} == encoder
    assert not encoder & {id(p) for p in rest["params"]}
    assert len(rest["params"]) + len(enc["params"]) == len(list(net.parameters()))


# ---------------------------------------------------------------------------------------------- OHEM
def test_ohem_keeps_the_hard_pixels_and_at_least_min_kept() -> None:
    """Hand case: four pixels with true-class probabilities 0.9, 0.5, 0.2 and one ignored."""
    import torch.nn.functional as F

    from segvn.models.losses import ohem_cross_entropy

    p = torch.tensor([0.9, 0.5, 0.2, 0.3])  # probability of class 0, the true class of every pixel
    logits = torch.stack([p.log(), (1 - p).log()]).view(1, 2, 1, 4)  # softmax gives back p
    target = torch.tensor([[[0, 0, 0, 255]]])
    weight = torch.tensor([2.0, 1.0])
    ce = -p.log()
    got = ohem_cross_entropy(logits, target, weight, thresh=0.7, min_kept=1)  # keeps 0.5 and 0.2
    assert float(got) == pytest.approx(float((2 * ce[1] + 2 * ce[2]) / 4), rel=1e-5)
    got = ohem_cross_entropy(logits, target, weight, thresh=0.3, min_kept=2)  # min_kept raises it to 0.5
    assert float(got) == pytest.approx(float((ce[1] + ce[2]) / 2), rel=1e-5)
    everything = ohem_cross_entropy(logits, target, weight, thresh=1.0, min_kept=0)
    assert float(everything) == pytest.approx(
        float(F.cross_entropy(logits, target, weight, ignore_index=255))
    )


def test_ohem_trains_and_validation_keeps_the_plain_loss() -> None:
    """model.ohem changes the training loss only; gradients flow."""
    import torch.nn.functional as F

    net = build_network(encoder_name="resnet18", num_classes=8)
    module = SegModule(
        net=net, optimizer=partial(torch.optim.SGD, lr=0.01), ohem={"thresh": 0.7, "min_kept": 50}
    )
    gen = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.rand(2, 3, 32, 48, generator=gen),
        "mask": torch.randint(0, 8, (2, 32, 48), generator=gen),
    }
    loss, _, _ = module._step(batch, train=True)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in net.model.decoder.parameters())
    with torch.no_grad():
        module.eval()  # no dropout: both forward passes give the same logits
        plain, _, _ = module._step(batch)
        assert float(plain) == pytest.approx(
            float(F.cross_entropy(module(batch["image"]), batch["mask"])), rel=1e-5
        )


@pytest.mark.parametrize("name", ["dice", "lovasz"])
def test_region_loss_adds_to_training_cross_entropy_only(name: str) -> None:
    """model.region_loss: training loss = CE + weight x region term; validation keeps the plain CE."""
    import torch.nn.functional as F

    from segvn.models.losses import build_region_loss

    net = build_network(encoder_name="resnet18", num_classes=8)
    module = SegModule(
        net=net, optimizer=partial(torch.optim.SGD, lr=0.01), region_loss=name, region_loss_weight=0.5
    )
    module.eval()  # no dropout: every forward pass gives the same logits
    gen = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.rand(2, 3, 32, 48, generator=gen),
        "mask": torch.randint(0, 8, (2, 32, 48), generator=gen),
    }
    batch["mask"][:, :4] = 255
    loss, _, _ = module._step(batch, train=True)
    loss.backward()
    assert all(p.grad is not None for p in net.model.decoder.parameters())
    with torch.no_grad():
        logits = module(batch["image"])
        ce = F.cross_entropy(logits, batch["mask"], ignore_index=255)
        term = build_region_loss(name)(logits, batch["mask"])
        assert 0 < float(term) < 1
        assert float(loss) == pytest.approx(float(ce + 0.5 * term), rel=1e-5)
        plain, _, _ = module._step(batch)
        assert float(plain) == pytest.approx(float(ce), rel=1e-5)


@pytest.mark.parametrize("name", ["dice", "lovasz"])
def test_region_loss_ignores_unlabelled_pixels_and_is_near_zero_when_right(name: str) -> None:
    from segvn.models.losses import build_region_loss

    target = torch.randint(0, 3, (1, 6, 8), generator=torch.Generator().manual_seed(1))
    right = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 20.0
    loss = build_region_loss(name)
    assert float(loss(right, target)) < 0.01
    ignored = target.clone()
    ignored[:, :3] = 255
    wrong_there = right.clone()
    wrong_there[:, :, :3] = right[:, :, :3].roll(1, dims=1)  # wrong where nothing is labelled
    assert float(loss(wrong_there, ignored)) == pytest.approx(float(loss(right, ignored)), abs=1e-6)
    assert float(loss(wrong_there, target)) > 0.1


def test_region_loss_names_the_setting_when_unknown() -> None:
    from segvn.models.losses import build_region_loss

    with pytest.raises(ConfigError, match="model.region_loss"):
        build_region_loss("focal")
