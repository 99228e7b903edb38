"""Fine-tuning from Label Studio's webhook: annotations in, a new served checkpoint out (off by default).

Each ``ANNOTATION_CREATED``/``ANNOTATION_UPDATED`` stores the task's latest annotation under
``workdir/annotations/``. Then one training runs at a time, in the background: the frames and the
brush layers of every stored annotation are written as a Label Studio "Brush labels to PNG" export and
brought in with segvn's own importer (``segvn.labels import format=labelstudio``) as the street
``workdir/data/<street>``; ``python -m segvn.train data=vietnam data.root=workdir/data`` trains on that
street (``overrides`` add or change settings) in ``workdir/runs/<n>``, its network starting from the
served checkpoint's weights (``init_from``; ``init_from_served=False`` trains from the settings alone); when
it ends well, the server switches to the run's best checkpoint. Annotations that arrive meanwhile start one
more run after it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segvn.errors import DataError
from segvn.serving.labelconfig import BrushConfig
from segvn.serving.sources import ImageSources

log = logging.getLogger("segvn.serve")


@dataclass
class FinetuneSettings:
    """``finetune.*`` of ``conf/serve.yaml``."""

    enabled: bool = False
    workdir: str | None = None
    street: str = "labelstudio"
    overrides: list[str] = field(default_factory=list)
    timeout_s: float = 24 * 3600
    init_from_served: bool = True


def layers(annotation: dict[str, Any], config: BrushConfig) -> list[tuple[str, np.ndarray]]:
    """``(label, mask)`` of each brush result of ``annotation`` on the config's brush tag."""
    from label_studio_converter.brush import decode_rle

    out = []
    for item in annotation.get("result") or []:
        value = item.get("value") or {}
        if (
            item.get("type") != "brushlabels"
            or value.get("format") != "rle"
            or item.get("from_name") != config.from_name
        ):
            continue
        height, width = int(item["original_height"]), int(item["original_width"])
        rgba = np.asarray(decode_rle(value["rle"]), dtype=np.uint8)
        if rgba.size != height * width * 4:
            raise DataError(
                f"annotation {annotation.get('id')}: an RLE of {rgba.size} values for {width}x{height} RGBA"
            )
        mask = rgba.reshape(height, width, 4)[..., 3] > 127
        for label in value.get("brushlabels") or []:
            out.append((str(label), mask))
    return out


