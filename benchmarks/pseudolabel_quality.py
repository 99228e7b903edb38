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
from _run import SHARED, cost, segvn
from PIL import Image

from segvn.data.camvid import camvid_known, camvid_lut
from segvn.data.io import read_label
from segvn.inference.pseudolabel import HIST_BINS, class_thresholds, sequence_neighbours

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


def score(folder: Path, camvid: Path, names: list[str], num_classes: int) -> dict:
    """Confusion of kept pseudo-labels (and of the teacher's raw classes) against the human labels."""
    lut, known = camvid_lut(), camvid_known()
    near = gaps(names)
    parts = {"all": names, "near": [n for n in names if near[n] <= NEAR]}
    parts["far"] = [n for n in names if near[n] > NEAR]
    out = {}
    for part, members in parts.items():
        kept_cm = np.zeros((num_classes, num_classes), dtype=np.int64)
        raw_cm = np.zeros_like(kept_cm)
        labelled = 0
        for name in members:
            truth = read_label(label_path(camvid, name), "index", lut, known)[0].astype(np.int64)
            pseudo = np.asarray(Image.open(folder / "pseudolabels" / f"{name}.png")).astype(np.int64)
            raw = np.asarray(Image.open(folder / "raw" / f"{name}.png")).astype(np.int64)
            valid = truth != 255
            labelled += int(valid.sum())
            kept = valid & (pseudo != 255)
            kept_cm += np.bincount(
                truth[kept] * num_classes + pseudo[kept], minlength=num_classes**2
            ).reshape(num_classes, num_classes)
            raw_cm += np.bincount(truth[valid] * num_classes + raw[valid], minlength=num_classes**2).reshape(
                num_classes, num_classes
            )
        if not members:
            continue
        right = np.diag(kept_cm)
        out[part] = {
            "frames": len(members),
            "kept": float(kept_cm.sum() / max(labelled, 1)),
            "precision": float(right.sum() / max(kept_cm.sum(), 1)),
            "right_kept": float(right.sum() / max(labelled, 1)),
            "teacher_accuracy": float(np.diag(raw_cm).sum() / max(raw_cm.sum(), 1)),
            "class_precision": [
                float(r / c) if c else None for r, c in zip(right, kept_cm.sum(0), strict=True)
            ],
            "class_right_kept": [
                float(r / c) if c else None for r, c in zip(right, kept_cm.sum(1), strict=True)
            ],
        }
    return out


def keep_sweep(
    folder: Path, camvid: Path, names: list[str], num_classes: int, keeps: list[float], cap: float
):
    """Re-threshold the teacher's ``raw/`` classes and ``confidence/`` at other ``keep`` shares (no new teacher
    pass): per share, the kept share, precision and correct pixels kept, overall and per class."""
    lut, known = camvid_lut(), camvid_known()
    hist = np.zeros((num_classes, HIST_BINS), dtype=np.int64)
    frames = []
    for name in names:
        raw = np.asarray(Image.open(folder / "raw" / f"{name}.png")).astype(np.int64)
        conf = np.asarray(Image.open(folder / "confidence" / f"{name}.png")).astype(np.int64)
        truth = read_label(label_path(camvid, name), "index", lut, known)[0].astype(np.int64)
        hist += np.bincount(
            raw.ravel() * HIST_BINS + conf.ravel(), minlength=num_classes * HIST_BINS
        ).reshape(num_classes, HIST_BINS)
        frames.append((raw, conf, truth))
    rows = []
    for keep in keeps:
        bins = np.ceil(class_thresholds(hist, keep, cap) * (HIST_BINS - 1) - 1e-9).astype(np.int64)
        cm = np.zeros((num_classes, num_classes), dtype=np.int64)
        labelled = 0
        for raw, conf, truth in frames:
            valid = truth != 255
            labelled += int(valid.sum())
            kept = valid & (conf >= bins[raw])
            cm += np.bincount(truth[kept] * num_classes + raw[kept], minlength=num_classes**2).reshape(
                num_classes, num_classes
            )
        right = np.diag(cm)
        rows.append(
            {
                "keep": keep,
                "kept": float(cm.sum() / labelled),
                "precision": float(right.sum() / max(cm.sum(), 1)),
                "right_kept": float(right.sum() / labelled),
                "class_precision": [
                    float(r / c) if c else None for r, c in zip(right, cm.sum(0), strict=True)
                ],
            }
        )
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
