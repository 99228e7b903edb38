"""Temporal consistency metric (flow-warped IoU of consecutive predictions) and EMA smoothing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segvn.data.video import open_video
from segvn.inference.smoothing import TemporalEMA
from segvn.metrics.temporal import TemporalConsistency, dis_flow, warp_labels, warp_values

H, W = 20, 30


def two_regions(boundary: int) -> torch.Tensor:
    """Class 0 left of column ``boundary``, class 1 from there on."""
    labels = torch.ones(H, W, dtype=torch.long)
    labels[:, :boundary] = 0
    return labels


def constant_flow(dx: float, dy: float = 0.0, h: int = H, w: int = W) -> np.ndarray:
    flow = np.zeros((h, w, 2), np.float32)
    flow[..., 0], flow[..., 1] = dx, dy
    return flow


def test_identical_predictions_score_one() -> None:
    metric = TemporalConsistency(num_classes=3)
    pred = torch.randint(0, 3, (2, H, W))
    metric.update(pred, pred.clone(), constant_flow(0))
    metric.update(pred, pred.clone())
    assert metric.compute().item() == 1.0


def test_shift_with_and_without_flow() -> None:
    """Scene moves s px right; the flow (prev -> next) is +s: compensated TC is 1, uncompensated is the IoU."""
    c, s = 10, 4
    prev, nxt = two_regions(c), two_regions(c + s)
    metric = TemporalConsistency(num_classes=2)
    metric.update(prev, nxt, constant_flow(s))
    assert metric.compute().item() == pytest.approx(1.0)
    # the last s columns map outside the frame and are left out
    assert metric.union.sum().item() == H * (W - s)

    plain = TemporalConsistency(num_classes=2)
    plain.update(prev, nxt)
    expected = (c / (c + s) + (W - c - s) / (W - c)) / 2
    assert plain.compute().item() == pytest.approx(expected)
    zero = TemporalConsistency(num_classes=2)
    zero.update(prev, nxt, constant_flow(0))
    assert zero.compute().item() == pytest.approx(expected)


def test_sums_over_pairs_before_dividing() -> None:
    metric = TemporalConsistency(num_classes=2)
    metric.update(two_regions(10), two_regions(12))  # class 0: I=10H, U=12H; class 1: I=18H, U=20H
    metric.update(two_regions(20), two_regions(20))  # class 0: I=U=20H; class 1: I=U=10H
    expected = ((10 + 20) / (12 + 20) + (18 + 10) / (20 + 10)) / 2
    assert metric.compute().item() == pytest.approx(expected)
    assert metric.per_class().tolist() == pytest.approx([30 / 32, 28 / 30])


def test_ignore_index_absent_classes_and_scores() -> None:
    metric = TemporalConsistency(num_classes=4, ignore_index=255)
    prev = two_regions(10)
    nxt = prev.clone()
    nxt[:, 10:] = 255  # unknown in the next frame: those pixels do not count
    metric.update(prev, nxt)
    assert metric.compute().item() == 1.0 and metric.union.tolist() == [10 * H, 0, 0, 0]
    scores = torch.nn.functional.one_hot(two_regions(10), 4).permute(2, 0, 1)[None].float()
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert torch.isnan(metric.compute())
    metric.update(scores, two_regions(15)[None])  # (B, C, H, W) scores vs (B, H, W) labels
    assert metric.compute().item() == pytest.approx((10 / 15 + 15 / 20) / 2)


def test_states_sum_across_processes() -> None:
    metric = TemporalConsistency(num_classes=2)
    assert (
        metric._reductions["intersection"].__name__ == metric._reductions["union"].__name__ == "dim_zero_sum"
    )
    assert metric.intersection.dtype == torch.long


def test_warp_labels_matches_opencv_remap() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (H, W)).astype(np.uint8)
    flow = rng.integers(-3, 4, (H, W, 2)).astype(np.float32)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    expected = cv2.remap(
        labels,
        xs + flow[..., 0],
        ys + flow[..., 1],
        cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=255,
    )
    got = warp_labels(torch.from_numpy(labels).long(), flow).numpy()
    assert np.array_equal(got, expected)


def test_warp_labels_cpu_fast_path_equals_the_gather() -> None:
    """uint8 maps on the CPU take cv2.remap; the labels equal the torch gather's, halves and borders included."""
    rng = np.random.default_rng(1)
    labels = torch.from_numpy(rng.integers(0, 5, (2, H, W)).astype(np.uint8))
    flow = rng.uniform(-6, 6, (2, H, W, 2)).astype(np.float32)
    flow[0, ::3] = np.round(flow[0, ::3]) + 0.5  # exact halves: both must round half to even
    fast = warp_labels(labels, flow)
    assert fast.dtype == torch.uint8
    slow = warp_labels(labels.long(), flow)
    assert torch.equal(fast.long(), slow)
    assert (slow == 255).any() and (slow != 255).any()  # the flow carries some pixels outside the frame
    assert torch.equal(warp_labels(labels[0], flow[0]), fast[0])  # (H, W) maps too


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8], ids=["bincount", "calchist"])
def test_update_counts_match_per_class_sums(dtype: torch.dtype) -> None:
    """Both joint-histogram paths (int64 bincount, CPU uint8 calcHist) give the I and U of per-class masks."""
    rng = np.random.default_rng(2)
    prev = torch.from_numpy(rng.integers(0, 4, (3, H, W))).to(dtype)  # a batch of pairs
    nxt = torch.from_numpy(rng.integers(0, 4, (3, H, W))).to(dtype)
    prev[0, 0, :5] = 255  # ignored pixels in either map are left out
    nxt[1, 1, :5] = 255
    prev[2, 2, :5] = 4  # so are labels beyond the classes (the calcHist range ends at num_classes)
    metric = TemporalConsistency(num_classes=4)
    metric.update(prev, nxt)
    valid = (prev < 4) & (nxt < 4)
    for k in range(4):
        a, b = (prev == k) & valid, (nxt == k) & valid
        assert metric.intersection[k] == (a & b).sum()
        assert metric.union[k] == (a | b).sum()
    assert metric.intersection.dtype == metric.union.dtype == torch.long


