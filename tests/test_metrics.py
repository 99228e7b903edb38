"""Tests of segvn.metrics: hand-computed cases, randomised comparisons with independent numpy/scipy
references, state merging as DDP does it, and one real 2-process gloo run."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import distance_transform_edt

from segvn.metrics import (
    BFScore,
    SegmentationMetrics,
    bf_score_per_class,
    confusion_matrices,
    disk_row_half_widths,
    metrics_from_confmat,
)

IGN = 255


def batch(*images: list[list[int]]) -> torch.Tensor:
    return torch.tensor(images, dtype=torch.long)


def compute_quietly(metric):
    """``metric.compute()`` without the warning about classes absent from the truth (tests expect them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "classes absent from the ground truth", UserWarning)
        return metric.compute()


# --------------------------------------------------------------------------------------------
# Independent references (numpy / scipy), written from the definitions.
# --------------------------------------------------------------------------------------------


def ref_confmat(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for t, p in zip(truth.ravel(), pred.ravel(), strict=True):
        if t != IGN:
            cm[t, p] += 1
    return cm


def ref_metrics(cm: np.ndarray, absent: str) -> dict[str, float | np.ndarray]:
    cm = cm.astype(float)
    rows, cols, tp = cm.sum(1), cm.sum(0), np.diag(cm)
    present = rows > 0
    acc = np.full(len(cm), np.nan)
    iou = np.full(len(cm), np.nan)
    acc[present] = tp[present] / rows[present]
    iou[present] = tp[present] / (rows + cols - tp)[present]
    if absent == "omit" or present.all():
        mean_acc, mean_iou = acc[present].mean(), iou[present].mean()
        weighted = (rows[present] * iou[present]).sum() / rows.sum()
    else:
        mean_acc = mean_iou = weighted = np.nan
    return {
        "global_accuracy": tp.sum() / cm.sum(),
        "mean_accuracy": mean_acc,
        "mean_iou": mean_iou,
        "weighted_iou": weighted,
        "class_accuracy": acc,
        "class_iou": iou,
    }


def ref_boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels having a 4-neighbour outside the mask or outside the image (explicit loops)."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    for y in range(h):
        for x in range(w):
            if not mask[y, x]:
                continue
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                yy, xx = y + dy, x + dx
                if not (0 <= yy < h and 0 <= xx < w) or not mask[yy, xx]:
                    out[y, x] = True
    return out


def _bf_from_boundaries(pred_b, true_b, dist_sq_to_true, dist_sq_to_pred, theta_sq) -> float:
    if not pred_b.any() or not true_b.any():
        return math.nan
    precision = np.mean(dist_sq_to_true < theta_sq)
    recall = np.mean(dist_sq_to_pred < theta_sq)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def ref_bf_bruteforce(pred: np.ndarray, truth: np.ndarray, num_classes: int, tolerance: float) -> np.ndarray:
    """All-pairs squared distances between boundary pixels (small images only)."""
    valid = truth != IGN
    theta = tolerance * math.hypot(*truth.shape)
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        true_b = ref_boundary(truth == c)
        pred_b = ref_boundary((pred == c) & valid)
        pts_t, pts_p = np.argwhere(true_b), np.argwhere(pred_b)
        if len(pts_t) == 0 or len(pts_p) == 0:
            continue
        d2 = ((pts_p[:, None, :] - pts_t[None, :, :]) ** 2).sum(-1)  # integer squared distances
        out[c] = _bf_from_boundaries(pred_b, true_b, d2.min(1), d2.min(0), theta * theta)
    return out


def ref_bf_edt(pred: np.ndarray, truth: np.ndarray, num_classes: int, tolerance: float) -> np.ndarray:
    """Distance-transform version of the reference (scipy EDT), for larger images."""
    valid = truth != IGN
    theta = tolerance * math.hypot(*truth.shape)
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        true_b = ref_boundary(truth == c)
        pred_b = ref_boundary((pred == c) & valid)
        if not true_b.any() or not pred_b.any():
            continue
        to_true = np.rint(distance_transform_edt(~true_b) ** 2)[pred_b]
        to_pred = np.rint(distance_transform_edt(~pred_b) ** 2)[true_b]
        out[c] = _bf_from_boundaries(pred_b, true_b, to_true, to_pred, theta * theta)
    return out


def random_pair(rng: np.random.Generator, h: int, w: int, num_classes: int, ignore_frac: float = 0.1):
    """Blobby truth (random rectangles), prediction = perturbed truth, some ignored pixels."""
    truth = rng.integers(0, num_classes, size=(1, 1)).repeat(h, 0).repeat(w, 1)
    for _ in range(rng.integers(1, 6)):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        truth[y0 : y0 + rng.integers(1, h + 1), x0 : x0 + rng.integers(1, w + 1)] = rng.integers(
            0, num_classes
        )
    pred = np.roll(truth, (rng.integers(-2, 3), rng.integers(-2, 3)), axis=(0, 1))
    noise = rng.random((h, w)) < 0.05
    pred[noise] = rng.integers(0, num_classes, size=noise.sum())
    truth[rng.random((h, w)) < ignore_frac] = IGN
    return pred, truth


# --------------------------------------------------------------------------------------------
# Confusion-matrix metrics: hand-computed cases.
# --------------------------------------------------------------------------------------------

# Truth / prediction, 4x4, 3 classes; (2, 3) is ignored (its prediction 1 must not count).
TRUTH_A = [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, IGN], [2, 2, 2, 2]]
PRED_A = [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 2, 1], [2, 2, 0, 2]]
# Rows (truth) x columns (pred): truth 0 has 6 pixels, one predicted 1; truth 1 has 5 (one -> 2);
# truth 2 has 4 (one -> 0). 15 counted pixels, trace 12.
CM_A = [[5, 1, 0], [0, 4, 1], [1, 0, 3]]


