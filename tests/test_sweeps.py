"""Sweeps: the summary table, failed jobs, Optuna, submitit/SLURM, the W&B sweep file, run directories."""

from __future__ import annotations

import csv
import json
import math
import sqlite3
from pathlib import Path

import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict, read_write

from segvn.errors import DataError
from segvn.utils.run import SweepJobError, run_task
from segvn.utils.sweep import SweepSummary, job_record, write_summary
from tests.conftest import REPO_ROOT, run_segvn

TINY = (
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "test=false",
    "logger=csv",
    "data.num_workers=0",
    "data.image_size=[64,96]",
)


def _rows(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "sweep_summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def _multirun(cfg):
    """``cfg`` as a job of a multirun sees it (also in ``HydraConfig``)."""
    from hydra.core.hydra_config import HydraConfig

    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = str(Path(cfg.hydra.runtime.output_dir).parent / "sweep")
        cfg.hydra.runtime.output_dir = str(Path(cfg.hydra.sweep.dir) / str(cfg.hydra.job.num))
    HydraConfig().set_config(cfg)
    return cfg


# ---- in process: the pieces -------------------------------------------------------------------


def test_run_dirs_never_collide_within_a_second(compose_cfg):
    first = compose_cfg()
    a, again = str(first.hydra.run.dir), str(first.hydra.run.dir)
    b = str(compose_cfg().hydra.run.dir)
    c = str(compose_cfg().hydra.sweep.dir)
    assert a == again, "one config must name one folder however often it is read"
    assert a != b
    # same second (or not), the folders differ by the random suffix
    assert Path(a).name.rsplit("_", 1)[0][:10] == Path(b).name.rsplit("_", 1)[0][:10]
    assert len(Path(a).name.rsplit("_", 1)[1]) == 6 and len(Path(c).name.rsplit("_", 1)[1]) == 6


def test_torchrun_ranks_share_the_run_dir_suffix(monkeypatch):
    from segvn.utils.config import unique_suffix

    assert unique_suffix() != unique_suffix()
    for key, value in {"TORCHELASTIC_RUN_ID": "none", "LOCAL_RANK": "1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(key, value)
    assert unique_suffix() == unique_suffix()
    first = unique_suffix()
    monkeypatch.setenv("MASTER_PORT", "29501")  # another torchrun
    assert unique_suffix() != first


def test_run_task_in_a_multirun_raises_instead_of_exiting(compose_cfg):
    def bad():
        raise DataError("data root /nope does not exist")

    compose_cfg()
    with pytest.raises(SystemExit):  # a single run: one line and status 1, as before
        run_task(bad)
    _multirun(compose_cfg())
    with pytest.raises(SweepJobError, match="/nope does not exist"):
        run_task(bad)
    with pytest.raises(SweepJobError, match="status 3"):
        run_task(lambda: exit(3))
    assert run_task(lambda: 0.5) == 0.5


def test_summary_rows_from_job_records(compose_cfg, tmp_path):
    cfg = _multirun(compose_cfg(["model.optimizer.lr=0.5"]))
    out = Path(cfg.hydra.runtime.output_dir)
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(
        json.dumps({"metrics": {"val/miou_best": 0.25}, "epochs": 3, "seconds": 1.5})
    )
    ok = JobReturn(status=JobStatus.COMPLETED, _return_value=0.25)
    failed = JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("CUDA out of memory\nmore"))
    cb = SweepSummary()
    cb.on_job_end(cfg, ok)
    sweep = Path(cfg.hydra.sweep.dir)
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.job.num = 1
        cfg.hydra.runtime.output_dir = str(sweep / "1")
    cb.on_job_end(cfg, failed)
    (sweep / "2").mkdir()
    (sweep / "2" / "job_status.json").write_text("{half a fi")  # being written: skipped
    rows = _rows(sweep)
    assert [r["status"] for r in rows] == ["ok", "failed"]
    assert rows[0]["overrides"] == "model.optimizer.lr=0.5"
    assert float(rows[0]["val/miou_best"]) == 0.25 and rows[0]["epochs"] == "3"
    assert rows[1]["error"] == "RuntimeError: CUDA out of memory"
    md = (sweep / "sweep_summary.md").read_text()
    assert "2 jobs: 1 ok, 1 failed" in md and "Best job: 0" in md
    with pytest.raises(SystemExit):  # a failed job: non-zero status at the end of the multirun
        cb.on_multirun_end(cfg)
    SweepSummary(fail_on_job_failure=False).on_multirun_end(cfg)


def test_summary_leaves_single_runs_alone(compose_cfg):
    cfg = compose_cfg()
    SweepSummary().on_job_end(cfg, JobReturn(status=JobStatus.COMPLETED, _return_value=1.0))
    out = Path(cfg.hydra.runtime.output_dir)
    assert not (out / "job_status.json").exists() and not list(out.parent.glob("**/sweep_summary.*"))


def test_job_record_without_metrics_file_uses_the_return_value(compose_cfg):
    cfg = _multirun(compose_cfg())
    rec = job_record(cfg, JobReturn(status=JobStatus.COMPLETED, _return_value=float("nan")))
    assert rec["status"] == "ok" and rec["metric"] is None
    assert write_summary(cfg.hydra.sweep.dir) == []


def test_sweep_group_resolver(compose_cfg):
    from segvn.utils.config import sweep_group

    cfg = compose_cfg(["task_name=mytask"])
    node = OmegaConf.create({"task_name": "mytask", "g": "${segvn.sweep_group:}"})
    assert node.g == "mytask"
    cfg = _multirun(cfg)
    assert sweep_group() == "sweep"


# ---- configs -------------------------------------------------------------------------------------


def test_optuna_search_composes(compose_cfg):
    cfg = compose_cfg(["+hparams_search=optuna"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize" and sweeper.max_failure_rate == 1.0
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == cfg.seed
    assert str(sweeper.storage).startswith("sqlite:///") and str(sweeper.storage).endswith("/optuna.db")
    assert sweeper.study_name == "segvn_train" and cfg.optimized_metric == "val/miou_best"
    assert set(sweeper.params) == {
        "model.optimizer.lr",
        "model.optimizer.weight_decay",
        "data.batch_size",
        "model.net.encoder_name",
    }


@pytest.mark.parametrize("encoder", ["resnet18", "mobilenet_v2"])
def test_searched_encoders_build_offline(compose_cfg, encoder):
    from hydra.utils import instantiate

    cfg = compose_cfg([f"model.net.encoder_name={encoder}"])
    assert cfg.model.net.encoder_weights is None
    assert sum(p.numel() for p in instantiate(cfg.model.net).parameters()) > 0


def test_slurm_launcher_composes(compose_cfg):
    cfg = compose_cfg(
        ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4"]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.partition == "gpu" and launcher.tasks_per_node == 4
    assert launcher.signal_delay_s > 0 and launcher.max_num_timeout > 0
    assert cfg.hydra.callbacks.sweep_summary._target_ == "segvn.utils.sweep.SweepSummary"


def _wandb_overrides(spec: dict) -> list[str]:
    overrides = []
    for name, p in spec["parameters"].items():
        if "value" in p:
            values = [p["value"]]
        elif "values" in p:
            values = p["values"]
        else:
            assert p["distribution"] in (
                "log_uniform_values",
                "uniform",
                "int_uniform",
                "q_log_uniform_values",
            )
            values = [p["min"], p["max"]]
        overrides.append([f"{name}={v}" for v in values])
    return overrides


def test_wandb_sweep_file_parameters_compose(compose_cfg):
    spec = yaml.safe_load((REPO_ROOT / "conf" / "wandb_sweep.yaml").read_text())
    assert spec["method"] == "bayes"
    assert spec["metric"] == {"name": "val/miou_best", "goal": "maximize"}
    assert spec["command"][-1] == "${args_no_hyphens}" and "segvn.train" in spec["command"]
    per_param = _wandb_overrides(spec)
    assert {o[0].split("=")[0] for o in per_param} >= {"model.optimizer.lr", "data.batch_size"}
    for i in range(max(len(o) for o in per_param)):  # every value of every parameter composes
        overrides = [o[min(i, len(o) - 1)] for o in per_param]
        cfg = compose_cfg(overrides)
        for o in overrides:
            key, value = o.split("=", 1)
            key = key.lstrip("+")
            if key == "experiment":
                assert value in cfg.tags
                continue
            assert str(OmegaConf.select(cfg, key)) == str(yaml.safe_load(value)), o


# ---- real multiruns ------------------------------------------------------------------------------


@pytest.mark.slow
def test_failed_job_does_not_stop_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    # job 0 fails at once (no vietnam data under SEGVN_ROOT); job 1 must still run
    proc = run_segvn(
        "train", "-m", "data=vietnam,synthetic", *TINY, f"hydra.sweep.dir={sweep}", root=tmp_path
    )
    assert proc.returncode != 0, "a failed job must make the multirun exit non-zero"
    rows = _rows(sweep)
    assert [(r["job"], r["status"]) for r in rows] == [("0", "failed"), ("1", "ok")], rows
    assert "does not exist" in rows[0]["error"] and "\n" not in rows[0]["error"]
    assert rows[0]["overrides"].startswith("data=vietnam")
    assert float(rows[1]["val/miou_best"]) >= 0 and rows[1]["epochs"] == "1" and rows[1]["seconds"]
    assert (sweep / "1" / "metrics.json").is_file()
    assert "1 ok, 1 failed" in (sweep / "sweep_summary.md").read_text()


@pytest.mark.slow
def test_optuna_study_goes_on_after_a_failed_trial(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_segvn(
        "train",
        "-m",
        "+hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "data=choice(vietnam,synthetic)",  # vietnam trials fail (no data under SEGVN_ROOT)
        *TINY,
        f"hydra.sweep.dir={sweep}",
        root=tmp_path,
    )
    rows = _rows(sweep)
    assert len(rows) == 3, proc.stderr[-3000:]
    statuses = sorted(r["status"] for r in rows)
    assert "failed" in statuses and "ok" in statuses, rows
    assert proc.returncode != 0
    db = sqlite3.connect(sweep / "optuna.db")
    states = sorted(s for (s,) in db.execute("select state from trials"))
    assert states.count("FAIL") == statuses.count("failed") and "COMPLETE" in states
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = max(float(r["val/miou_best"]) for r in rows if r["status"] == "ok")
    assert results["best_value"] == pytest.approx(best, rel=1e-4)
    assert results["best_params"]["data"] == "synthetic"
    assert "Optuna's best trial" in (sweep / "sweep_summary.md").read_text()


@pytest.mark.slow
def test_submitit_local_multirun(tmp_path):
    proc = run_segvn(
        "train", "-m", "hydra/launcher=submitit_local", "model.optimizer.lr=0.01,0.02", *TINY, root=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweeps = list((tmp_path / "outputs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1, "the jobs (other processes) must agree on the sweep directory"
    rows = _rows(sweeps[0])
    assert [(r["job"], r["status"]) for r in rows] == [("0", "ok"), ("1", "ok")]
    for job, lr in (("0", 0.01), ("1", 0.02)):
        assert yaml.safe_load((sweeps[0] / job / "config.yaml").read_text())["model"]["optimizer"]["lr"] == lr
        metrics = json.loads((sweeps[0] / job / "metrics.json").read_text())
        assert math.isfinite(metrics["metrics"]["val/miou_best"])
    assert list((sweeps[0] / ".submitit").iterdir()), "the jobs ran through submitit"
