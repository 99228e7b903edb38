"""``segvn.pseudolabel``: class-balanced thresholds, a round on real CamVid frames, continuing, refusals."""

from __future__ import annotations

import doctest
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import segvn.inference.pseudolabel as pl
from segvn.data.labelformats import export_labels
from segvn.data.pseudo import RECORD_NAME, STARTED_NAME, pool_frames
from segvn.errors import ConfigError, DataError
from segvn.inference.pseudolabel import HIST_BINS, PseudoLabelSettings, class_thresholds, pseudolabel
from segvn.models.checkpoint import Checkpoint

from .conftest import run_segvn


def test_docstring_examples_run() -> None:
    assert doctest.testmod(pl).failed == 0


def test_thresholds_keep_the_most_confident_share_of_every_class() -> None:
    rng = np.random.default_rng(0)
    hist = np.zeros((3, HIST_BINS), dtype=np.int64)
    common = rng.uniform(0.6, 1.0, 100_000)  # a sure, frequent class
    rare = rng.uniform(0.3, 0.7, 500)  # a hesitant, rare class: a global 0.9 would drop all of it
    for c, conf in ((0, common), (1, rare)):
        np.add.at(hist[c], np.round(conf * (HIST_BINS - 1)).astype(int), 1)
    thr = class_thresholds(hist, keep=0.5, max_threshold=0.9)
    assert abs(thr[1] - np.median(rare)) < 0.01  # half of the rare class kept
    assert abs(thr[0] - np.median(common)) < 0.01 and thr[2] == 0.9  # never predicted: the cap
    assert class_thresholds(hist, keep=1.0, max_threshold=0.9)[1] <= rare.min() + 0.005
    assert class_thresholds(hist, keep=0.1, max_threshold=0.5)[0] == 0.5  # capped


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"keep": 0.0}, "keep="),
        ({"scales": ()}, "scales="),
        ({"max_threshold": 2}, "max_threshold="),
        ({"flow_scale": 0}, "flow_scale="),
    ],
)
def test_bad_settings_name_the_setting(kwargs, setting) -> None:
    with pytest.raises(ConfigError, match=setting):
        PseudoLabelSettings(**kwargs)


def test_pool_spreads_max_frames_and_refuses_empty(camvid_root: Path, tmp_path: Path) -> None:
    frames = pool_frames([camvid_root / "val"], "0016E5_*", max_frames=5)
    everything = pool_frames([camvid_root / "val"], "0016E5_*")
    assert len(frames) == 5 and frames[0] == everything[0] and frames[-1] == everything[-1]
    with pytest.raises(DataError, match="pool: no frames matching"):
        pool_frames([camvid_root / "val"], "Seq05VD_*")
    with pytest.raises(DataError, match="pool.folders"):
        pool_frames([tmp_path / "absent"])


@pytest.fixture(scope="module")
def teacher(camvid_checkpoint: Path) -> Checkpoint:
    return Checkpoint.read(camvid_checkpoint)


def _frames(camvid_root: Path, n: int = 4) -> list[Path]:
    return pool_frames([camvid_root / "val"], max_frames=n)