def test_confmat_and_metrics_by_hand():
    m = SegmentationMetrics(num_classes=3)
    m.update(batch(PRED_A), batch(TRUTH_A))
    out = m.compute()
    assert out["confmat"].tolist() == CM_A
    assert out["global_accuracy"].item() == pytest.approx(12 / 15)
    # Accuracy: 5/6, 4/5, 3/4.
    assert out["class_accuracy"].tolist() == pytest.approx([5 / 6, 4 / 5, 3 / 4])
    assert out["mean_accuracy"].item() == pytest.approx((5 / 6 + 4 / 5 + 3 / 4) / 3)
    # Column sums 6, 5, 4. IoU: 5/(6+6-5), 4/(5+5-4), 3/(4+4-3).
    assert out["class_iou"].tolist() == pytest.approx([5 / 7, 2 / 3, 3 / 5])
    assert out["mean_iou"].item() == pytest.approx((5 / 7 + 2 / 3 + 3 / 5) / 3)
    assert out["weighted_iou"].item() == pytest.approx((6 * 5 / 7 + 5 * 2 / 3 + 4 * 3 / 5) / 15)


def test_logits_input_matches_indices():
    pred = batch(PRED_A)
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 5 + torch.rand(1, 3, 4, 4)
    a, b = SegmentationMetrics(3, bf_score=True), SegmentationMetrics(3, bf_score=True)
    a.update(pred, batch(TRUTH_A))
    b.update(logits, batch(TRUTH_A).to(torch.uint8))  # uint8 truth, as the datasets store it
    for key in ("confmat", "mean_iou", "bf_scores"):
        torch.testing.assert_close(a.compute()[key], b.compute()[key], equal_nan=True)


def test_ignored_pixels_are_left_out_whatever_is_predicted():
    truth = batch([[0, IGN], [1, IGN]])
    m = SegmentationMetrics(num_classes=2)
    m.update(batch([[0, 1], [1, 0]]), truth)
    # Only (0,0) and (1,0) count, both right.
    assert m.compute()["confmat"].tolist() == [[1, 0], [0, 1]]
    assert m.compute()["global_accuracy"].item() == 1.0