@pytest.fixture(scope="module")
def real_frame(video_path: Path) -> np.ndarray:
    frame = next(open_video(video_path, "pyav").frames([60])).rgb
    return cv2.resize(frame, (320, 180), interpolation=cv2.INTER_AREA)


def test_dis_flow_recovers_a_shift_and_restores_consistency(real_frame: np.ndarray) -> None:
    """A real frame moved 5 px right and 2 px down: DIS finds it, and warping restores the prediction."""
    dx, dy = 5, 2
    prev = real_frame[10:-10, 10:-10]
    nxt = real_frame[10 - dy : -10 - dy, 10 - dx : -10 - dx]  # next(x + d) = prev(x)
    flow = dis_flow(prev, nxt)
    assert flow.shape == (*prev.shape[:2], 2) and flow.dtype == np.float32
    inner = flow[20:-20, 20:-20]
    assert np.median(inner[..., 0]) == pytest.approx(dx, abs=0.3)
    assert np.median(inner[..., 1]) == pytest.approx(dy, abs=0.3)

    def segment(rgb: np.ndarray) -> torch.Tensor:  # a stand-in "prediction": 4 brightness classes
        return torch.from_numpy(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) // 64).long()

    with_flow, without = TemporalConsistency(4), TemporalConsistency(4)
    with_flow.update_frames(prev, nxt, segment(prev), segment(nxt))
    without.update(segment(prev), segment(nxt))
    assert with_flow.compute().item() > 0.9
    assert with_flow.compute().item() > without.compute().item() + 0.1


def test_warp_values_bilinear_and_mask() -> None:
    values = torch.arange(W, dtype=torch.float32).repeat(1, 1, H, 1)
    warped, inside = warp_values(values, constant_flow(2.5))
    assert torch.allclose(warped[0, 0, :, : W - 3], torch.arange(W - 3) + 2.5)
    assert inside[0, 0, 0].tolist() == [True] * (W - 3) + [False] * 3


# ---- EMA smoothing -------------------------------------------------------------------------