@pytest.mark.slow
def test_round_writes_balanced_pseudolabels_and_its_record(camvid_root, teacher, tmp_path) -> None:
    frames = _frames(camvid_root)
    settings = PseudoLabelSettings(scales=(0.75, 1.0), keep=0.3)
    record = pseudolabel(teacher, frames, tmp_path / "p", settings, device="cpu")
    assert record["teacher_sha256"] == hashlib.sha256(teacher.path.read_bytes()).hexdigest()
    assert record["settings"]["keep"] == 0.3 and record["settings"]["scales"] == [0.75, 1.0]
    assert set(record["frames"]) == {p.stem for p in frames}
    thresholds = np.array(list(record["thresholds"].values()))
    for path in frames:
        pseudo = np.asarray(Image.open(tmp_path / "p" / "pseudolabels" / f"{path.stem}.png"))
        raw = np.asarray(Image.open(tmp_path / "p" / "raw" / f"{path.stem}.png"))
        conf = np.asarray(Image.open(tmp_path / "p" / "confidence" / f"{path.stem}.png")) / 255
        assert pseudo.shape == raw.shape == Image.open(path).size[::-1]
        kept = pseudo != 255
        assert np.array_equal(pseudo[kept], raw[kept])  # a kept pixel is the teacher's class
        assert (conf[kept] >= thresholds[raw[kept]] - 1 / 255).all()
        assert (conf[~kept] < thresholds[raw[~kept]] + 1 / 255).all()
    for name, share in record["kept_share"].items():  # every predicted class keeps pixels
        assert share is None or share > 0, name
    assert not (tmp_path / "p" / STARTED_NAME).exists()
    with pytest.raises(DataError, match="pseudo-labels written by segvn.pseudolabel"):
        export_labels("cvat", tmp_path / "p", tmp_path / "export", labels_dir="pseudolabels")


@pytest.mark.slow
def test_an_interrupted_round_continues_and_a_foreign_one_is_refused(camvid_root, teacher, tmp_path) -> None:
    frames = _frames(camvid_root, 5)
    settings = PseudoLabelSettings(scales=(1.0,), flip=False)

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt  # as a kill would, part-way through the teacher pass

    with pytest.raises(KeyboardInterrupt):
        pseudolabel(teacher, frames, tmp_path / "p", settings, device="cpu", progress=stop_after_two)
    assert (tmp_path / "p" / STARTED_NAME).is_file() and not (tmp_path / "p" / RECORD_NAME).exists()
    with pytest.raises(DataError, match="half-written pseudo-label run of another teacher or settings"):
        pseudolabel(teacher, frames, tmp_path / "p", PseudoLabelSettings(scales=(1.0,)), device="cpu")
    calls: list[int] = []
    record = pseudolabel(teacher, frames, tmp_path / "p", settings, "cpu", lambda d, t: calls.append(t))
    assert calls and calls[0] == 3  # the two frames done before were not predicted again
    assert len(list((tmp_path / "p" / "pseudolabels").glob("*.png"))) == 5
    fresh = pseudolabel(teacher, frames, tmp_path / "q", settings, device="cpu")
    assert fresh["thresholds"] == record["thresholds"]  # continuing gave what one run gives
    with pytest.raises(DataError, match="another teacher or settings"):
        pseudolabel(teacher, frames, tmp_path / "p", PseudoLabelSettings(scales=(1.0,), keep=0.2), "cpu")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("x")
    with pytest.raises(DataError, match="not empty and not a pseudo-label folder"):
        pseudolabel(teacher, frames, tmp_path / "other", settings, device="cpu")


@pytest.mark.slow
def test_command_as_a_user_runs_it(camvid_root, camvid_checkpoint, tmp_path) -> None:
    run = tmp_path / "run"
    val_pool = (f"pool.folders=[{camvid_root / 'val'}]", "pool.pattern=0016E5_08*", "pool.max_frames=3")
    leak = run_segvn(
        "pseudolabel", f"ckpt_path={camvid_checkpoint}", *val_pool, f"hydra.run.dir={run}", root=tmp_path
    )
    said = leak.stdout + leak.stderr
    assert leak.returncode == 1 and "Traceback" not in said, said[-3000:]
    assert "data.unlabelled: 3 unlabelled frame(s) are also validation/test frames" in said
    assert "data.unlabelled.transductive=true" in said and not (run / "pseudo").exists()
    proc = run_segvn(
        "pseudolabel", f"ckpt_path={camvid_checkpoint}", *val_pool, "data.unlabelled.transductive=true",
        f"hydra.run.dir={run}", root=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run / "pseudo" / RECORD_NAME).read_text())
    assert len(record["frames"]) == 3 and all(s.startswith("0016E5_08") for s in record["frames"])
    empty = run_segvn(
        "pseudolabel", f"ckpt_path={camvid_checkpoint}", f"pool.folders=[{camvid_root / 'val'}]",
        "pool.pattern=nothing*", f"hydra.run.dir={tmp_path / 'run2'}", root=tmp_path,
    )  # fmt: skip
    assert empty.returncode == 1 and "pool: no frames matching 'nothing*'" in empty.stderr + empty.stdout
    assert "Traceback" not in empty.stderr


