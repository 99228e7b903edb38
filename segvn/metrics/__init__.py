"""Segmentation metrics with MATLAB ``evaluateSemanticSegmentation`` parity (torchmetrics).

A leaf package: it depends on torch and torchmetrics only, so any part of segvn can use it.
"""

from segvn.metrics.boundary import BFScore, bf_score_per_class, bf_summary, boundary_map, disk_row_half_widths
from segvn.metrics.labels import class_indices
from segvn.metrics.segmentation import (
    SegmentationMetrics,
    absent_classes,
    confusion_matrices,
    metrics_from_confmat,
)

__all__ = [
    "BFScore",
    "SegmentationMetrics",
    "absent_classes",
    "bf_score_per_class",
    "bf_summary",
    "boundary_map",
    "class_indices",
    "confusion_matrices",
    "disk_row_half_widths",
    "metrics_from_confmat",
]
