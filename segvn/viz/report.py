"""Evaluation reports: the dataset and class tables as JSON, Markdown and CSV, and their charts.

Laid out like the thesis README (MATLAB's ``DataSetMetrics`` and ``ClassMetrics`` tables).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segvn.utils.io import write_atomic, write_csv, write_json
from segvn.viz.plots import plot_class_metrics, plot_confusion_matrix

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


def write_evaluation_report(
    out: Path, result: dict, class_names: Sequence[str], paths: Sequence[str], title: str, **extra: Any
) -> tuple[dict[str, Any], Path]:
    """Write ``metrics.json/.md``, ``class_metrics.csv/.png``, ``image_metrics.csv`` and
    ``confusion_matrix.png`` of a :class:`~segvn.metrics.SegmentationMetrics` result into ``out``.

    ``metrics.json`` is written last (atomically), so its presence means the report is complete.
    Returns its content and the confusion-matrix picture.
    """
    names = list(class_names)
    absent = [names[i] for i, n in enumerate(result["confmat"].sum(1).tolist()) if n == 0]
    metrics = metrics_dict(result, names, images=len(paths), absent_classes=absent, **extra)
    metrics["confusion_matrix"] = result["confmat"].long().tolist()  # rows: truth, columns: prediction
    write_csv(
        out / "class_metrics.csv",
        ["class", "accuracy", "iou", "bf_score"],
        [[n, *metrics["classes"][n].values()] for n in names],
    )
    image = {k: v.reshape(-1).tolist() for k, v in result["image_metrics"].items()}
    write_csv(
        out / "image_metrics.csv",
        ["image", *IMAGE_KEYS],
        [[p, *(image[k][i] for k in IMAGE_KEYS)] for i, p in enumerate(paths)],
    )
    cm_png = plot_confusion_matrix(result["confmat"].cpu().numpy(), names, out / "confusion_matrix.png")
    nan = float("nan")
    plot_class_metrics(
        {
            key: [metrics["classes"][n][field] or nan for n in names]
            for key, field in (("accuracy", "accuracy"), ("IoU", "iou"), ("BF score", "bf_score"))
        },
        names,
        out=out / "class_metrics.png",
        title=f"Per-class metrics ({extra.get('split', '')})",
    )
    write_atomic(out / "metrics.md", metrics_markdown(metrics, title))
    write_json(out / "metrics.json", metrics)
    return metrics, cm_png
