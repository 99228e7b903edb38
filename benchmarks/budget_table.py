"""One table for recipes trained on the same wall-clock budget: held-out-street mIoU, per-class IoU, BF.

    .venv/bin/python benchmarks/budget_table.py --out benchmarks/results/budget45/resnet18 \
        "thesis recipe=RUN_DIR" "resnet18_fast=RUN_DIR" "plain loop=benchmarks/results/budget45/plain_resnet18.json"

Each ``NAME=SOURCE`` is a ``segvn.train`` run directory (its ``metrics.json`` for minutes, epochs and
steps, and ``eval_val/metrics.json`` from ``python -m segvn.evaluate ckpt_path=<best> split=val
hydra.run.dir=RUN_DIR/eval_val``), one evaluation folder inside it (``RUN_DIR/eval_val_tta``, e.g.
evaluated with ``tta_flip=true``), or the JSON report of ``benchmarks/plain_train.py``
(``REPORT.json@val_tta`` takes its flip-TTA evaluation), or a row of an earlier table
(``OUT.json#ROW NAME``, for runs whose directories are gone). Gains are against ``--baseline NAME``:
one row, or the mean mIoU of several (``--baseline A --baseline B``: seeds of the plain loop). Writes
``OUT.json`` (every row) and ``OUT.md`` (the table), and prints the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from segvn.data.classes import CLASS_NAMES


def from_run(path: Path) -> dict:
    evaluated = (path / "metrics.json").exists() and "mean_iou" in json.loads(
        (path / "metrics.json").read_text()
    )
    run, eval_dir = (path.parent, path) if evaluated else (path, path / "eval_val")
    train = json.loads((run / "metrics.json").read_text())
    ev = json.loads((eval_dir / "metrics.json").read_text())
    cfg = (run / "config.yaml").read_text()
    return {
        "source": str(run),
        "minutes": train["seconds"] / 60.0,
        "epochs": train["epochs"],
        "steps": train["global_step"],
        "batch": train["effective_batch_size"],
        "best_checkpoint": Path(train["best_model_path"]).name,
        "miou": ev["mean_iou"],
        "global_acc": ev["global_accuracy"],
        "mean_bf_score": ev["mean_bf_score"],
        "class_iou": {name: row["iou"] for name, row in ev["classes"].items()},
        "images": ev["images"],
        "precision": next(
            (ln.split(":", 1)[1].strip() for ln in cfg.splitlines() if "precision:" in ln), "?"
        ),
    }


def from_plain(path: Path, key: str = "val") -> dict:
    doc = json.loads(path.read_text())
    val = doc[key]
    return {
        "source": str(path),
        "minutes": doc["minutes"],
        "epochs": doc["epochs"],
        "steps": doc["steps"],
        "batch": doc["batch"],
        "best_checkpoint": "final weights",
        "miou": val["miou"],
        "global_acc": val["global_acc"],
        "mean_bf_score": val["mean_bf_score"],
        "class_iou": val["class_iou"],
        "images": None,
        "precision": "32-true",
    }


def from_table(path: Path, row: str) -> dict:
    """A row of an earlier ``OUT.json``: results whose run directories are gone keep their place."""
    rows = json.loads(path.read_text())
    if row not in rows:
        raise SystemExit(f"{path} has no row {row!r}; its rows: {', '.join(rows)}")
    return rows[row]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="OUT.json and OUT.md are written")
    p.add_argument(
        "--baseline",
        action="append",
        help="a row the gains are against; repeat it for several (their mean mIoU); default: plain loop",
    )
    p.add_argument("rows", nargs="+", help="NAME=RUN_DIR or NAME=plain_train.json")
    args = p.parse_args()
    args.baseline = args.baseline or ["plain loop"]
    rows = {}
    for spec in args.rows:
        head, _, row = spec.partition("#")  # a row name may hold "=" itself
        name, source = head.rsplit("=", 1)
        source, _, key = source.partition("@")
        path = Path(source)
        if row:
            rows[name] = from_table(path, row)
        else:
            rows[name] = from_plain(path, key or "val") if path.suffix == ".json" else from_run(path)
    missing = [b for b in args.baseline if b not in rows]
    if missing:
        raise SystemExit(f"--baseline names no row: {', '.join(missing)}")
    base = sum(rows[b]["miou"] for b in args.baseline) / len(args.baseline)
    head = ["recipe", "minutes", "epochs", "steps", "val mIoU", "vs plain", "mean BF", "global acc"]
    lines = [
        "| " + " | ".join(head + list(CLASS_NAMES)) + " |",
        "|" + " --- |" * (len(head) + len(CLASS_NAMES)),
    ]
    for name, r in rows.items():
        gain = "—" if name in args.baseline else f"{r['miou'] / base - 1:+.2%}"
        cells = [
            name, f"{r['minutes']:.1f}", f"{r['epochs']:.0f}", str(r["steps"]), f"{r['miou']:.3f}", gain,
            f"{r['mean_bf_score']:.3f}", f"{r['global_acc']:.3f}",
        ]  # fmt: skip
        cells += [f"{r['class_iou'].get(c, float('nan')):.3f}" for c in CLASS_NAMES]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