class FineTuner:
    """The webhook's background trainings, one at a time (see the module docstring)."""

    def __init__(
        self,
        settings: FinetuneSettings,
        sources: ImageSources,
        on_done: Callable[[Path], None],
        served: Callable[[], Path] | None = None,
    ) -> None:
        self.settings = settings
        self.sources = sources
        self.on_done = on_done
        self.served = served
        self.workdir = Path(settings.workdir or "finetune").expanduser().resolve()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending = False
        self.runs = 0
        self.last: dict[str, Any] = {}

    def status(self) -> dict[str, Any]:
        return {
            "enabled": bool(self.settings.enabled),
            "running": bool(self._thread and self._thread.is_alive()),
            "runs": self.runs,
            "last": self.last,
        }

    def add(self, task: Any, annotation: Any, config: BrushConfig) -> dict[str, Any]:
        """Store ``annotation`` of ``task``; start a training, or queue one after the running one."""
        if not isinstance(task, dict) or not isinstance(annotation, dict) or "id" not in task:
            raise DataError(
                "webhook: expected the task and the annotation of an ANNOTATION_CREATED/UPDATED event"
            )
        ref = config.image_of(task, f"webhook: task {task['id']}")
        if not layers(annotation, config):
            return {"training": "skipped", "reason": "the annotation has no brush labels"}
        store = self.workdir / "annotations"
        store.mkdir(parents=True, exist_ok=True)
        record = {"task": int(task["id"]), "image": ref, "annotation": annotation, "config": config.__dict__}
        (store / f"task-{int(task['id'])}.json").write_text(json.dumps(record))
        with self._lock:
            if self._thread and self._thread.is_alive():
                self._pending = True
                return {"training": "queued"}
            self._thread = threading.Thread(target=self._loop, name="segvn-finetune", daemon=True)
            self._thread.start()
        return {"training": "started"}

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception as err:  # noqa: BLE001 - a failed run must not take the server down
                self.last = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
                log.error("fine-tuning failed: %s", err)
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
                self._pending = False

    def export(self, export_dir: Path) -> Path:
        """The stored annotations as a Label Studio PNG export in ``export_dir`` (frames under ``workdir/data``)."""
        frames = self.workdir / "data" / self.settings.street / "frames"
        frames.mkdir(parents=True, exist_ok=True)
        export_dir.mkdir(parents=True, exist_ok=True)
        tasks: dict[str, str] = {}
        for path in sorted((self.workdir / "annotations").glob("task-*.json")):
            record = json.loads(path.read_text())
            config = BrushConfig(
                **{**record["config"], "labels": {int(k): v for k, v in record["config"]["labels"].items()}}
            )
            frame, name = self.sources.read(record["image"])
            stem = Path(name).stem
            Image.fromarray(frame).save(frames / f"{stem}.png")
            tasks[str(record["task"])] = f"{stem}.png"
            annotation = record["annotation"]
            for n, (label, mask) in enumerate(layers(annotation, config)):
                name = f"task-{record['task']}-annotation-{int(annotation.get('id', 0))}-by-0-tag-{label}-{n}.png"
                Image.fromarray(mask.astype(np.uint8) * 255).save(export_dir / name)
        (export_dir / "tasks.json").write_text(json.dumps(tasks))
        return export_dir

    def init_from(self) -> list[str]:
        """``[init_from=<served checkpoint>]`` for the training command, or ``[]`` (with a log line saying why).

        The served model is read when the run starts, so after a switch the next run goes on from the
        previous run's best. An exported model (ONNX, TorchScript, OpenVINO) holds no training weights.
        """
        if not self.settings.init_from_served or self.served is None:
            return []
        path = Path(self.served())
        if path.suffix != ".ckpt":
            log.info(
                "fine-tuning starts from the settings, not the served model: %s is an exported model, not a "
                ".ckpt (finetune.init_from_served)", path,
            )  # fmt: skip
            return []
        named = [
            o
            for o in self.settings.overrides
            if o.lstrip("+~").split("=", 1)[0] in ("init_from", "ckpt_path")
        ]
        if named:
            log.info("fine-tuning starts as finetune.overrides say (%s), not from the served model", named[0])
            return []
        return [f"init_from={path}"]

    def run_once(self) -> Path | None:
        """One fine-tuning run on every annotation so far; switches the server to its best checkpoint."""
        from segvn.data.labelformats import import_labels

        self.runs += 1
        run_dir = self.workdir / "runs" / f"{self.runs:03d}"
        self.last = {"status": "running", "run_dir": str(run_dir)}
        export_dir = self.export(run_dir / "export")
        data_root = self.workdir / "data"
        street = self.settings.street
        import_labels(
            "labelstudio",
            export_dir,
            data_root / street,
            overwrite=True,
            tasks=str(export_dir / "tasks.json"),
            report_path=run_dir / "labels_import.json",
        )
        command = [
            sys.executable, "-m", "segvn.train", "data=vietnam", f"data.root={data_root}",
            f"data.source.train=[{street}]", f"data.source.val=[{street}]", "data.source.test=[]",
            "data.source.predict=[]", "test=false", f"hydra.run.dir={run_dir / 'train'}",
            *self.init_from(), *self.settings.overrides,
        ]  # fmt: skip
        log.info("fine-tuning: %s", " ".join(command))
        with (run_dir / "train.log").open("w") as out:
            proc = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, timeout=self.settings.timeout_s
            )
        if proc.returncode != 0:
            self.last = {"status": "failed", "run_dir": str(run_dir), "log": str(run_dir / "train.log")}
            log.error(
                "fine-tuning run %s failed (exit %s): see %s", run_dir, proc.returncode, run_dir / "train.log"
            )
            return None
        checkpoints = run_dir / "train" / "checkpoints"
        best = sorted(checkpoints.glob("epoch_*.ckpt")) or sorted(checkpoints.glob("last.ckpt"))
        if not best:
            self.last = {"status": "failed", "run_dir": str(run_dir), "error": "no checkpoint written"}
            return None
        self.on_done(best[0])
        self.last = {"status": "done", "run_dir": str(run_dir), "checkpoint": str(best[0])}
        return best[0]
