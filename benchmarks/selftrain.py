"""Self-training against the supervised recipe at equal CPU time, on a street training never saw.

    python benchmarks/selftrain.py --recipe mobilenetv2_fast --size 352 480 --minutes 45 --seeds 42 43

On ``data=camvid_streets`` (train 0001TP + 0006R0; 0016E5 is the new street), per seed:

- **supervised**: the recipe for ``--minutes``, scored on all of 0016E5 and on its second half;
- **teacher**: the same recipe for ``--teacher-share`` of the minutes;
- per protocol, ``segvn.pseudolabel`` with the teacher (its wall time counted) and the student
  (``<encoder>_selftrain``) for the minutes left, so both arms spend the same wall time in all
  (the supervised run's set-up, budget and test against teacher + pseudo-labelling + student):
  - ``transductive``: the pool is every 0016E5 frame (its labels never read), scored on 0016E5;
  - ``inductive``: the pool is the first half of 0016E5 by frame number, scored on the second half
    only (a data root of links to the shared CamVid without those frames).

``--online``: per protocol also the online variant (``<encoder>_online``: the recipe plus weak-to-strong
consistency on the pool inside the run, no teacher), for the supervised arm's minutes.

``--rounds N``: the student becomes the next teacher N-1 times (pseudo-labelling and a student per round,
in ``WORK/<seed>_<protocol>_r<k>_{pseudo,student}``; the student minutes are shared out between the rounds).
A killed benchmark continues: finished trainings and evaluations are read back, and ``segvn.pseudolabel``
continues in its ``out=``. ``--video-pool``: per protocol, a second student whose pool also holds the
dash-cam video's frames (``data.unlabelled.videos``, another country and road type; ``--video-fps``).

Writes ``OUT/selftrain.json`` (every run: minutes, steps, mIoU, per-class IoU, BF) and ``OUT/selftrain.md``
(the table: student against supervised, relative gain, the worst class change against the teacher),
and ``OUT/frames.png``: the same 0016E5 frames labelled by the supervised model and the students.
Run it alone on the machine: the arms are compared by wall-clock minutes. ``--clock cpu`` compares them by
CPU minutes instead (``budget.clock=cpu`` for every training, each command's CPU time for the rest), which
holds on a machine other jobs share; every run's wall and CPU minutes are in the JSON either way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _run import REPO, SHARED, cost, segvn

STREET = "0016E5"


CLOCK = "wall"
"""``--clock``: what a minute is, for the budgets and for what each command cost (wall or CPU time)."""


def street_frames(camvid: Path) -> list[tuple[str, str]]:
    """``(folder, file name)`` of every frame of the new street, in frame order."""
    found = [(f, p.name) for f in ("train", "val", "test") for p in (camvid / f).glob(f"{STREET}_*.png")]
    return sorted(found, key=lambda fp: fp[1])


def inductive_root(camvid: Path, work: Path) -> tuple[Path, Path]:
    """A CamVid root without the first half of the new street (links), and a folder of that half (the pool)."""
    frames = street_frames(camvid)
    held = {name for _, name in frames[: len(frames) // 2]}
    root, pool = work / "camvid_inductive", work / "pool_inductive"
    for folder in ("train", "val", "test"):
        for suffix in ("", "annot"):
            src = camvid / f"{folder}{suffix}"
            if not src.is_dir():
                continue
            (root / f"{folder}{suffix}").mkdir(parents=True, exist_ok=True)
            for p in src.glob("*.png"):
                link = (pool if p.name in held and not suffix else root / f"{folder}{suffix}") / p.name
                if p.name in held and suffix:
                    continue
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    link.symlink_to(p)
    return root, pool


def clock_key(spent: dict, log: Path) -> str:
    """The key of ``spent`` (a command's recorded cost) on the benchmark's clock; stops the benchmark when a
    run read back from an earlier benchmark lacks it (a wall-clock run's record under ``--clock cpu``):
    arms on different clocks are not compared."""
    key = "cpu_s" if CLOCK == "cpu" else "wall_s"
    if key not in spent:
        raise SystemExit(f"{log}: no {key} recorded for this finished run; rerun it in a fresh --out")
    return key


TRAIN_EXTRA: list[str] = []
"""``--train``: settings added to every training (smoke tests: fewer validation batches)."""


def train(name: str, recipe: str, size, minutes: float, seed: int, work: Path, extra=()) -> dict:
    run, log = work / name, work / f"{name}.log"
    if not (run / "metrics.json").is_file():
        segvn(
            "train", f"+experiment={recipe}", "data=camvid_streets", f"data.image_size=[{size[0]},{size[1]}]",
            f"budget.minutes={minutes:.3f}", f"budget.clock={CLOCK}", f"seed={seed}", "logger=csv", *TRAIN_EXTRA,
            *extra, f"hydra.run.dir={run}", log=log,
        )  # fmt: skip
    summary = json.loads((run / "metrics.json").read_text())
    spent = cost(log)
    if CLOCK == "cpu":  # a wall-clock budget's minutes come from the run's own summary
        clock_key(spent, log)
    cpu_minutes = spent["cpu_s"] / 60 if "cpu_s" in spent else None
    return {
        "run": str(run),
        "checkpoint": summary["best_model_path"] or summary["last_model_path"],
        "minutes": cpu_minutes if CLOCK == "cpu" else summary["seconds"] / 60,
        "wall_minutes": summary["seconds"] / 60,
        "cpu_minutes": cpu_minutes,
        "steps": summary["global_step"],
        "epochs": summary["epochs"],
    }


def evaluate(ckpt: str, root: Path | None, out: Path, max_images: int | None) -> dict:
    if not (out / "metrics.json").is_file():
        extra = [f"data.root={root}"] if root is not None else []
        if max_images:
            extra.append(f"max_images={max_images}")
        segvn(
            "evaluate",
            f"ckpt_path={ckpt}",
            "split=val",
            *extra,
            f"hydra.run.dir={out}",
            log=out.with_suffix(".log"),
        )
    ev = json.loads((out / "metrics.json").read_text())
    return {
        "miou": ev["mean_iou"],
        "global_acc": ev["global_accuracy"],
        "mean_bf": ev["mean_bf_score"],
        "images": ev["images"],
        "class_iou": {n: row["iou"] for n, row in ev["classes"].items()},
    }


def side_by_side(checkpoints: dict[str, str], frames: list[Path], out: Path) -> None:
    """The same frames labelled by each checkpoint, one column per model (overlays)."""
    import cv2

    import segvn
    from segvn.data.io import read_image
    from segvn.viz.image import save_image, tile

    columns = {
        name: segvn.load_model(path, device="cpu", runtime="torch") for name, path in checkpoints.items()
    }
    cells = []
    for row, frame in enumerate(frames):
        image = read_image(frame)
        for name, model in columns.items():
            cell = segvn.overlay(image, model.predict(image), legend=row == 0)
            if row == 0:  # the column's model, on the first frame
                cv2.putText(
                    cell, name, (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA
                )
            cells.append(cell)
    save_image(tile(cells, ncols=len(columns)), out)


def pool_settings(protocol: str, ind_root: Path, ind_pool: Path, args) -> list[str]:
    """The ``segvn.pseudolabel`` settings of a protocol's pool (the data layer's ``data.unlabelled``)."""
    if protocol.startswith("transductive"):  # every frame of the new street, on purpose
        pool = [f"data.unlabelled.streets=[{STREET}]", "data.unlabelled.transductive=true"]
    else:  # the first half of the new street; validation (the second half) comes from the inductive root
        pool = [f"data.root={ind_root}", f"data.unlabelled.folders=[{ind_pool}]"]
    if protocol.endswith("+video"):
        pool += [f"data.unlabelled.videos=[{SHARED / 'videos'}]", f"data.unlabelled.fps={args.video_fps}"]
    if args.pool_max_frames:
        pool.append(f"data.unlabelled.max_frames={args.pool_max_frames}")
    return pool


def self_train(
    teacher: str,
    rounds: int,
    minutes: float,
    overhead: float,
    pool: list[str],
    student_extra: list[str],
    recipe: str,
    size,
    seed: int,
    work: Path,
    tag: str,
    init: str = "teacher",
) -> list[dict]:
    """``rounds`` rounds of pseudo-labelling with the teacher and training a student, each student the next
    round's teacher, in ``work/<tag>_r<k>_*`` (finished steps are read back: a killed run continues).

    ``minutes`` is what pseudo-labelling and the students may spend in all; each student gets an equal share
    of what is left after its round's pseudo-labelling (later rounds' pseudo-labelling is taken to cost what
    this one did), less ``overhead`` (a training's set-up and test). Returns one dict per round.
    """
    done: list[dict] = []
    spent = 0.0
    for k in range(1, rounds + 1):
        name = f"{tag}_r{k}" if rounds > 1 else tag
        pseudo_dir = work / f"{name}_pseudo"
        pl_log = work / f"{name}_pseudolabel.log"
        stored = cost(pl_log)
        if (pseudo_dir / "pseudolabel.json").is_file() and stored:  # finished before: what it cost then
            pl_seconds = stored[clock_key(stored, pl_log)]
        else:  # segvn.pseudolabel continues a killed run in its out=
            pl_seconds = segvn(
                "pseudolabel", f"ckpt_path={teacher}", *pool, f"out={pseudo_dir}",
                f"hydra.run.dir={work / (name + '_pseudolabel_run')}", log=pl_log, clock=CLOCK,
            )  # fmt: skip
        spent += pl_seconds / 60
        left = minutes - spent - (rounds - k) * pl_seconds / 60
        student_minutes = left / (rounds - k + 1) - overhead
        if student_minutes <= 0:
            raise SystemExit(
                f"no minutes left for the round {k} student ({student_minutes:.2f}); raise --minutes"
            )
        student = train(
            f"{name}_student",
            recipe,
            size,
            student_minutes,
            seed,
            work,
            [
                f"pseudo={pseudo_dir}",
                *student_extra,
                *([f"init_from={teacher}"] if init == "teacher" else []),
            ],
        )
        spent += student["minutes"]
        record = json.loads((pseudo_dir / "pseudolabel.json").read_text())
        done.append(
            {
                "round": k,
                "teacher": teacher,
                "pseudolabel_minutes": pl_seconds / 60,
                "kept_share": record["kept_share"],
                "student": student,
            }
        )
        teacher = student["checkpoint"]
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="mobilenetv2_fast", choices=["mobilenetv2_fast", "resnet18_fast"])
    parser.add_argument("--size", type=int, nargs=2, default=[352, 480])
    parser.add_argument("--minutes", type=float, default=45.0, help="the total budget of each arm")
    parser.add_argument("--teacher-share", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="budgets in wall-clock minutes, or in CPU minutes of each command (budget.clock=cpu: fair on a busy machine)",
    )
    parser.add_argument(
        "--student-init",
        choices=["teacher", "imagenet"],
        default="teacher",
        help="the student starts from its teacher's weights (init_from=) or from the recipe's ImageNet encoder",
    )
    parser.add_argument("--protocols", nargs="+", default=["transductive", "inductive"])
    parser.add_argument(
        "--rounds", type=int, default=1, help="self-training rounds (the student teaches the next)"
    )
    parser.add_argument(
        "--video-pool",
        action="store_true",
        help="also a student per protocol with the dash-cam video in its pool",
    )
    parser.add_argument(
        "--online",
        action="store_true",
        help="also per protocol the online variant (<encoder>_online: weak-to-strong consistency on the pool, "
        "no teacher) for the supervised arm's minutes",
    )
    parser.add_argument("--video-fps", type=float, default=5.0, help="frames a second taken from the video")
    parser.add_argument("--pool-max-frames", type=int, default=None, help="fewer pool frames (smoke tests)")
    parser.add_argument(
        "--max-images",
        type=int,
        default=None,
        help="at most this many pictures saved per evaluation (segvn.evaluate max_images)",
    )
    parser.add_argument(
        "--pseudo", nargs="*", default=[], help="extra segvn.pseudolabel settings, e.g. keep=0.3"
    )
    parser.add_argument("--train", nargs="*", default=[], help="extra segvn.train settings of every training")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "selftrain" / "latest")
    args = parser.parse_args()
    TRAIN_EXTRA.extend(args.train)
    global CLOCK
    CLOCK = args.clock
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.video_pool:
        args.protocols = [*args.protocols, *(f"{p}+video" for p in args.protocols)]
    camvid = SHARED / "datasets" / "camvid"
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    ind_root, ind_pool = inductive_root(camvid, work)
    scored_on = {"transductive": None, "inductive": ind_root}
    selftrain = args.recipe.split("_")[0] + "_selftrain"
    online_recipe = args.recipe.split("_")[0] + "_online"
    rows, pictures = [], {}
    for seed in args.seeds:
        sup = train(f"s{seed}_supervised", args.recipe, args.size, args.minutes, seed, work)
        teacher = train(
            f"s{seed}_teacher", args.recipe, args.size, args.minutes * args.teacher_share, seed, work
        )
        for protocol in args.protocols:
            root = scored_on[protocol.removesuffix("+video")]
            tag = f"s{seed}_{protocol.replace('+', '_')}"
            sup_ev = evaluate(sup["checkpoint"], root, work / f"{tag}_eval_supervised", args.max_images)
            teacher_ev = evaluate(teacher["checkpoint"], root, work / f"{tag}_eval_teacher", args.max_images)
            pool = pool_settings(protocol, ind_root, ind_pool, args)
            online = None
            if args.online:  # no teacher: the whole budget, learning from the pool inside the run
                # the pool settings carry the inductive data root
                online = train(f"{tag}_online", online_recipe, args.size, args.minutes, seed, work, pool)
                online = {
                    **online,
                    **evaluate(online["checkpoint"], root, work / f"{tag}_eval_online", args.max_images),
                }
                pictures[f"online {protocol}"] = online["checkpoint"]
            # equal wall time: the supervised run's whole time (set-up, budget, test) against teacher +
            # pseudo-labelling + students; each student's set-up and test are taken to cost what the teacher's did
            overhead = max(teacher["minutes"] - args.minutes * args.teacher_share, 0.0)
            budget = sup["minutes"] - teacher["minutes"]
            transductive = protocol.startswith("transductive")
            student_extra = [f"data.pseudo.transductive={transductive}"]
            if root is not None:
                student_extra.append(f"data.root={root}")
            done = self_train(
                teacher["checkpoint"], args.rounds, budget, overhead, [*pool, *args.pseudo], student_extra, selftrain, args.size,
                seed, work, tag, args.student_init,
            )  # fmt: skip
            student = done[-1]["student"]
            pl_minutes = sum(r["pseudolabel_minutes"] for r in done)
            student_ev = evaluate(student["checkpoint"], root, work / f"{tag}_eval_student", args.max_images)
            worst = min(
                (student_ev["class_iou"][c] or 0) - (teacher_ev["class_iou"][c] or 0)
                for c in student_ev["class_iou"]
            )
            rows.append(
                {
                    "seed": seed,
                    "protocol": protocol,
                    "rounds": args.rounds,
                    "supervised": {**sup, **sup_ev},
                    "teacher": {**teacher, **teacher_ev},
                    "pseudolabel_minutes": pl_minutes,
                    "pseudolabels": done[-1]["kept_share"],
                    "per_round": done,
                    "student": {**student, **student_ev},
                    "self_training_minutes": teacher["minutes"]
                    + pl_minutes
                    + sum(r["student"]["minutes"] for r in done),
                    "relative_gain": student_ev["miou"] / sup_ev["miou"] - 1,
                    "online": online,
                    "online_gain": online["miou"] / sup_ev["miou"] - 1 if online else None,
                    "worst_class_vs_teacher": worst,
                }
            )
            pictures[f"student {protocol}"] = student["checkpoint"]
        pictures = {"supervised": sup["checkpoint"], **pictures}
        frames = [camvid / folder / name for folder, name in street_frames(camvid)]
        side_by_side(
            pictures,
            frames[len(frames) // 2 :: max(1, len(frames) // 8)][:3],
            args.out / f"frames_s{seed}.png",
        )
        pictures = {}
    (args.out / "selftrain.json").write_text(
        json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1)
    )
    lines = [
        f"Self-training vs supervised ({args.recipe}, {args.size[0]}x{args.size[1]}, {args.minutes:g} {args.clock} min per arm, "
        f"teacher {args.teacher_share:.0%}); mIoU on {STREET} (inductive: its second half)",
        "",
        "| seed | protocol | supervised (steps) | teacher (steps) | pseudo-label min | student (steps) | gain | worst class vs teacher | BF sup / student | online (steps) | online gain |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        s, t, st = r["supervised"], r["teacher"], r["student"]
        lines.append(
            f"| {r['seed']} | {r['protocol']} | {s['miou']:.4f} ({s['steps']}) | {t['miou']:.4f} ({t['steps']}) | "
            f"{r['pseudolabel_minutes']:.1f} | {st['miou']:.4f} ({st['steps']}) | {r['relative_gain']:+.1%} | "
            f"{r['worst_class_vs_teacher']:+.3f} | {s['mean_bf']:.3f} / {st['mean_bf']:.3f} | "
            + (
                f"{r['online']['miou']:.4f} ({r['online']['steps']}) | {r['online_gain']:+.1%} |"
                if r["online"]
                else "- | - |"
            )
        )
    if rows:
        gains = np.array([r["relative_gain"] for r in rows])
        lines += [
            "",
            f"mean gain {gains.mean():+.1%}, min {gains.min():+.1%} over {len(rows)} seed x protocol pairs",
        ]
    (args.out / "selftrain.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