@pytest.mark.parametrize("absent", ["omit", "nan"])
def test_absent_class_modes_and_warning(absent: str):
    # Same images, 4 classes: class 3 ("bike") is never in the truth but predicted once at (3, 2)
    # (truth 2), which still costs class 2 its pixel. Rows: [5,1,0,0], [0,4,1,0], [0,0,3,1], [0,0,0,0];
    # columns 5, 5, 4, 1.
    pred = [row[:] for row in PRED_A]
    pred[3][2] = 3
    m = SegmentationMetrics(4, absent=absent, class_names=["road", "car", "sky", "bike"])
    m.update(batch(pred), batch(TRUTH_A))
    with pytest.warns(UserWarning, match="bike"):
        out = m.compute()
    assert out["global_accuracy"].item() == pytest.approx(12 / 15)
    # IoU: 5/(6+5-5), 4/(5+5-4), 3/(4+4-3); class 3 would be 0/(0+1-0) = 0 but is NaN (absent).
    np.testing.assert_allclose(out["class_iou"].numpy(), [5 / 6, 2 / 3, 3 / 5, np.nan])
    np.testing.assert_allclose(out["class_accuracy"].numpy(), [5 / 6, 4 / 5, 3 / 4, np.nan])
    if absent == "omit":
        assert out["mean_iou"].item() == pytest.approx(0.7)  # (5/6 + 2/3 + 3/5) / 3
        assert out["mean_accuracy"].item() == pytest.approx((5 / 6 + 4 / 5 + 3 / 4) / 3)
        assert out["weighted_iou"].item() == pytest.approx(161 / 225)  # (6*5/6 + 5*2/3 + 4*3/5) / 15
    else:
        for key in ("mean_iou", "mean_accuracy", "weighted_iou"):
            assert math.isnan(out[key].item())


def test_no_warning_when_every_class_is_present():
    m = SegmentationMetrics(3)
    m.update(batch(PRED_A), batch(TRUTH_A))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = m.compute()
    assert [str(w.message) for w in caught] == []
    assert torch.isfinite(out["class_iou"]).all() and out["class_iou"].shape == (3,)


def test_warning_names_class_indices_without_names():
    m = SegmentationMetrics(5)
    m.update(batch(PRED_A), batch(TRUTH_A))
    with pytest.warns(UserWarning, match="3, 4"):
        m.compute()


def test_per_image_metrics_by_hand():
    # Image 2: all truth 0, four pixels predicted 1 -> per image CM [[12,4,0],[0,0,0],[0,0,0]];
    # classes 1 and 2 are absent from its truth and left out of its means (each 0.75).
    pred2 = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    m = SegmentationMetrics(3, per_image=True)
    m.update(batch(PRED_A, pred2), batch(TRUTH_A, [[0] * 4] * 4))
    out = m.compute()
    img = out["image_metrics"]
    np.testing.assert_allclose(img["global_accuracy"].numpy(), [12 / 15, 12 / 16])
    np.testing.assert_allclose(img["mean_accuracy"].numpy(), [(5 / 6 + 4 / 5 + 3 / 4) / 3, 0.75])
    np.testing.assert_allclose(img["mean_iou"].numpy(), [(5 / 7 + 2 / 3 + 3 / 5) / 3, 0.75])
    np.testing.assert_allclose(img["weighted_iou"].numpy(), [(6 * 5 / 7 + 5 * 2 / 3 + 4 * 3 / 5) / 15, 0.75])
    # Dataset IoU comes from the summed matrix [[17,5,0],[0,4,1],[1,0,3]], not from image means:
    # class 0: 17 / (22 + 18 - 17).
    assert out["confmat"].tolist() == [[17, 5, 0], [0, 4, 1], [1, 0, 3]]
    assert out["class_iou"][0].item() == pytest.approx(17 / 23)
    assert out["global_accuracy"].item() == pytest.approx(24 / 31)


def test_fully_ignored_image_gives_nan_image_metrics():
    m = SegmentationMetrics(2, per_image=True)
    m.update(batch([[0, 1]], [[0, 1]]), batch([[0, 1]], [[IGN, IGN]]))
    img = compute_quietly(m)["image_metrics"]
    assert img["global_accuracy"][0].item() == 1.0
    assert math.isnan(img["global_accuracy"][1].item()) and math.isnan(img["mean_iou"][1].item())