@pytest.mark.slow
def test_pool_from_a_street_and_a_real_video(camvid_root, camvid_checkpoint, video_path, tmp_path) -> None:
    """The pool is the data layer's unlabelled set: frames of a street and frames drawn from a video."""
    from tests.conftest import cut_clip

    clip = cut_clip(video_path, tmp_path / "clip.mp4", seconds=2)
    run = tmp_path / "run"
    proc = run_segvn(
        "pseudolabel", f"ckpt_path={camvid_checkpoint}", "data.unlabelled.streets=[0016E5]",
        "data.unlabelled.pattern=0016E5_084*", "data.unlabelled.transductive=true",
        f"data.unlabelled.videos=[{clip}]", "data.unlabelled.fps=2", "scales=[1.0]", "flip=false",
        f"hydra.run.dir={run}", root=tmp_path,
    )  # fmt: skip
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said[-3000:]
    record = json.loads((run / "pseudo" / RECORD_NAME).read_text())
    street = sorted(p.stem for p in (camvid_root / "val").glob("0016E5_084*.png"))
    street += sorted(p.stem for p in (camvid_root / "train").glob("0016E5_084*.png"))
    video = ["clip_000000", "clip_000012", "clip_000025", "clip_000037"]  # 25 fps, 2 a second
    assert sorted(record["frames"]) == sorted(street + video)
    for name in video:
        assert Path(record["frames"][name]).is_file()
        with Image.open(run / "pseudo" / "pseudolabels" / f"{name}.png") as label:
            assert label.size == (960, 540)  # at the video's size
    assert f"pool: {len(street)} from street 0016E5, 4 from video clip.mp4" in said


