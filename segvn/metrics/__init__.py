"""Segmentation metrics with MATLAB ``evaluateSemanticSegmentation`` parity (torchmetrics)."""

from segvn.metrics.boundary import BFScore, bf_score_per_class, bf_summary, boundary_map

__all__ = ["BFScore", "bf_score_per_class", "bf_summary", "boundary_map"]
