"""From a trained model, more CPU minutes spent two ways: self-training on the new street, or more of the recipe.

    python benchmarks/selftrain_continued.py --run outputs/bench/st5/s42/work/s42_supervised --seed 42 \
        --minutes 10 --clock cpu --pseudo "scales=[1.0]" --train budget.validate_every=0.5 --out OUT

The user's case after a first training: the model exists (``--run``, a ``segvn.train`` run directory of
``--recipe`` on ``data=camvid_streets``), and the frames of the new street (0016E5) are on disk. Per seed:

- **continued**: the recipe for ``--minutes`` more, starting from the model's weights (``init_from=``);
- per protocol, **self-training**: ``segvn.pseudolabel`` with the model as the teacher and its student
  (``<encoder>_selftrain``, from the model's weights, the same schedule) for what is left of the same
  ``--minutes`` (the pseudo-labelling's own minutes counted);
  - ``transductive``: the pool is every 0016E5 frame, scored on 0016E5;
  - ``inductive``: the pool is the first half of 0016E5, scored on its second half;
  - with ``--video-pool`` also ``transductive+video`` and ``inductive+video``: the same pools plus the
    dash-cam video's frames (``../shared/videos`` at ``--video-fps``, another country and road type).

Both arms start from the same weights and train with the same recipe and schedule; what differs is the
pseudo-labelled frames of the new street in the student's batches and the minutes they cost. The model
itself, the continued run and each student are scored on both frame sets. A killed run continues (finished
steps are read back). Writes ``OUT/continued.json``, ``OUT/continued.md`` and ``OUT/frames_s<seed>.png`` (the
same 0016E5 frames labelled by each model).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import selftrain as bench
from _run import SHARED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run", type=Path, required=True, help="the trained model's segvn.train run directory"
    )
    parser.add_argument("--recipe", default="mobilenetv2_fast", choices=["mobilenetv2_fast", "resnet18_fast"])
    parser.add_argument("--size", type=int, nargs=2, default=[352, 480])
    parser.add_argument("--minutes", type=float, default=10.0, help="the extra budget of each arm")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="cpu")
    parser.add_argument("--protocols", nargs="+", default=["transductive", "inductive"])
    parser.add_argument(
        "--video-pool",
        action="store_true",
        help="also a student per protocol with the dash-cam video in its pool",
    )
    parser.add_argument("--video-fps", type=float, default=5.0, help="frames a second taken from the video")
    parser.add_argument("--pool-max-frames", type=int, default=None, help="fewer pool frames (smoke tests)")
    parser.add_argument("--pseudo", nargs="*", default=[], help="extra segvn.pseudolabel settings")
    parser.add_argument("--train", nargs="*", default=[], help="extra segvn.train settings of every training")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.video_pool:
        args.protocols = [*args.protocols, *(f"{p}+video" for p in args.protocols)]
    bench.CLOCK = args.clock
    bench.TRAIN_EXTRA.extend(args.train)

    summary_file = args.run / "metrics.json"
    if not summary_file.is_file():
        raise SystemExit(f"--run {args.run}: no metrics.json (not a finished segvn.train run)")
    summary = json.loads(summary_file.read_text())
    model = str(Path(summary["best_model_path"] or summary["last_model_path"]).resolve())
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    camvid = SHARED / "datasets" / "camvid"
    ind_root, ind_pool = bench.inductive_root(camvid, work)
    scored_on = {"transductive": None, "inductive": ind_root}
    selftrain = args.recipe.split("_")[0] + "_selftrain"
    s = args.seed

    continued = bench.train(
        f"s{s}_continued", args.recipe, args.size, args.minutes, s, work, [f"init_from={model}"]
    )
    rows = []
    for protocol in args.protocols:
        base = protocol.removesuffix("+video")
        root, tag = scored_on[base], f"s{s}_{protocol.replace('+', '_')}"
        extra = [f"data.pseudo.transductive={base == 'transductive'}"]
        extra += [f"data.root={root}"] if root is not None else []
        pool = bench.pool_settings(protocol, ind_root, ind_pool, args)
        (done,) = bench.self_train(
            model, 1, args.minutes, 0.0, [*pool, *args.pseudo], extra, selftrain, args.size, s, work, tag
        )
        # the model and the continued run once per frame set (a +video protocol is scored on its base's)
        scores = {
            name: bench.evaluate(ckpt, root, work / f"s{s}_{base}_eval_{name}", None)
            for name, ckpt in (("model", model), ("continued", continued["checkpoint"]))
        }
        scores["student"] = bench.evaluate(
            done["student"]["checkpoint"], root, work / f"{tag}_eval_student", None
        )
        rows.append(
            {
                "seed": s,
                "protocol": protocol,
                "continued": {**continued, **scores["continued"]},
                "pseudolabel_minutes": done["pseudolabel_minutes"],
                "student": {**done["student"], **scores["student"]},
                "model": scores["model"],
                "relative_gain": scores["student"]["miou"] / scores["continued"]["miou"] - 1,
            }
        )
    frames = [camvid / folder / name for folder, name in bench.street_frames(camvid)]
    bench.side_by_side(
        {
            "model": model,
            "continued": continued["checkpoint"],
            **{f"student {r['protocol']}": r["student"]["checkpoint"] for r in rows},
        },
        frames[len(frames) // 2 :: max(1, len(frames) // 8)][:3],
        args.out / f"frames_s{s}.png",
    )
    (args.out / "continued.json").write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "model": model, "rows": rows}, indent=1
        )
    )
    lines = [
        f"From {model} ({args.recipe}, {args.size[0]}x{args.size[1]}): {args.minutes:g} more {args.clock} "
        "minutes per arm; mIoU on 0016E5 (inductive: its second half)",
        "",
        "| seed | protocol | model | continued (steps) | pseudo-label min | student (steps) | student vs continued |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        c, st = r["continued"], r["student"]
        lines.append(
            f"| {r['seed']} | {r['protocol']} | {r['model']['miou']:.4f} | {c['miou']:.4f} ({c['steps']}) | "
            f"{r['pseudolabel_minutes']:.1f} | {st['miou']:.4f} ({st['steps']}) | {r['relative_gain']:+.1%} |"
        )
    (args.out / "continued.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