def test_invalid_labels_raise():
    m = SegmentationMetrics(3)
    with pytest.raises(ValueError, match="target"):
        m.update(batch([[0, 1]]), batch([[0, 3]]))
    with pytest.raises(ValueError, match="preds"):
        m.update(batch([[0, 7]]), batch([[0, 1]]))
    m.update(batch([[0, 7]]), batch([[0, IGN]]))  # out-of-range prediction on an ignored pixel is fine
    with pytest.raises(ValueError, match="absent"):
        SegmentationMetrics(3, absent="zero")


def test_metrics_from_confmat_is_batched():
    stack = torch.stack([torch.tensor(CM_A), torch.tensor(CM_A).T])
    out = metrics_from_confmat(stack)
    single = metrics_from_confmat(torch.tensor(CM_A).T)
    assert out["class_iou"].shape == (2, 3)
    torch.testing.assert_close(out["mean_iou"][1], single["mean_iou"])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    num_classes=st.integers(1, 6),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
    absent=st.sampled_from(["omit", "nan"]),
)
def test_confmat_metrics_match_reference(seed, num_classes, shape, absent):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, num_classes + 1, size=shape)
    truth[truth == num_classes] = IGN
    pred = rng.integers(0, num_classes, size=shape)
    m = SegmentationMetrics(num_classes, absent=absent, per_image=True)
    m.update(torch.from_numpy(pred), torch.from_numpy(truth))
    out = compute_quietly(m)
    cm = ref_confmat(pred, truth, num_classes)
    np.testing.assert_array_equal(out["confmat"].numpy(), cm)
    if cm.sum() == 0:
        return
    for key, value in ref_metrics(cm, absent).items():
        np.testing.assert_allclose(out[key].numpy(), value, rtol=1e-12, err_msg=key)
    for i in range(shape[0]):
        cm_i = ref_confmat(pred[i], truth[i], num_classes)
        if cm_i.sum() == 0:
            continue
        ref_i = ref_metrics(cm_i, "omit")
        for key, values in out["image_metrics"].items():
            np.testing.assert_allclose(values.reshape(-1)[i].item(), ref_i[key], rtol=1e-12, err_msg=key)


def test_confusion_matrices_per_image():
    cms = confusion_matrices(batch(PRED_A, TRUTH_A), batch(TRUTH_A, TRUTH_A), 3)
    assert cms[0].tolist() == CM_A
    assert cms[1].tolist() == [[6, 0, 0], [0, 5, 0], [0, 0, 4]]  # truth as prediction; 255 -> ignored


# --------------------------------------------------------------------------------------------
# BF score: hand-computed cases.
# --------------------------------------------------------------------------------------------


def image(h: int, w: int, fill: int = 0) -> torch.Tensor:
    return torch.full((h, w), fill, dtype=torch.long)


def test_disk_rows_strict_inequality():
    # theta^2 = 1: only (0, 0) is at squared distance < 1.
    assert disk_row_half_widths(1.0) == [(0, 0)]
    # theta^2 = 2.0001: dx^2 + dy^2 <= 2 -> the 3x3 block.
    assert disk_row_half_widths(2.0001) == [(-1, 1), (0, 1), (1, 1)]
    # theta^2 = 5: 4 = 2^2 + 0 fits, 5 = 2^2 + 1 does not.
    assert disk_row_half_widths(5.0) == [(-2, 0), (-1, 1), (0, 2), (1, 1), (2, 0)]
    assert disk_row_half_widths(0.0) == []


