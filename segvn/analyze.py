"""Look at a dataset: ``python -m segvn.analyze [data=camvid] [data.root=DIR]``.

Writes into the run directory ``class_stats.json`` and ``class_stats.csv`` (per split and per
street: pixel and image counts per class, frequencies, median-frequency and inverse-frequency
class weights as training computes them), ``class_frequency_<split>.png`` (the thesis bar chart),
``class_weights.png`` (the train split's weights) and ``frames_<split>.png`` (a grid of frames
with their labels overlaid and a colour legend). Empty splits are skipped with a note.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from segvn.cli import command
from segvn.data.report import dataset_report, report_rows
from segvn.utils import save_resolved_config
from segvn.utils.io import write_csv, write_json
from segvn.viz.image import save_image
from segvn.viz.labels import evenly_spaced, label_grid, plot_class_weights, resize_pair
from segvn.viz.plots import plot_class_frequency

log = logging.getLogger("segvn.analyze")


def analyze(cfg: DictConfig) -> dict:
    """Write the class statistics, charts and frame grids of ``cfg.data``; returns the report."""
    out = Path(cfg.paths.output_dir)
    save_resolved_config(cfg, out / "config.yaml")
    dm = instantiate(cfg.data)
    names = list(dm.class_names)
    report = dataset_report(dm, [str(s) for s in cfg.splits])

    for split, entry in report["splits"].items():
        if entry["status"] != "ok":
            log.warning("%s: skipped (%s)", split, entry["note"])
            continue
        total = entry["total"]
        log.info(
            "%s: %d labelled frames of %d in %d street(s), %.1f%% of pixels unlabelled",
            split,
            entry["labelled_frames"],
            entry["frames"],
            len(entry["by_street"]),
            100.0 * total["ignored_pixels"] / max(total["pixels"], 1),
        )
        plot_class_frequency(
            [total["classes"][n]["pixel_count"] for n in names],
            names,
            out=out / f"class_frequency_{split}.png",
            image_counts=[total["classes"][n]["image_count"] for n in names],
            title=f"Pixel frequency per class ({split}, {total['images']} frames)",
        )
        if cfg.grid.frames > 0:
            ds = dm.dataset(split)
            labelled = [i for i, s in enumerate(ds.samples) if s.label is not None]
            picks = [labelled[i] for i in evenly_spaced(len(labelled), cfg.grid.frames)]
            frames = [(*resize_pair(*ds.load(i), dm.image_size), ds.samples[i].name) for i in picks]
            save_image(
                label_grid(frames, names, ncols=cfg.grid.ncols, alpha=cfg.grid.alpha),
                out / f"frames_{split}.png",
            )

    if report["training_weights"] is not None:
        weights = report["training_weights"]
        plot_class_weights(
            {m: [weights[m][n] for n in names] for m in weights}, names, out=out / "class_weights.png"
        )
        log.info(
            "class weights of the train split (used by training): %s",
            "; ".join(
                f"{m}: " + ", ".join(f"{n}={w:.3f}" for n, w in weights[m].items() if w is not None)
                for m in weights
            ),
        )
    header, rows = report_rows(report)
    write_csv(out / "class_stats.csv", header, rows)
    write_json(out / "class_stats.json", report)
    log.info("dataset analysis -> %s", out)
    return report


main = command("analyze")(analyze)

if __name__ == "__main__":
    main()
