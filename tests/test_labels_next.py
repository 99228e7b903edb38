"""``python -m segvn.labels next``: the next frames to label, by the model's uncertainty, spread over the
video; on real CamVid frames (and copies of them, the near-duplicates a video is full of)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from segvn.errors import ConfigError, DataError
from segvn.inference.next_frames import (
    NEXT_CSV,
    NEXT_LIST,
    choose_next,
    thumbnail,
    thumbnail_distance,
)
from tests.conftest import run_segvn

pytestmark = pytest.mark.shared


def make_street(root: Path, frames: list[Path], copies: dict[str, Path] | None = None) -> Path:
    """A street folder: ``frames/`` of links to real CamVid frames, plus byte copies under new names."""
    (root / "frames").mkdir(parents=True)
    for p in frames:
        (root / "frames" / p.name).symlink_to(p)
    for name, src in (copies or {}).items():
        shutil.copyfile(src, root / "frames" / name)
    return root


def camvid_frames(camvid_root: Path, sequence: str, count: int, step: int = 1) -> list[Path]:
    return sorted((camvid_root / "train").glob(f"{sequence}_*.png"))[: count * step : step]


def read_next(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / NEXT_CSV).read_text().splitlines()))


def test_spread_rule_no_two_close_and_no_near_duplicates(camvid_root, tmp_path):
    real = camvid_frames(camvid_root, "0001TP", 12, step=3)
    # a copy beside its original (0001TP_006690 -> ..._006690b) and one far off at the end of the street
    copies = {f"{real[0].stem}b.png": real[0], "0001TP_zzzz.png": real[1]}
    street = make_street(tmp_path / "street", real, copies)
    files = sorted((street / "frames").iterdir())
    stems = [p.stem for p in files]
    position = {s: i for i, s in enumerate(stems)}
    thumbs = {p.stem: thumbnail(p) for p in files}
    assert thumbnail_distance(thumbs[real[1].stem], thumbs["0001TP_zzzz"]) == 0.0
    # the copies and their originals are the most uncertain frames: without the rules they come first
    uncertainty = {s: 0.1 + 0.01 * i for i, s in enumerate(stems)}
    for s in (real[0].stem, f"{real[0].stem}b", real[1].stem, "0001TP_zzzz"):
        uncertainty[s] += 1.0
    plain = choose_next(stems, uncertainty, 4, position, thumbs, min_gap=0, min_distance=0)
    assert {"0001TP_zzzz", real[1].stem} <= set(plain) and f"{real[0].stem}b" in plain

    chosen = choose_next(stems, uncertainty, 6, position, thumbs, min_gap=3, min_distance=0.02)
    assert len(chosen) == 5  # 14 frames, 3 apart: positions 1, 4, 7, 10, 13 at most
    for i, a in enumerate(chosen):
        for b in chosen[i + 1 :]:
            assert abs(position[a] - position[b]) >= 3, (a, b)
            assert thumbnail_distance(thumbs[a], thumbs[b]) >= 0.02, (a, b)
    assert chosen[0] == "0001TP_zzzz"  # the most uncertain frame first, then never its copy
    assert real[1].stem not in chosen and f"{real[0].stem}b" in chosen[:2]
    assert real[0].stem not in chosen  # its copy beside it was more uncertain and one position away
    # a labelled frame's near-duplicate is not proposed either
    again = choose_next(stems, uncertainty, 6, position, thumbs, 3, 0.02, labelled=[thumbs[real[1].stem]])
    assert "0001TP_zzzz" not in again and real[1].stem not in again


def test_gap_counts_frames_of_the_street(camvid_root, tmp_path):
    real = camvid_frames(camvid_root, "0006R0", 10)
    stems = [p.stem for p in real]
    position = {s: i for i, s in enumerate(stems)}
    thumbs = {p.stem: thumbnail(p) for p in real}
    uncertainty = {s: 1.0 - 0.01 * i for i, s in enumerate(stems)}  # the earliest frames most uncertain
    assert choose_next(stems, uncertainty, 3, position, thumbs, min_gap=4, min_distance=0) == [
        stems[0],
        stems[4],
        stems[8],
    ]
    assert choose_next(stems, uncertainty, 5, position, thumbs, min_gap=4, min_distance=0) == [
        stems[0],
        stems[4],
        stems[8],
    ]  # fewer than asked: the rule wins


@pytest.mark.slow
def test_next_ranks_unsure_frames_above_sure_ones(camvid_root, camvid_checkpoint, tmp_path):
    import segvn

    frames = (
        camvid_frames(camvid_root, "0001TP", 4, 10)
        + camvid_frames(camvid_root, "0006R0", 4, 20)
        + camvid_frames(camvid_root, "0016E5", 4, 40)
    )
    street = make_street(tmp_path / "street", frames)
    labelled = frames[5]
    (street / "labels").mkdir()
    (street / "labels" / labelled.name).symlink_to(camvid_root / "trainannot" / labelled.name)
    out = tmp_path / "out"
    proc = run_segvn(
        "labels",
        "next",
        "n=20",
        f"ckpt_path={camvid_checkpoint}",
        f"street={street}",
        "min_gap=0",
        "min_distance=0",
        "device=cpu",
        f"out={out}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "proposed 11 of n=20 frame(s)" in (proc.stdout + proc.stderr).strip().splitlines()[-1]
    rows = read_next(out)
    ranked = [r["frame"] for r in rows]
    assert labelled.stem not in ranked and len(ranked) == 11
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 12)]
    listed = (out / NEXT_LIST).read_text().splitlines()
    assert [Path(p).stem for p in listed] == ranked and all(Path(p).is_file() for p in listed)

    # the model's own margins, independently: the frame it is surest of ranks last, the least sure first
    model = segvn.load_model(camvid_checkpoint, device="cpu", runtime="torch")
    margin = {}
    for p in frames:
        if p.stem in ranked:
            _, probs = model.predict(p, probabilities=True)
            top2 = np.sort(probs, axis=0)[-2:]
            margin[p.stem] = float((top2[1] - top2[0]).mean())
    order = sorted(margin, key=margin.get)
    # next measures the margin at the model's scale, this reference at the frame's (probabilities resized
    # first), so two nearly tied frames of the tiny test model may swap: the ends within one place
    assert ranked[0] in order[:2] and ranked[-1] in order[-2:], (ranked, order)
    ranks = np.argsort(np.argsort([margin[s] for s in ranked]))
    assert np.corrcoef(ranks, np.arange(len(ranked)))[0, 1] > 0.8
    uncertainty = [float(r["uncertainty"]) for r in rows]
    assert uncertainty == sorted(uncertainty, reverse=True)


@pytest.mark.parametrize(
    "setting, named",
    [("n=0", "n=0"), ("min_gap=-1", "min_gap=-1"), ("min_distance=-0.1", "min_distance=-0.1")],
)
def test_bad_settings_are_one_line_naming_them(compose_cfg, tmp_path, setting, named):
    from segvn.labels import run

    cfg = compose_cfg(
        ["action=next", f"street={tmp_path}", f"ckpt_path={tmp_path / 'm.ckpt'}", setting], "labels"
    )
    with pytest.raises(ConfigError) as err:
        run(cfg)
    message = str(err.value)
    assert message.startswith(named) and "\n" not in message and "next" in message


@pytest.mark.parametrize("setting", ["n=abc", "n=2.5", "n=inf", "n=[3]", "min_distance=far"])
def test_values_of_the_wrong_type_fail_as_the_config_composes(compose_cfg, tmp_path, setting):
    """The typed schema (LabelsConfig) refuses them in one line naming the setting, before any work."""
    from hydra.errors import ConfigCompositionException

    from segvn.cli import composition_error_line

    key = setting.split("=", 1)[0]
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(["action=next", f"street={tmp_path}", "ckpt_path=m.ckpt", setting], "labels")
    line = composition_error_line(err.value)
    assert "\n" not in line and key in line, line


def test_missing_street_or_checkpoint(compose_cfg, tmp_path):
    from segvn.labels import run

    with pytest.raises(ConfigError, match=r"missing required setting\(s\) for next: ckpt_path=\.\.\."):
        run(compose_cfg(["action=next", f"street={tmp_path}"], "labels"))
    with pytest.raises(DataError, match="no extracted frames"):
        run(compose_cfg(["action=next", f"street={tmp_path / 'none'}", "ckpt_path=m.ckpt"], "labels"))


def test_every_frame_labelled_is_one_error(camvid_root, tmp_path, compose_cfg):
    from segvn.labels import run

    frames = camvid_frames(camvid_root, "0001TP", 2)
    street = make_street(tmp_path / "street", frames)
    (street / "labels").mkdir()
    for p in frames:
        (street / "labels" / p.name).symlink_to(camvid_root / "trainannot" / p.name)
    with pytest.raises(DataError, match="every frame already has a label") as err:
        run(compose_cfg(["action=next", f"street={street}", "ckpt_path=m.ckpt"], "labels"))
    assert "street=" in str(err.value)


@pytest.mark.slow
def test_bad_n_on_the_command_line(tmp_path):
    proc = run_segvn("labels", "next", "n=0", f"street={tmp_path}", "ckpt_path=m.ckpt")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "n=0" in errors[0]
