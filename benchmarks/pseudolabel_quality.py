"""How right are a teacher's pseudo-labels? Scored against the human labels of the street they label.

    python benchmarks/pseudolabel_quality.py --ckpt TEACHER.ckpt --out outputs/bench/plq \
        --pseudo "scales=[1.0]" --variants plain flow

Runs ``segvn.pseudolabel`` with the teacher over every frame of 0016E5 (the transductive pool of
``data=camvid_streets``) once per variant (``plain``: the settings given; ``flow``: the same plus
``flow_agree=true``), then reads 0016E5's labels, which pseudo-labelling never reads, to score each folder:

- ``kept``: the share of labelled pixels that keep a pseudo-label;
- ``precision``: the share of kept pixels whose pseudo-label is the human label (overall and per class);
- ``right kept``: the share of labelled pixels that keep a *correct* pseudo-label (what a student learns);
- the teacher's own accuracy (``raw/``, every pixel) for reference.

Frames are also scored by how far their neighbours are: CamVid's 0016E5 was labelled at 15 frames a second
for part of the street and once a second for the rest, and optical flow between frames a second apart is
harder. Writes ``OUT/pseudolabel_quality.json`` and ``OUT/pseudolabel_quality.md``; each command's wall
and CPU seconds beside its log. A killed run continues (finished folders are read back).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from _run import SHARED, cost, segvn
from PIL import Image

from segvn.data.camvid import camvid_known, camvid_lut
from segvn.data.io import read_label
from segvn.inference.pseudolabel import HIST_BINS, class_thresholds, sequence_neighbours
from segvn.metrics.segmentation import confusion_matrices

STREET = "0016E5"
NEAR = 5
"""Neighbours at most this many frames apart are "near" (0016E5's 15 fps part: 2 frames)."""


def label_path(camvid: Path, name: str) -> Path:
    for folder in ("train", "val", "test"):
        path = camvid / f"{folder}annot" / f"{name}.png"
        if path.is_file():
            return path
    raise SystemExit(f"{camvid}: no label for {name}")


def gaps(names: list[str]) -> dict[str, int]:
    """Per frame, the frame-number distance to its nearest neighbour in the pool."""
    out = {}
    for name, near in sequence_neighbours(names).items():
        number = int(name.rpartition("_")[2])
        out[name] = min((abs(int(n.rpartition("_")[2]) - number) for n in near), default=10**6)
    return out


def truth_of(camvid: Path, name: str) -> np.ndarray:
    """A 0016E5 frame's human label as segvn class indices (255: unlabelled)."""
    return read_label(label_path(camvid, name), "index", camvid_lut(), camvid_known())[0].astype(np.int64)


def confusion(truth: np.ndarray, pred: np.ndarray, counted: np.ndarray, num_classes: int) -> np.ndarray:
    """Truth x prediction counts over the ``counted`` labelled pixels (segvn's confusion matrix)."""
    target = torch.from_numpy(np.where(counted, truth, 255))[None]
    return confusion_matrices(torch.from_numpy(pred)[None], target, num_classes)[0].numpy()


def summary(cm: np.ndarray, labelled: int) -> dict:
    """Kept share, precision and right pixels kept of a kept pixels' confusion, overall and per class."""
    right = np.diag(cm)
    return {
        "kept": float(cm.sum() / max(labelled, 1)),
        "precision": float(right.sum() / max(cm.sum(), 1)),
        "right_kept": float(right.sum() / max(labelled, 1)),
        "class_precision": [float(r / c) if c else None for r, c in zip(right, cm.sum(0), strict=True)],
        "class_right_kept": [float(r / c) if c else None for r, c in zip(right, cm.sum(1), strict=True)],
    }


def score(folder: Path, camvid: Path, names: list[str], num_classes: int) -> dict:
    """Kept pseudo-labels (and the teacher's raw classes) against the human labels, for all frames and for
    those near to / far from their neighbours."""
    per_frame = {}
    for name in names:
        truth = truth_of(camvid, name)
        pseudo = np.asarray(Image.open(folder / "pseudolabels" / f"{name}.png")).astype(np.int64)
        raw = np.asarray(Image.open(folder / "raw" / f"{name}.png")).astype(np.int64)
        valid = truth != 255
        per_frame[name] = (
            confusion(truth, pseudo, valid & (pseudo != 255), num_classes),
            confusion(truth, raw, valid, num_classes),
            int(valid.sum()),
        )
    near = gaps(names)
    parts = {
        "all": names,
        "near": [n for n in names if near[n] <= NEAR],
        "far": [n for n in names if near[n] > NEAR],
    }
    out = {}
    for part, members in parts.items():
        if not members:
            continue
        kept_cm, raw_cm, labelled = (sum(x) for x in zip(*(per_frame[n] for n in members), strict=True))
        out[part] = {
            "frames": len(members),
            "teacher_accuracy": float(np.diag(raw_cm).sum() / max(raw_cm.sum(), 1)),
            **summary(kept_cm, labelled),
        }
    return out


def keep_sweep(
    folder: Path, camvid: Path, names: list[str], num_classes: int, keeps: list[float], cap: float
):
    """Re-threshold the teacher's ``raw/`` classes and ``confidence/`` at other ``keep`` shares (no new teacher
    pass): per share, the kept share, precision and correct pixels kept, overall and per class."""
    hist = np.zeros((num_classes, HIST_BINS), dtype=np.int64)
    frames = []
    for name in names:
        raw = np.asarray(Image.open(folder / "raw" / f"{name}.png")).astype(np.int64)
        conf = np.asarray(Image.open(folder / "confidence" / f"{name}.png")).astype(np.int64)
        hist += np.bincount(
            raw.ravel() * HIST_BINS + conf.ravel(), minlength=num_classes * HIST_BINS
        ).reshape(num_classes, HIST_BINS)
        frames.append((raw, conf, truth_of(camvid, name)))
    labelled = sum(int((truth != 255).sum()) for _, _, truth in frames)
    rows = []
    for keep in keeps:
        bins = np.ceil(class_thresholds(hist, keep, cap) * (HIST_BINS - 1) - 1e-9).astype(np.int64)
        cm = sum(
            confusion(truth, raw, (truth != 255) & (conf >= bins[raw]), num_classes)
            for raw, conf, truth in frames
        )
        rows.append({"keep": keep, **summary(cm, labelled)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="the teacher checkpoint")
    parser.add_argument("--variants", nargs="+", default=["plain", "flow"], choices=["plain", "flow"])
    parser.add_argument("--pseudo", nargs="*", default=[], help="segvn.pseudolabel settings of every variant")
    parser.add_argument(
        "--max-frames", type=int, help="fewer pool frames, spread over the street (smoke tests)"
    )
    parser.add_argument(
        "--keep-sweep",
        nargs="*",
        type=float,
        default=[],
        help="also score the first variant re-thresholded at these keep shares (no new teacher pass)",
    )
    parser.add_argument("--clock", choices=["wall", "cpu"], default="cpu")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/pseudolabel_quality"))
    args = parser.parse_args()
    camvid = SHARED / "datasets" / "camvid"
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for variant in args.variants:
        folder, log = args.out / variant, args.out / f"{variant}.log"
        extra = ["flow_agree=true"] if variant == "flow" else []
        if args.max_frames:
            extra.append(f"data.unlabelled.max_frames={args.max_frames}")
        if not (folder / "pseudolabel.json").is_file() or not cost(log):
            segvn(
                "pseudolabel", f"ckpt_path={args.ckpt.resolve()}", f"data.unlabelled.streets=[{STREET}]",
                "data.unlabelled.transductive=true", *args.pseudo, *extra, f"out={folder.resolve()}",
                f"hydra.run.dir={(args.out / (variant + '_run')).resolve()}", log=log, clock=args.clock,
            )  # fmt: skip
        record = json.loads((folder / "pseudolabel.json").read_text())
        names = sorted(record["frames"])
        results[variant] = {
            "cost": cost(log),
            "flow_dropped": record.get("flow_dropped"),
            "settings": record["settings"],
            "class_names": record["class_names"],
            **score(folder, camvid, names, len(record["class_names"])),
        }
    classes = next(iter(results.values()))["class_names"]
    sweep = []
    if args.keep_sweep:
        first = args.variants[0]
        cap = results[first]["settings"]["max_threshold"]
        names = sorted(json.loads((args.out / first / "pseudolabel.json").read_text())["frames"])
        sweep = keep_sweep(args.out / first, camvid, names, len(classes), args.keep_sweep, cap)
        results["keep_sweep"] = {"variant": first, "rows": sweep}
    (args.out / "pseudolabel_quality.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"Teacher `{args.ckpt}`, pool: every {STREET} frame; settings {' '.join(args.pseudo) or '(defaults)'}.",
        "",
        "| variant | frames | CPU min | teacher acc. | kept | precision | right kept | flow dropped |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    variants = {k: v for k, v in results.items() if k != "keep_sweep"}
    for variant, r in variants.items():
        for part in ("all", "near", "far"):
            if part not in r:
                continue
            p = r[part]
            lines.append(
                f"| {variant} ({part}) | {p['frames']} | {r['cost'].get('cpu_s', 0) / 60:.1f} | "
                f"{p['teacher_accuracy']:.4f} | {p['kept']:.4f} | {p['precision']:.4f} | {p['right_kept']:.4f} | "
                + (f"{r['flow_dropped']:.3f} |" if r["flow_dropped"] is not None else "|")
            )
    lines += ["", "Per-class precision of kept pixels (all frames):", ""]
    lines += ["| variant | " + " | ".join(classes) + " |", "| --- |" + " --- |" * len(classes)]
    for variant, r in variants.items():
        cells = [f"{v:.3f}" if v is not None else "-" for v in r["all"]["class_precision"]]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    if sweep:
        lines += [
            "",
            f"The {args.variants[0]} folder re-thresholded at other `keep` shares (all frames):",
            "",
        ]
        lines += [
            "| keep | kept | precision | right kept | " + " | ".join(f"{c} prec." for c in classes) + " |"
        ]
        lines += ["| --- | --- | --- | --- |" + " --- |" * len(classes)]
        for row in sweep:
            cells = [f"{v:.3f}" if v is not None else "-" for v in row["class_precision"]]
            lines.append(
                f"| {row['keep']} | {row['kept']:.4f} | {row['precision']:.4f} | {row['right_kept']:.4f} | "
                + " | ".join(cells)
                + " |"
            )
    (args.out / "pseudolabel_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
