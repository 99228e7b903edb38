"""Active learning measured: does labelling the frames ``segvn.labels next`` proposes save labels?

    python benchmarks/active_learning.py --seeds 42 43 --rounds 3 --minutes 6 --size 240 320

On ``data=camvid_streets`` (training streets 0001TP + 0006R0, 163 frames; 0016E5 is the street the
models are scored on), CamVid's own labels play the annotator. Per seed:

- round 0: ``--start`` frames of the training streets drawn at random (the same for both policies), and a
  model trained on them (``+experiment=<recipe>`` for ``--minutes``, the last checkpoint kept);
- each of ``--rounds`` rounds adds ``--step`` frames per policy and retrains from scratch with the same
  budget: ``random`` draws them at random from the frames not yet labelled, ``next`` takes the list of
  ``python -m segvn.labels next`` run with the policy's previous model on a street folder of the training
  streets' frames whose ``labels/`` holds the frames labelled so far;
- every model is scored by ``segvn.evaluate`` on all of 0016E5 (``split=val``, mIoU of the 8 classes).

"Labelling" a frame links its CamVid frame and label file into the round's data root (a CamVid-layout
folder of links under ``--out``): nothing is copied. Writes into ``--out``: ``active_learning.json`` (every
run), ``active_learning.csv`` (seed, policy, labelled frames, mIoU, steps, minutes),
``active_learning.md`` (the table, and how many frames the ``next`` policy needs to reach the ``random``
policy's final mIoU: the goal is at least 30% fewer) and ``active_learning.png`` (mIoU against labelled
frames). A run that stops part-way picks up where it stopped (finished runs are kept). Run it alone on
the machine: the rounds are trained for the same wall-clock minutes. ``--clock cpu`` budgets every training
in CPU minutes instead (``budget.clock=cpu``), which holds on a machine other jobs share; then no
validation runs during training (the last checkpoint is scored anyway), since a CPU-time budget would
validate after every epoch of a few frames.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from _run import REPO, SHARED, cost, segvn

TRAIN_STREETS = ("0001TP", "0006R0")
EVAL_STREET = "0016E5"
POLICIES = ("random", "next")


def camvid_frames(camvid: Path) -> dict[str, tuple[Path, Path]]:
    """Every CamVid frame with a label: stem -> (frame, label file)."""
    out = {}
    for folder in ("train", "val", "test"):
        for frame in sorted((camvid / folder).glob("*.png")):
            label = camvid / f"{folder}annot" / frame.name
            if label.is_file():
                out[frame.stem] = (frame, label)
    return out


def link(target: Path, at: Path) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    if not at.is_symlink():
        at.symlink_to(target)


def data_root(frames: dict[str, tuple[Path, Path]], labelled: list[str], root: Path) -> Path:
    """A CamVid-layout folder of links: the labelled training frames, and the evaluation street (val/)."""
    for stem in labelled:
        image, label = frames[stem]
        link(image, root / "train" / image.name)
        link(label, root / "trainannot" / image.name)
    for stem, (image, label) in frames.items():
        if stem.startswith(EVAL_STREET):
            link(image, root / "val" / image.name)
            link(label, root / "valannot" / image.name)
    return root


def pool_street(frames: dict[str, tuple[Path, Path]], pool: list[str], labelled: list[str], at: Path) -> Path:
    """A street folder for ``segvn.labels next``: ``frames/`` every training-street frame, ``labels/`` the
    labelled ones (links to CamVid's label files: only their names say which frames are labelled)."""
    for stem in pool:
        link(frames[stem][0], at / "frames" / frames[stem][0].name)
    for stem in labelled:
        link(frames[stem][1], at / "labels" / frames[stem][1].name)
    return at


def train(name: str, root: Path, args: argparse.Namespace, seed: int, work: Path) -> dict:
    """Train the recipe on the data root for the budget; returns the last checkpoint, steps and minutes."""
    run = work / name
    if not (run / "metrics.json").is_file():
        segvn(
            "train", f"+experiment={args.recipe}", "data=camvid_streets", f"data.root={root}",
            f"data.image_size=[{args.size[0]},{args.size[1]}]", f"budget.minutes={args.minutes:g}",
            f"budget.clock={args.clock}", "budget.validate_every=1.0", "test=false", f"seed={seed}",
            "trainer.limit_val_batches=" + ("0" if args.clock == "cpu" else "2"),
            "logger=csv", *args.train, f"hydra.run.dir={run}", log=work / f"{name}.log",
        )  # fmt: skip
    summary = json.loads((run / "metrics.json").read_text())
    spent = cost(work / f"{name}.log")
    return {
        "checkpoint": summary["last_model_path"],
        "steps": summary["global_step"],
        "minutes": summary["seconds"] / 60,
        "cpu_minutes": spent["cpu_s"] / 60 if "cpu_s" in spent else None,
    }


def evaluate(ckpt: str, args: argparse.Namespace, out: Path) -> float:
    """mIoU of the checkpoint on the evaluation street (all its frames, or ``--max-images``)."""
    if not (out / "metrics.json").is_file():
        extra = [f"max_images={args.max_images}"] if args.max_images else []
        segvn(
            "evaluate", f"ckpt_path={ckpt}", "split=val", f"data.root={SHARED / 'datasets' / 'camvid'}",
            *extra, *args.evaluate, f"hydra.run.dir={out}", log=out.with_suffix(".log"),
        )  # fmt: skip
    return float(json.loads((out / "metrics.json").read_text())["mean_iou"])


def propose(ckpt: str, street: Path, count: int, args: argparse.Namespace, out: Path) -> list[str]:
    """The ``count`` frames ``segvn.labels next`` proposes with the checkpoint (in its rank order)."""
    table = out / "next_frames.csv"
    if not table.is_file():
        segvn(
            "labels", "next", f"n={count}", f"ckpt_path={ckpt}", f"street={street}", f"out={out}",
            *args.next, f"hydra.run.dir={out / 'run'}", log=out / "next.log",
        )  # fmt: skip
    return [row["frame"] for row in csv.DictReader(table.read_text().splitlines())]


def frames_to_match(curve: list[tuple[int, float]], target: float) -> float | None:
    """Labelled frames at which a rising curve of ``(frames, mIoU)`` first reaches ``target`` (linear
    between points); None if it never does."""
    for (n0, m0), (n1, m1) in zip([(0, -1.0), *curve[:-1]], curve, strict=True):
        if m1 >= target:
            return float(n1) if m0 < 0 or m1 == m0 else n0 + (target - m0) / (m1 - m0) * (n1 - n0)
    return None


def report(rows: list[dict], args: argparse.Namespace) -> list[str]:
    """The markdown table and the savings line; also writes the CSV and the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = args.out
    with (out / "active_learning.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["seed", "policy", "round", "labelled", "miou", "steps", "minutes", "cpu_minutes"])
        for r in rows:
            writer.writerow(
                [r["seed"], r["policy"], r["round"], r["labelled"], f"{r['miou']:.4f}", r["steps"], f"{r['minutes']:.2f}",
                 "" if r.get("cpu_minutes") is None else f"{r['cpu_minutes']:.2f}"]
            )  # fmt: skip
    counts = sorted({r["labelled"] for r in rows})
    mean = {
        p: [(n, float(np.mean([r["miou"] for r in rows if r["policy"] == p and r["labelled"] == n]))) for n in counts]
        for p in POLICIES
    }  # fmt: skip
    lines = [
        f"Active learning on CamVid ({args.recipe}, {args.size[0]}x{args.size[1]}, {args.minutes:g} {args.clock} min per "
        f"training, seeds {' '.join(map(str, args.seeds))}): mIoU on {EVAL_STREET} against labelled frames",
        "",
        "| labelled frames | random (mean) | next (mean) | " + " | ".join(f"random / next s{s}" for s in args.seeds) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in args.seeds) + " |",
    ]  # fmt: skip
    for i, n in enumerate(counts):
        per_seed = []
        for s in args.seeds:
            got = {r["policy"]: r["miou"] for r in rows if r["seed"] == s and r["labelled"] == n}
            per_seed.append(" / ".join(f"{got[p]:.4f}" if p in got else "-" for p in POLICIES))
        lines.append(
            f"| {n} | {mean['random'][i][1]:.4f} | {mean['next'][i][1]:.4f} | " + " | ".join(per_seed) + " |"
        )
    final_n, final = mean["random"][-1]
    needed = frames_to_match(mean["next"], final)
    if needed is None:
        verdict = f"the next policy did not reach random's final mIoU {final:.4f} ({final_n} frames)"
    else:
        saved = 1 - needed / final_n
        goal = "goal met" if saved >= 0.3 else "goal (>= 30% fewer) not met"
        verdict = (
            f"the next policy reaches random's final mIoU {final:.4f} ({final_n} frames) with {needed:.1f} frames "
            "(linear between the points of its mean curve): "
            f"{saved:.0%} fewer labelled frames ({goal})"
        )
    lines += ["", verdict]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for p, colour in zip(POLICIES, ("tab:grey", "tab:blue"), strict=True):
        ax.plot(
            *zip(*mean[p], strict=True), "o-", color=colour, label=f"{p} (mean of {len(args.seeds)} seeds)"
        )
        for s in args.seeds:
            pts = sorted((r["labelled"], r["miou"]) for r in rows if r["policy"] == p and r["seed"] == s)
            ax.plot(*zip(*pts, strict=True), ".", color=colour, alpha=0.5)
    ax.set_xlabel("labelled frames")
    ax.set_ylabel(f"mIoU on {EVAL_STREET}")
    ax.set_title("random frames vs segvn.labels next")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "active_learning.png")
    plt.close(fig)
    (out / "active_learning.md").write_text("\n".join(lines) + "\n")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="mobilenetv2_fast", choices=["mobilenetv2_fast", "resnet18_fast"])
    parser.add_argument("--size", type=int, nargs=2, default=[240, 320], help="training image size H W")
    parser.add_argument("--minutes", type=float, default=6.0, help="the training budget of every round")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="budgets in wall-clock minutes, or in CPU minutes of each training (budget.clock=cpu: fair on a busy machine)",
    )
    parser.add_argument("--start", type=int, default=20, help="labelled frames before the first round")
    parser.add_argument("--step", type=int, default=20, help="frames labelled per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-images", type=int, default=None, help="fewer evaluation frames (smoke tests)")
    parser.add_argument("--train", nargs="*", default=[], help="extra segvn.train settings, e.g. trainer=gpu")
    parser.add_argument("--evaluate", nargs="*", default=[], help="extra segvn.evaluate settings")
    parser.add_argument(
        "--next", nargs="*", default=[], help="extra segvn.labels next settings, e.g. min_gap=2"
    )
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "active_learning")
    args = parser.parse_args()
    args.out = args.out.resolve()
    frames = camvid_frames(SHARED / "datasets" / "camvid")
    pool = sorted(s for s in frames if s.startswith(TRAIN_STREETS))
    if args.start + args.rounds * args.step > len(pool):
        raise SystemExit(
            f"--start + --rounds x --step exceeds the {len(pool)} frames of the training streets"
        )
    work = args.out / "work"
    rows: list[dict] = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        start = sorted(rng.choice(pool, args.start, replace=False).tolist())
        tag = f"s{seed}_r0"
        model = train(tag, data_root(frames, start, work / tag / "camvid"), args, seed, work)
        first = {"seed": seed, "round": 0, "labelled": len(start), "frames": start, **model}
        first["miou"] = evaluate(model["checkpoint"], args, work / f"{tag}_eval")
        rows += [{**first, "policy": p} for p in POLICIES]
        for policy in POLICIES:
            labelled, ckpt = list(start), model["checkpoint"]
            for k in range(1, args.rounds + 1):
                tag = f"s{seed}_{policy}_r{k}"
                left = [s for s in pool if s not in set(labelled)]
                if policy == "random":
                    new = rng.choice(left, args.step, replace=False).tolist()
                else:
                    street = pool_street(frames, pool, labelled, work / tag / "street")
                    new = propose(ckpt, street, args.step, args, work / tag / "next")
                    if len(new) < args.step:  # the spread rule left too few: fill up at random
                        rest = [s for s in left if s not in set(new)]
                        new += rng.choice(rest, args.step - len(new), replace=False).tolist()
                labelled += new
                model = train(tag, data_root(frames, labelled, work / tag / "camvid"), args, seed, work)
                ckpt = model["checkpoint"]
                miou = evaluate(ckpt, args, work / f"{tag}_eval")
                rows.append(
                    {"seed": seed, "policy": policy, "round": k, "labelled": len(labelled), "frames": new, **model, "miou": miou}
                )  # fmt: skip
                print(f"seed {seed} {policy} round {k}: {len(labelled)} frames, mIoU {miou:.4f}", flush=True)
    (args.out / "active_learning.json").write_text(
        json.dumps({"args": {**vars(args), "out": str(args.out)}, "rows": rows}, indent=1)
    )
    print("\n".join(report(rows, args)))


if __name__ == "__main__":
    main()
