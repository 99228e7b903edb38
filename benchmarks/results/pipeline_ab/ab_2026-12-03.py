"""Interleaved A/B of the 2026-12-03 predict changes on the dash-cam clip (221 frames, 270x480, onnx, batch 2).

* old: the Predictor of ``4df1ada`` (every class map resized by ``F.interpolate``, then the argmax; one
  int64 bincount), one model thread with an ONNX Runtime session of 2 threads;
* labels only: today's Predictor (``upsampled_labels``, uint8 bincount per frame), one model thread;
* new: today's Predictor, two model workers of one ONNX Runtime thread each (predict's CPU default).

    .venv/bin/python benchmarks/results/pipeline_ab/ab_2026-12-03.py   # output: ab_2026-12-03.txt

Uses the checkpoint ``benchmarks/bench_predict.py`` trains and caches (run it once first).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from segvn.inference.export import export_metadata, export_network
from segvn.inference.options import PredictConfig
from segvn.inference.predictor import BatchPrediction, Predictor
from segvn.inference.runtimes import RuntimeModel
from segvn.inference.video import run_prediction
from segvn.metrics import class_indices
from segvn.models.checkpoint import Checkpoint
from segvn.models.tta import predict_logits

REPO = Path(__file__).resolve().parents[3]
VIDEO = Path(os.environ.get("SEGVN_SHARED", REPO.parent / "shared")) / "videos" / "solidWhiteRight.mp4"
CKPT = REPO / "outputs" / "bench" / "predict_ckpt" / "40b_180x240" / "checkpoints" / "last.ckpt"


class OldPredictor(Predictor):
    """The labels and shares as ``4df1ada`` computed them."""

    def _predict(self, frames):
        height, width = frames[0].shape[:2]
        x = torch.from_numpy(self._model_frames(frames)).permute(0, 3, 1, 2).float()
        scores = predict_logits(self.model, ((x / 255.0 - self._mean) / self._std).contiguous(), False)
        scores = F.interpolate(scores, size=(height, width), mode="bilinear", align_corners=False)
        labels = class_indices(scores)
        classes = scores.shape[1]
        offsets = torch.arange(len(frames)).view(-1, 1, 1) * classes
        counts = torch.bincount((labels + offsets).flatten(), minlength=len(frames) * classes)
        shares = counts.view(len(frames), classes).double() / (height * width)
        return BatchPrediction(labels.to(torch.uint8).numpy(), shares.numpy(), None)


def main() -> None:
    ckpt = Checkpoint.read(CKPT)
    module = ckpt.model().eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_network(module, "onnx", path, export_metadata(ckpt, module, "onnx"))
        two_threads, one_thread = RuntimeModel(path), RuntimeModel(path, threads=1)
        configs = {
            "old (4df1ada)": (OldPredictor, two_threads, 1),
            "labels only": (Predictor, two_threads, 1),
            "new": (Predictor, one_thread, 2),
        }
        runs: dict[str, list[float]] = {name: [] for name in configs}
        for r in range(3):  # interleaved, so changes of machine load hit all three alike
            for name, (cls, model, workers) in configs.items():
                predictor = cls(model, "cpu", (270, 480))
                predictor.workers = workers
                with tempfile.TemporaryDirectory() as out:
                    summary = run_prediction(
                        predictor, out, list(model.class_names), PredictConfig(batch_size=2), videos=[VIDEO]
                    )
                runs[name].append(summary["fps"])
                print(
                    r,
                    name,
                    round(summary["fps"], 2),
                    "model part",
                    round(summary["model_fps"], 2),
                    flush=True,
                )
    median = {name: float(np.median(v)) for name, v in runs.items()}
    print(json.dumps({"runs": runs, "median": median}, indent=1))
    old = median["old (4df1ada)"]
    print(f"new / old = {median['new'] / old:.3f}, labels only / old = {median['labels only'] / old:.3f}")


if __name__ == "__main__":
    main()