def test_bf_exact_tolerance_does_not_match():
    # 6x8 image, diagonal exactly 10, tolerance 0.1 -> theta exactly 1.0.
    # Truth class 1: 2x2 block rows 2-3, cols 2-3. Prediction class 1: 2x3 block rows 2-3, cols 2-4.
    truth, pred = image(6, 8), image(6, 8)
    truth[2:4, 2:4] = 1
    pred[2:4, 2:5] = 1
    assert 0.1 * math.hypot(6, 8) == 1.0
    # theta = 1 (strict): only coinciding boundary pixels match.
    # Class 1: all 6 predicted and 4 true pixels are boundary; 4 coincide -> P = 4/6, R = 1,
    #   BF = 2 (2/3) / (5/3) = 0.8.
    # Class 0: truth boundary = 24 border pixels + 8 around the 2x2 block = 32; prediction boundary =
    #   24 + 10 around the 2x3 block = 34; coinciding: 24 + 6 -> P = 30/34, R = 30/32, BF = 60/66.
    scores = bf_score_per_class(pred[None], truth[None], 2, tolerance=0.1)
    np.testing.assert_allclose(scores[0].numpy(), [10 / 11, 0.8])
    # Just above 1: 4-neighbours match too, and every boundary pixel has one -> BF = 1 for both.
    scores = bf_score_per_class(pred[None], truth[None], 2, tolerance=0.1 + 1e-9)
    np.testing.assert_allclose(scores[0].numpy(), [1.0, 1.0])


def test_bf_object_touching_image_border():
    # Truth class 1: columns 5-7 of a 6x8 image (touching the right border); prediction: columns 6-7.
    # Default tolerance -> theta = 0.075: only coinciding pixels match.
    # Class 1 truth boundary: column 5 (6) + column 7 (6, image border) + (0,6), (5,6) = 14.
    #   Prediction boundary: all 12 pixels. Coinciding: column 7 + (0,6), (5,6) = 8.
    #   P = 8/12, R = 8/14 -> BF = 2*8*8 / (8*14 + 8*12) = 8/13.
    # Class 0 truth (columns 0-4) boundary: columns 0 and 4 + rows 0/5 of columns 1-3 = 18;
    #   prediction (columns 0-5): columns 0 and 5 + rows 0/5 of columns 1-4 = 20; coinciding 14
    #   (column 0, rows 0/5 of columns 1-4) -> BF = 2*14 / (18 + 20) = 14/19.
    truth, pred = image(6, 8), image(6, 8)
    truth[:, 5:] = 1
    pred[:, 6:] = 1
    scores = bf_score_per_class(pred[None], truth[None], 2)
    np.testing.assert_allclose(scores[0].numpy(), [14 / 19, 8 / 13])


def test_bf_nan_when_a_boundary_is_empty_and_zero_when_nothing_matches():
    # Class 1 is a single true pixel at (1,1) and a single predicted pixel at (4,6): both boundaries
    # are non-empty, nothing matches -> P = R = 0 -> BF 0. Class 2 is only in the truth -> NaN.
    # Class 3 is only predicted -> NaN. Class 4 is in neither -> NaN.
    truth, pred = image(6, 8), image(6, 8)
    truth[1, 1], pred[4, 6] = 1, 1
    truth[3, 3] = 2
    pred[0, 7] = 3
    scores = bf_score_per_class(pred[None], truth[None], 5)[0]
    assert scores[1].item() == 0.0
    assert all(math.isnan(scores[c].item()) for c in (2, 3, 4))


def test_bf_ignored_pixels_are_outside_both_masks():
    # Truth: class 0 everywhere except an ignored 2x2 block; prediction: class 0 everywhere.
    # Restricted to non-ignored pixels the predicted mask equals the true one, so both boundaries
    # are the 24 border pixels + the 8 pixels around the block -> BF = 1. (Without the restriction
    # the predicted boundary would miss those 8 and the recall would be 24/32.)
    truth, pred = image(6, 8), image(6, 8)
    truth[2:4, 2:4] = IGN
    assert bf_score_per_class(pred[None], truth[None], 1)[0, 0].item() == 1.0
    metric = BFScore(1)
    metric.update(pred[None], truth[None])
    assert metric.compute()["mean_bf_score"].item() == 1.0