def _selftrain_benchmark(monkeypatch: pytest.MonkeyPatch):
    """``benchmarks/selftrain.py`` as a module, its folder on ``sys.path`` as when it runs (for ``_run``)."""
    import importlib.util

    from .conftest import REPO_ROOT

    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "selftrain_bench", REPO_ROOT / "benchmarks" / "selftrain.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_rounds_the_student_teaches_the_next_round(camvid_root, camvid_checkpoint, tmp_path, monkeypatch):
    """``benchmarks/selftrain.py --rounds 2``: round 2 pseudo-labels with round 1's student; a re-run (after
    a kill) reads the finished rounds back instead of training again."""
    monkeypatch.setenv("SEGVN_ROOT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    bench = _selftrain_benchmark(monkeypatch)
    bench.TRAIN_EXTRA.extend(
        ["data.num_workers=0", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=1", "budget.validate_every=null", "test=false"]
    )  # fmt: skip
    pool = [f"data.unlabelled.folders=[{camvid_root / 'train'}]", "data.unlabelled.pattern=0006R0_*",
            "data.unlabelled.max_frames=4", "scales=[1.0]", "flip=false"]  # fmt: skip
    args = (str(camvid_checkpoint), 2, 30.0, 0.0, pool, [], "resnet18_selftrain", (64, 96), 1, tmp_path, "t")
    rounds = bench.self_train(*args)
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[0]["teacher"] == str(camvid_checkpoint)
    assert rounds[1]["teacher"] == rounds[0]["student"]["checkpoint"]  # the student became the teacher
    second = json.loads((tmp_path / "t_r2_pseudo" / RECORD_NAME).read_text())
    assert (
        second["teacher_sha256"]
        == hashlib.sha256(Path(rounds[0]["student"]["checkpoint"]).read_bytes()).hexdigest()
    )
    assert all(r["student"]["steps"] == 2 for r in rounds)
    stamps = [(tmp_path / f"t_r{k}_student" / "metrics.json").stat().st_mtime_ns for k in (1, 2)]
    costs = [(tmp_path / f"t_r{k}_pseudolabel.cost.json").read_bytes() for k in (1, 2)]
    again = bench.self_train(*args)
    assert [r["student"]["checkpoint"] for r in again] == [r["student"]["checkpoint"] for r in rounds]
    assert stamps == [(tmp_path / f"t_r{k}_student" / "metrics.json").stat().st_mtime_ns for k in (1, 2)]
    # finished pseudo-labelling is not run again: its recorded cost stands, not a re-run's few seconds
    assert costs == [(tmp_path / f"t_r{k}_pseudolabel.cost.json").read_bytes() for k in (1, 2)]
    assert [r["pseudolabel_minutes"] for r in again] == [r["pseudolabel_minutes"] for r in rounds]
    bench.CLOCK = "cpu"  # a run recorded without CPU time is not compared on the CPU clock
    (tmp_path / "t_r1_student.cost.json").write_text(json.dumps({"wall_s": 1.0}))
    with pytest.raises(SystemExit, match=r"t_r1_student.log: no cpu_s recorded"):
        bench.self_train(*args)


# -- the student ------------------------------------------------------------------------------------
def test_frame_weighted_loss_is_cross_entropy_with_frames_counted_by_weight() -> None:
    import torch
    import torch.nn.functional as F

    from segvn.models.losses import sample_weighted_cross_entropy

    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 5)
    target = torch.randint(0, 4, (2, 6, 5))
    target[0, 0] = 255
    cw = torch.tensor([1.0, 2.0, 0.5, 1.5])
    plain = F.cross_entropy(logits, target, weight=cw, ignore_index=255)
    assert torch.allclose(sample_weighted_cross_entropy(logits, target, torch.ones(2), cw), plain)
    only_first = F.cross_entropy(logits[:1], target[:1], weight=cw, ignore_index=255)
    assert torch.allclose(
        sample_weighted_cross_entropy(logits, target, torch.tensor([1.0, 0.0]), cw), only_first
    )
    doubled = torch.cat([logits, logits[1:]]), torch.cat([target, target[1:]])
    assert torch.allclose(
        sample_weighted_cross_entropy(logits, target, torch.tensor([1.0, 2.0]), cw),
        F.cross_entropy(*doubled, weight=cw, ignore_index=255),
    )
    # class weights on the first frame only (human labels), plain pixels on the second (pseudo-labels)
    mixed = sample_weighted_cross_entropy(
        logits, target, torch.ones(2), cw, class_weighted=torch.tensor([True, False])
    )
    ce = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    valid = target != 255
    w0 = cw[target[0].clamp(max=3)] * valid[0]
    expected = ((ce[0] * w0).sum() + ce[1][valid[1]].sum()) / (w0.sum() + valid[1].sum())
    assert torch.allclose(mixed, expected)
    assert not torch.allclose(mixed, plain)
    every = sample_weighted_cross_entropy(logits, target, torch.ones(2), cw, class_weighted=torch.ones(2))
    assert torch.allclose(every, plain)


@pytest.fixture(scope="module")
def train_street_pseudo(camvid_root, teacher, tmp_path_factory) -> Path:
    """Pseudo-labels of 4 frames of a training street (0001TP): no frame of the validation street."""
    out = tmp_path_factory.mktemp("pseudo") / "p"
    frames = pool_frames([camvid_root / "train"], "0001TP_*", max_frames=4)
    pseudolabel(teacher, frames, out, PseudoLabelSettings(scales=(1.0,), flip=False), device="cpu")
    return out


def _datamodule(compose_cfg, pseudo: dict):
    from hydra.utils import instantiate

    cfg = compose_cfg(
        ["data=camvid_streets", "data.image_size=[64,96]", "data.num_workers=0", "data.check.level=off"]
    )
    return instantiate(cfg.data, pseudo=pseudo)


@pytest.mark.slow
def test_leak_guard_other_classes_and_half_written_folders(
    camvid_root, teacher, train_street_pseudo, compose_cfg, tmp_path
) -> None:
    import torch

    dm = _datamodule(compose_cfg, {"dir": str(train_street_pseudo), "weight": 0.5})
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert len(dm.train_dataset()) == len(dm.dataset("train")) + 4 and "weight" in batch
    items = [dm.train_dataset()[i] for i in range(len(dm.train_dataset()) - 4, len(dm.train_dataset()))]
    assert {it["street"] for it in items} == {"pseudo"} and {it["weight"] for it in items} == {0.5}
    assert {it["class_weighted"] for it in items} == {False} and dm.train_dataset()[0]["class_weighted"]
    assert batch["class_weighted"].dtype == torch.bool
    weighted = _datamodule(compose_cfg, {"dir": str(train_street_pseudo), "class_weighted": True})
    weighted.setup("fit")
    assert weighted.train_dataset()[len(weighted.train_dataset()) - 1]["class_weighted"] is True

    evaluated = pool_frames([camvid_root / "val"], "0016E5_*", max_frames=3)
    leak = tmp_path / "leak"
    pseudolabel(teacher, evaluated, leak, PseudoLabelSettings(scales=(1.0,), flip=False), device="cpu")
    with pytest.raises(DataError, match=r"3 pseudo-labelled frame\(s\) are also validation/test frames"):
        _datamodule(compose_cfg, {"dir": str(leak)}).setup("fit")
    _datamodule(compose_cfg, {"dir": str(leak), "transductive": True}).setup("fit")  # asked for: allowed

    record = json.loads((leak / RECORD_NAME).read_text())
    record["class_names"] = ["road", "not_road"]
    (leak / RECORD_NAME).write_text(json.dumps(record))
    with pytest.raises(DataError, match="teacher of other classes"):
        _datamodule(compose_cfg, {"dir": str(leak), "transductive": True}).setup("fit")
    (leak / RECORD_NAME).rename(leak / STARTED_NAME)
    with pytest.raises(DataError, match="half-written pseudo-label run"):
        _datamodule(compose_cfg, {"dir": str(leak), "transductive": True}).setup("fit")
    from hydra.errors import InstantiationException  # what run_task unwraps to the ConfigError's one line

    with pytest.raises(InstantiationException, match="data.pseudo.weight must be a number"):
        _datamodule(compose_cfg, {"dir": str(leak), "weight": "abc"})
    for key in ("strong", "transductive", "class_weighted"):  # bool("maybe") would switch it on
        with pytest.raises(InstantiationException, match=f"data.pseudo.{key}='maybe': give true or false"):
            _datamodule(compose_cfg, {"dir": str(leak), key: "maybe"})


def test_selftrain_recipes_compose(compose_cfg, tmp_path) -> None:
    for recipe in ("mobilenetv2_selftrain", "resnet18_selftrain"):
        cfg = compose_cfg([f"+experiment={recipe}", f"pseudo={tmp_path}"])
        assert cfg.data.pseudo.dir == str(tmp_path) and cfg.data.pseudo.strong is True
        assert "selftrain" in cfg.tags


@pytest.mark.slow
def test_student_trains_on_labelled_and_pseudo_labelled_frames(train_street_pseudo, tmp_path) -> None:
    run = tmp_path / "student"
    proc = run_segvn(
        "train", "+experiment=resnet18", "data=camvid_streets", "data.image_size=[64,96]", "data.num_workers=0",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "test=false",
        "logger=csv", f"data.pseudo.dir={train_street_pseudo}", f"hydra.run.dir={run}", root=tmp_path,
    )  # fmt: skip
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said[-3000:]
    assert "pseudo-labels: 4 frame(s)" in said
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 2


def _label(camvid_root: Path, name: str) -> np.ndarray:
    from segvn.data.camvid import camvid_known, camvid_lut
    from segvn.data.io import read_label

    return read_label(camvid_root / "valannot" / f"{name}.png", "index", camvid_lut(), camvid_known())[0]


def test_flow_agreement_keeps_moved_labels_and_drops_contradicted_ones(camvid_root: Path) -> None:
    """A real frame and its label shifted 12 pixels (a camera pan): the flow carries the labels along and
    finds no disagreement; a block relabelled in the neighbour is found."""
    from segvn.data.io import read_image

    image, label = read_image(camvid_root / "val" / "0016E5_07959.png"), _label(camvid_root, "0016E5_07959")
    label = np.where(label == 255, 0, label).astype(np.uint8)
    shift = 12
    frame, moved = image[:, :-shift], image[:, shift:]  # the scene moves 12 px left in the next frame
    lab, moved_lab = label[:, :-shift], label[:, shift:]
    small = [pl._grey_small(x, 0.5) for x in (frame, moved)]
    same = pl.flow_disagreement(lab, small[0], [(moved_lab, small[1])])
    assert same.mean() < 0.05, same.mean()
    wrong = moved_lab.copy()
    wrong[100:200, 100:250] = (wrong[100:200, 100:250] + 1) % 8  # the neighbour says another class there
    flagged = pl.flow_disagreement(lab, small[0], [(wrong, small[1])])
    block = np.zeros_like(flagged)
    block[100:200, 100 + shift : 250 + shift] = True  # where the relabelled pixels land on this frame
    assert flagged[block].mean() > 0.8 and (flagged & ~block).mean() < 0.05
    other_size = pl.flow_disagreement(lab, small[0], [(moved_lab[:-2], small[1][:-1])])
    assert not other_size.any()  # another camera's frame is not a neighbour


def test_sequence_neighbours_follow_frame_numbers() -> None:
    names = ["0016E5_07961", "0016E5_07959", "0016E5_07963", "clip_000012", "clip_000000", "street"]
    near = pl.sequence_neighbours(names)
    assert near["0016E5_07961"] == ["0016E5_07959", "0016E5_07963"]
    assert near["0016E5_07959"] == ["0016E5_07961"] and near["clip_000000"] == ["clip_000012"]
    assert near["street"] == []


@pytest.mark.slow
def test_round_with_flow_agreement_drops_only_contradicted_pixels(camvid_root, teacher, tmp_path) -> None:
    frames = [camvid_root / "val" / f"0016E5_0{n}.png" for n in (7959, 7961, 7963)]  # 15 frames a second
    plain = PseudoLabelSettings(scales=(1.0,), flip=False, keep=1.0, max_threshold=1.0)
    with_flow = PseudoLabelSettings(scales=(1.0,), flip=False, keep=1.0, max_threshold=1.0, flow_agree=True)
    record = pseudolabel(teacher, frames, tmp_path / "plain", plain, device="cpu")
    flowed = pseudolabel(teacher, frames, tmp_path / "flow", with_flow, device="cpu")
    assert "flow_dropped" not in record and 0 < flowed["flow_dropped"] < 1
    assert flowed["settings"]["flow_agree"] is True and flowed["thresholds"] == record["thresholds"]
    assert flowed["kept_pixels"] < record["kept_pixels"]
    for path in frames:
        a = np.asarray(Image.open(tmp_path / "plain" / "pseudolabels" / f"{path.stem}.png"))
        b = np.asarray(Image.open(tmp_path / "flow" / "pseudolabels" / f"{path.stem}.png"))
        assert np.array_equal(b[b != 255], a[b != 255])  # flow only removes pixels, never relabels
    with pytest.raises(DataError, match="another teacher or settings"):
        pseudolabel(teacher, frames, tmp_path / "flow", plain, device="cpu")
    # a folder written before the flow settings existed still matches a run with their defaults
    rec = json.loads((tmp_path / "plain" / RECORD_NAME).read_text())
    for key in ("flow_agree", "flow_scale"):
        del rec["settings"][key]
    (tmp_path / "plain" / RECORD_NAME).write_text(json.dumps(rec))
    assert pseudolabel(teacher, frames, tmp_path / "plain", plain, device="cpu")["thresholds"]