def softmax_maps(seed: int, n: int = 1, c: int = 3) -> torch.Tensor:
    return torch.softmax(torch.randn(n, c, H, W, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_ema_zero_is_identity() -> None:
    smoother = TemporalEMA(ema=0.0)
    for seed in range(3):
        probs = softmax_maps(seed)
        assert smoother(probs) is probs


def test_constant_input_stays_constant() -> None:
    smoother, probs = TemporalEMA(ema=0.9), softmax_maps(0)[0]
    for _ in range(5):
        assert torch.allclose(smoother(probs), probs, atol=1e-6)
    aligned = TemporalEMA(ema=0.9, flow_aligned=True)
    for _ in range(3):
        assert torch.allclose(aligned(probs, flow=constant_flow(0)), probs, atol=1e-6)


def test_flicker_is_damped() -> None:
    """An alternating probability (0.8 / 0.2) settles at amplitude a (1 - ema) / (1 + ema) around 0.5."""
    ema = 0.8
    smoother = TemporalEMA(ema=ema)
    high = torch.tensor([0.8, 0.2]).view(2, 1, 1).expand(2, H, W)
    outputs = [smoother(high if t % 2 == 0 else 1 - high)[0, 0, 0].item() for t in range(60)]
    amplitude = abs(outputs[-1] - outputs[-2]) / 2
    assert amplitude == pytest.approx(0.3 * (1 - ema) / (1 + ema), rel=1e-3)
    assert outputs[-1] == pytest.approx(0.5, abs=0.05)


def test_flow_alignment_keeps_moving_objects_sharp() -> None:
    def square(x0: int) -> torch.Tensor:
        p = torch.zeros(2, H, W)
        p[1, 5:15, x0 : x0 + 6] = 1.0
        p[0] = 1 - p[1]
        return p

    aligned, plain = TemporalEMA(ema=0.7, flow_aligned=True), TemporalEMA(ema=0.7)
    for t in range(6):
        flow = constant_flow(-2)  # current frame -> previous: the square was 2 px further left
        out_aligned, out_plain = aligned(square(2 + 2 * t), flow=flow), plain(square(2 + 2 * t))
    target = square(2 + 2 * 5)
    assert torch.allclose(out_aligned, target, atol=1e-5)
    assert (out_plain - target).abs().max() > 0.5  # without flow the square smears along its path


def test_batch_equals_sequential_and_frame_based_flow(real_frame: np.ndarray) -> None:
    probs = softmax_maps(1, n=4)
    one_by_one = TemporalEMA(ema=0.5)
    sequential = torch.stack([one_by_one(p) for p in probs])
    assert torch.allclose(TemporalEMA(ema=0.5)(probs), sequential)
    frames = np.stack([real_frame[:H, :W]] * 4)  # a still scene: DIS flow ~ 0, same as plain EMA
    by_frames = TemporalEMA(ema=0.5, flow_aligned=True)(probs, frame=frames)
    assert torch.allclose(by_frames, sequential, atol=1e-3)


def test_smoothing_argument_checks() -> None:
    with pytest.raises(ValueError, match="ema"):
        TemporalEMA(ema=0.99)
    smoother = TemporalEMA(ema=0.5, flow_aligned=True)
    smoother(softmax_maps(0)[0])
    with pytest.raises(ValueError, match="flow"):
        smoother(softmax_maps(1)[0])


def test_tc_of_decoded_i420_frames_equals_rgb(video_path: Path) -> None:
    """TC of segvn.predict's video path (flow on the luma plane) reads as on grey from RGB."""
    from segvn.inference.consistency import TemporalTracker

    frames = list(zip(open_video(video_path, "pyav", i420=True), range(12), strict=False))
    labels = [np.where(f.image.grey > 128, 4, 6).astype(np.uint8) for f, _ in frames]  # tracks the scene
    on_yuv, on_rgb = TemporalTracker(8), TemporalTracker(8)
    for (frame, _), lab in zip(frames, labels, strict=True):
        on_yuv.add(frame.image, lab)
        on_rgb.add(frame.rgb, lab)
    assert on_yuv.pairs == on_rgb.pairs == 11
    assert on_yuv.value == pytest.approx(on_rgb.value, abs=0.01)