def test_bf_metric_means_ignore_nan():
    # Image 1: class 0 BF 14/19, class 1 BF 8/13 (border case above). Image 2: only class 0, BF 1.
    truth1, pred1 = image(6, 8), image(6, 8)
    truth1[:, 5:] = 1
    pred1[:, 6:] = 1
    metric = BFScore(2, class_names=["a", "b"])
    metric.update(pred1[None], truth1[None])
    metric.update(image(5, 5)[None], image(5, 5)[None])  # another size
    out = metric.compute()
    np.testing.assert_allclose(out["bf_scores"].numpy(), [[14 / 19, 8 / 13], [1.0, np.nan]])
    np.testing.assert_allclose(out["image_bf_score"].numpy(), [(14 / 19 + 8 / 13) / 2, 1.0])
    np.testing.assert_allclose(out["class_bf_score"].numpy(), [(14 / 19 + 1) / 2, 8 / 13])
    # Dataset mean = mean over images of the image means (MATLAB), not mean of class means.
    assert out["mean_bf_score"].item() == pytest.approx(((14 / 19 + 8 / 13) / 2 + 1) / 2)


def test_segmentation_metrics_with_bf_and_mixed_sizes():
    # Image 1 is the border case above (BF 14/19 and 8/13); image 2 (5x5, another size, given as
    # a single (H, W) image) is all class 0 predicted right: BF [1, NaN], accuracy 1.
    truth1, pred1 = image(6, 8), image(6, 8)
    truth1[:, 5:] = 1
    pred1[:, 6:] = 1
    m = SegmentationMetrics(2, per_image=True, bf_score=True)
    m.update(pred1[None], truth1[None])
    m.update(image(5, 5), image(5, 5))
    out = m.compute()
    img = out["image_metrics"]
    np.testing.assert_allclose(img["mean_bf_score"].numpy(), [(14 / 19 + 8 / 13) / 2, 1.0])
    # Image 1: truth 30 px class 0 / 18 px class 1; 6 class-1 pixels (column 5) predicted 0.
    np.testing.assert_allclose(img["global_accuracy"].numpy(), [42 / 48, 1.0])
    assert out["confmat"].tolist() == [[30 + 25, 0], [6, 12]]
    assert out["mean_bf_score"].item() == pytest.approx(((14 / 19 + 8 / 13) / 2 + 1) / 2)


# --------------------------------------------------------------------------------------------
# BF score: randomised comparisons with the references.
# --------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    h=st.integers(1, 14),
    w=st.integers(1, 14),
    num_classes=st.integers(1, 4),
    tolerance=st.sampled_from([0.0075, 0.05, 0.1, 0.2, 0.25, 0.3333, 0.5]),
)
def test_bf_matches_bruteforce_reference(seed, h, w, num_classes, tolerance):
    rng = np.random.default_rng(seed)
    pred, truth = random_pair(rng, h, w, num_classes)
    ours = bf_score_per_class(
        torch.from_numpy(pred)[None], torch.from_numpy(truth)[None], num_classes, tolerance=tolerance
    )
    ref = ref_bf_bruteforce(pred, truth, num_classes, tolerance)
    np.testing.assert_allclose(ours[0].numpy(), ref, rtol=0, atol=1e-12)


def test_bf_exact_integer_tolerances_match_reference():
    # Images with integer diagonals (3k x 4k -> 5k) and tolerances giving integer theta^2,
    # where the strict "<" decides; also a long window (> 33 bits) per disk row.
    rng = np.random.default_rng(0)
    for h, w, tolerance in [(12, 16, 0.1), (12, 16, 0.15), (30, 40, 0.04), (30, 40, 0.1), (60, 80, 0.4)]:
        for _ in range(3):
            pred, truth = random_pair(rng, h, w, 3)
            ours = bf_score_per_class(
                torch.from_numpy(pred)[None], torch.from_numpy(truth)[None], 3, tolerance=tolerance
            )
            ref = ref_bf_edt(pred, truth, 3, tolerance)
            np.testing.assert_allclose(ours[0].numpy(), ref, rtol=0, atol=1e-12)


