"""Evaluation reports: the dataset and class tables as JSON, Markdown and CSV.

Laid out like the thesis README (MATLAB's ``DataSetMetrics`` and ``ClassMetrics`` tables).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DATASET_KEYS = ("global_accuracy", "mean_accuracy", "mean_iou", "weighted_iou", "mean_bf_score")
DATASET_TITLES = ("GlobalAccuracy", "MeanAccuracy", "MeanIoU", "WeightedIoU", "MeanBFScore")
IMAGE_KEYS = DATASET_KEYS


def _num(x: Any) -> float | None:
    v = float(x)
    return None if math.isnan(v) else v


def metrics_dict(result: dict, class_names: Sequence[str], **extra: Any) -> dict[str, Any]:
    """The evaluate ``metrics.json`` layout from a :class:`~segvn.metrics.SegmentationMetrics` result."""
    out: dict[str, Any] = {k: _num(result[k]) for k in DATASET_KEYS}
    out["classes"] = {
        name: {
            "accuracy": _num(result["class_accuracy"][i]),
            "iou": _num(result["class_iou"][i]),
            "bf_score": _num(result["class_bf_score"][i]),
        }
        for i, name in enumerate(class_names)
    }
    out.update(extra)
    return out


def _fmt(v: float | None, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def metrics_markdown(metrics: dict[str, Any], title: str = "Evaluation") -> str:
    """Markdown with the dataset table and the per-class table."""
    lines = [f"# {title}", ""]
    info = [f"{k}: `{metrics[k]}`" for k in ("checkpoint", "split", "images") if k in metrics]
    if info:
        lines += ["- " + "\n- ".join(info), ""]
    lines += [
        "## Dataset metrics",
        "",
        "| " + " | ".join(DATASET_TITLES) + " |",
        "|" + " :---: |" * len(DATASET_TITLES),
        "| " + " | ".join(_fmt(metrics[k]) for k in DATASET_KEYS) + " |",
        "",
        "## Class metrics",
        "",
        "| Class | Accuracy | IoU | MeanBFScore |",
        "| :--- | :---: | :---: | :---: |",
    ]
    for name, row in metrics["classes"].items():
        lines.append(f"| {name} | {_fmt(row['accuracy'])} | {_fmt(row['iou'])} | {_fmt(row['bf_score'])} |")
    if metrics.get("absent_classes"):
        lines += [
            "",
            f"Classes absent from the ground truth ({metrics.get('absent_mode', 'omit')}): "
            + ", ".join(metrics["absent_classes"]),
        ]
    return "\n".join(lines) + "\n"


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    path = Path(path)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
    return path


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write JSON through a temporary file, so a reader never sees half a result."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)
    return path


def log_to_wandb(
    run: Any, metrics: dict[str, Any], pictures: dict[str, str | Path] | None = None, prefix: str = "eval"
) -> None:
    """Send the dataset metrics (summary), the class table and pictures to a W&B run."""
    import wandb

    run.summary.update({f"{prefix}/{k}": metrics[k] for k in DATASET_KEYS})
    table = wandb.Table(columns=["class", "accuracy", "iou", "bf_score"])
    for name, row in metrics["classes"].items():
        table.add_data(name, row["accuracy"], row["iou"], row["bf_score"])
    payload: dict[str, Any] = {f"{prefix}/class_metrics": table}
    for key, path in (pictures or {}).items():
        payload[f"{prefix}/{key}"] = wandb.Image(str(path))
    run.log(payload)