def test_bf_disk_at_every_offset_and_bit_position():
    # Classes 1..32 each have one true pixel, at (18, 17 + k), and one predicted pixel, at the same
    # offset (dy, dx) from it in every class: class k's BF is 1 when dy^2 + dx^2 < theta^2, else 0.
    # theta = 17.3 makes disk rows up to 35 bits wide (more than one read window); offsets sweep
    # whole rows across the disk (each pixel queries the other at +-offset), and the 32 columns
    # put the pixels at every bit position of a packed word.
    h, w, theta, k = 36, 69, 17.3, 32
    cases = [(dy, dx) for dy in (0, 5, 12, 17) for dx in range(-18, 19)]
    truth = torch.zeros(len(cases), h, w, dtype=torch.long)
    pred = torch.zeros_like(truth)
    truth[:, 18, 18 : 18 + k] = torch.arange(1, k + 1)
    for i, (dy, dx) in enumerate(cases):
        pred[i, 18 + dy, 18 + dx : 18 + dx + k] = torch.arange(1, k + 1)
    scores = bf_score_per_class(pred, truth, k + 1, tolerance=theta / math.hypot(h, w))[:, 1:]
    expected = torch.tensor([float(dy * dy + dx * dx < theta**2) for dy, dx in cases], dtype=scores.dtype)
    torch.testing.assert_close(scores, expected[:, None].expand(-1, k), rtol=0, atol=0)
    assert 0 < expected.sum() < len(cases)


def test_bf_batch_equals_single_images_and_edt_reference():
    rng = np.random.default_rng(1)
    pairs = [random_pair(rng, 45, 70, 5, ignore_frac=0.02) for _ in range(3)]
    preds = torch.from_numpy(np.stack([p for p, _ in pairs]))
    truths = torch.from_numpy(np.stack([t for _, t in pairs]))
    batched = bf_score_per_class(preds, truths, 5, tolerance=0.05)
    for i, (pred, truth) in enumerate(pairs):
        np.testing.assert_allclose(batched[i].numpy(), ref_bf_edt(pred, truth, 5, 0.05), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# State merging (as DDP reduces) and a real 2-process run.
# --------------------------------------------------------------------------------------------


def _dataset(seed: int = 0, n: int = 5, h: int = 24, w: int = 32, num_classes: int = 4):
    rng = np.random.default_rng(seed)
    pairs = [random_pair(rng, h, w, num_classes) for _ in range(n)]
    return torch.from_numpy(np.stack([p for p, _ in pairs])), torch.from_numpy(
        np.stack([t for _, t in pairs])
    )


def _metrics(num_classes: int = 4):
    return (
        SegmentationMetrics(num_classes, per_image=True, bf_score=True, tolerance=0.05),
        BFScore(num_classes, tolerance=0.05),
    )


def _assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    else:
        torch.testing.assert_close(a, b, equal_nan=True, rtol=1e-12, atol=1e-12)


def test_merge_state_equals_single_pass():
    preds, truths = _dataset()
    whole = _metrics()
    for metric in whole:
        metric.update(preds[:2], truths[:2])
        metric.update(preds[2:], truths[2:])
    first, second = _metrics(), _metrics()
    for metric in first:
        metric.update(preds[:2], truths[:2])
    for metric in second:
        metric.update(preds[2:], truths[2:])
    # merge_state puts the incoming ("cat") states first, so merge the first half into the second.
    for target_metric, incoming in zip(second, first, strict=True):
        target_metric.merge_state(incoming)
    for a, b in zip(whole, second, strict=True):
        _assert_same(compute_quietly(a), compute_quietly(b))


def _ddp_worker(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        preds, truths = _dataset()
        part = slice(0, 3) if rank == 0 else slice(3, None)  # uneven halves: 3 and 2 images
        results = []
        for metric in _metrics():
            metric.update(preds[part], truths[part])
            results.append(compute_quietly(metric))
        if rank == 0:
            torch.save(results, out_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    out_file = tmp_path / "results.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(out_file)), nprocs=2, join=True)
    preds, truths = _dataset()
    expected = []
    for metric in _metrics():
        metric.update(preds, truths)
        expected.append(compute_quietly(metric))
    for a, b in zip(expected, torch.load(out_file), strict=True):
        _assert_same(a, b)


def test_class_indices_equal_argmax_ties_included():
    from segvn.metrics import class_indices

    scores = torch.randn(3, 8, 17, 23)
    scores[:, 5] = scores[:, 2]  # ties: the first index wins, as with argmax
    assert torch.equal(class_indices(scores), scores.argmax(1))
    assert torch.equal(class_indices(scores.bfloat16()), scores.bfloat16().argmax(1))
