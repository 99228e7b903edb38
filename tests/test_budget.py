"""Time budgets: ``+budget=...`` ends on time with a decayed learning rate."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from segvn.callbacks import TimeBudgetSchedule
from segvn.errors import ConfigError

from .conftest import run_segvn


def test_schedule_shape() -> None:
    poly = TimeBudgetSchedule(10, "poly", warmup=0.1, power=1.0)
    assert poly.factor(0.0) == 0.0 and poly.factor(0.05) == pytest.approx(0.5 * 0.9)
    assert poly.factor(0.1) == pytest.approx(0.9) and poly.factor(0.55) == pytest.approx(0.45)
    assert poly.factor(1.0) == 0.0 and poly.factor(3.0) == 0.0
    cosine = TimeBudgetSchedule(10, "cosine", warmup=0.0, min_factor=0.01)
    assert cosine.factor(0.0) == pytest.approx(1.0) and cosine.factor(0.5) == pytest.approx(0.505)
    assert cosine.factor(1.0) == pytest.approx(0.01)
    factors = [poly.factor(t / 100) for t in range(10, 101)]
    assert all(a >= b for a, b in zip(factors, factors[1:], strict=False)), "decays monotonically"
    with pytest.raises(ConfigError, match="budget.schedule"):
        TimeBudgetSchedule(10, "step")


def test_validation_runs_at_shares_of_the_budget(compose_cfg) -> None:
    """Validation time counts against the budget: every ``validate_every`` of it, whatever the epoch length."""
    cfg = compose_cfg(["+budget=45min", "budget.minutes=10", "budget.validate_every=0.25"])
    assert cfg.trainer.val_check_interval == {"seconds": 150.0}
    assert cfg.trainer.max_time == {"minutes": 10}
    cfg = compose_cfg(["+budget=45min", "budget.validate_every=null"])
    assert cfg.trainer.val_check_interval is None, "null: Lightning's default, every epoch"
    cpu = compose_cfg(["+budget=45min", "budget.minutes=10", "budget.clock=cpu"])
    assert cpu.trainer.max_time is None, "the callback ends it"
    assert cpu.trainer.val_check_interval == 1 and cpu.trainer.check_val_every_n_epoch is None, (
        "Lightning asks after every batch; the callback answers on the CPU clock"
    )
    assert cpu.callbacks.time_budget.clock == "cpu" and cpu.callbacks.time_budget.validate_every == 0.1
    cpu = compose_cfg(["+budget=45min", "budget.clock=cpu", "budget.validate_every=null"])
    assert cpu.trainer.val_check_interval is None and cpu.trainer.check_val_every_n_epoch == 1, "every epoch"
    with pytest.raises(ConfigError, match="budget.validate_every"):
        TimeBudgetSchedule(10, clock="cpu", validate_every=1.5)
    with pytest.raises(ConfigError, match="budget.clock=sundial"):
        TimeBudgetSchedule(10, clock="sundial")


def test_cpu_clock_counts_work_not_waiting() -> None:
    """The CPU clock advances while this process computes and stands still while it sleeps."""
    from segvn.callbacks.budget import cpu_seconds

    start = cpu_seconds()
    time.sleep(0.4)
    slept = cpu_seconds() - start
    start, t0 = cpu_seconds(), time.process_time()
    x = 0
    while time.process_time() - t0 < 0.3:  # 0.3 s of this process's own CPU time, however busy the machine
        x += 1
    worked = cpu_seconds() - start
    assert slept < 0.1 and 0.28 < worked < 0.6, (slept, worked)


@pytest.mark.slow
def test_budgeted_run_ends_on_time_with_a_decayed_learning_rate(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    budget_s = 12
    proc = run_segvn(
        "train", "+budget=45min", f"budget.minutes={budget_s / 60}", "logger=csv", "data.source.height=48",
        "data.source.width=64", "test=true", f"hydra.run.dir={run_dir}", root=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["epochs"] >= 2, "several epochs fit in the budget"
    assert "test/miou" in summary["metrics"], "the final test ran on the best checkpoint"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    lr = last["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr < 0.25 * 0.001, f"the learning rate of the last epoch is decayed ({lr})"
    logged = pd.read_csv(run_dir / "csv" / "metrics.csv")["lr-SGD"].dropna().to_numpy()
    assert len(logged) > summary["epochs"], "the lr is logged per step: a curve, not a point per epoch"
    assert logged[0] < 0.5 * 0.001, f"the first step logs its warm-up lr, not the initial one ({logged[0]})"
    assert last["callbacks"], "the elapsed budget is saved for a resume"
    elapsed = next(v["elapsed"] for k, v in last["callbacks"].items() if "TimeBudget" in k)
    assert budget_s * 0.5 < elapsed < budget_s + 5


@pytest.mark.slow
def test_cpu_budget_ends_the_run_on_cpu_time(tmp_path: Path) -> None:
    """``budget.clock=cpu``: the callback (not Lightning's wall-clock max_time) ends the run once the
    training process has used the budget's CPU seconds, validates once more, and saves the CPU time used;
    it validates after every ``validate_every`` share of CPU time, not after every (2-batch) epoch."""
    import csv

    run_dir = tmp_path / "run"
    budget_s = 8
    proc = run_segvn(
        "train", "+budget=45min", f"budget.minutes={budget_s / 60}", "budget.clock=cpu", "budget.validate_every=0.25",
        "logger=csv", "data.source.height=48", "data.source.width=64", "trainer.limit_train_batches=2", "test=false",
        f"hydra.run.dir={run_dir}", root=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["global_step"] > 0 and "val/miou" in summary["metrics"]
    rows = list(csv.DictReader(next((run_dir / "csv").rglob("metrics.csv")).read_text().splitlines()))
    validated = [int(r["step"]) for r in rows if r.get("val/miou")]
    epochs = summary["epochs"]
    assert 3 <= len(validated) <= 5 < epochs, f"{len(validated)} validations in {epochs} epochs: {validated}"
    assert validated[-1] >= summary["global_step"] - 1, "the last validation comes when the budget ends"
    assert (
        "validation after every 2 CPU seconds (budget.validate_every=0.25)"
        in (run_dir / "train.log").read_text()
    )
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    elapsed = next(v["elapsed"] for k, v in last["callbacks"].items() if "TimeBudget" in k)
    assert budget_s <= elapsed < budget_s + 5, f"ended on the CPU budget ({elapsed:.1f} CPU s)"
    lr = last["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr < 0.25 * 0.001, f"the learning rate is decayed at the end ({lr})"


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["resnet18_fast", "mobilenetv2_fast"])
def test_fast_recipes_run(experiment: str, tmp_path: Path, request) -> None:
    """Each recipe trains on its budget and tests its best checkpoint; resnet18_fast also with the EMA
    callback, whose checkpoint must hold the average (the raw weights beside it, for a resume)."""
    ema = experiment == "resnet18_fast"
    if experiment == "mobilenetv2_fast":
        request.getfixturevalue("weights_dir")  # skips clearly without ../shared
    run_dir = tmp_path / "run"
    proc = run_segvn(
        "train", f"+experiment={experiment}", "data=synthetic", "budget.minutes=0.15", "logger=csv",
        "data.source.height=48", "data.source.width=64", "data.num_workers=0", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "test=true", f"hydra.run.dir={run_dir}",
        # EMA: validate when each 2-step epoch ends, not on the clock, so the best checkpoint comes after two
        # optimizer steps on any machine (after one, the average is still a copy of the weights)
        *(["+callbacks.ema._target_=segvn.callbacks.EMA", "+callbacks.ema.decay=0.9", "budget.validate_every=null"]
          if ema else []),
        root=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert "test/miou" in summary["metrics"]
    best = next((run_dir / "checkpoints").glob("epoch_*.ckpt"))
    ckpt = torch.load(best, weights_only=False)
    cfg = ckpt["segvn_config"]
    # mobilenetv2_fast: NCHW while training (see the bf16 gradient test), NHWC while validating
    channels_last = True if experiment == "resnet18_fast" else "eval"
    from segvn.utils.cpu import bf16_if_native

    assert cfg["trainer"]["precision"] == bf16_if_native("cpu"), "recipe stored (bf16 where native)"
    assert cfg["callbacks"]["memory_format"]["channels_last"] == channels_last, "recipe stored"
    assert ("current_model_state" in ckpt) == ema
    if experiment == "mobilenetv2_fast":  # norm_eval: the pretrained statistics survive a whole run
        assert cfg["callbacks"]["freeze_encoder"]["norm_eval"] is True
        pretrained = torch.load(request.getfixturevalue("weights_dir") / "mobilenet_v2_imagenet.pth")
        stats = [
            k for k in ckpt["state_dict"] if k.startswith("net.model.encoder.") and k.endswith("running_var")
        ]
        assert stats
        for key in stats:
            assert torch.equal(ckpt["state_dict"][key], pretrained[key.removeprefix("net.model.encoder.")]), (
                key
            )
        # frozen_stages=3: MobileNetV2's features[0:7] (strides 2-8) leave the run as loaded
        assert cfg["callbacks"]["freeze_encoder"]["frozen_stages"] == 3
        last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        encoder = {k.removeprefix("net.model.encoder."): v for k, v in last.items()}
        layer = {k: int(k.split(".")[1]) for k in encoder if k.startswith("features.")}
        frozen = [k for k, i in layer.items() if i < 7 and k in pretrained]
        trained = [k for k, i in layer.items() if i >= 7 and k.endswith("weight")]
        assert frozen and all(torch.equal(encoder[k], pretrained[k]) for k in frozen)
        assert not all(torch.equal(encoder[k], pretrained[k]) for k in trained)
    if ema:
        assert ckpt["global_step"] >= 2, f"best checkpoint after {ckpt['global_step']} steps"
        avg, raw = ckpt["state_dict"], ckpt["current_model_state"]
        key = next(k for k in avg if k.endswith("weight") and avg[k].is_floating_point())
        assert not torch.equal(avg[key], raw[key]), "the checkpoint holds the EMA, not the raw weights"


def test_ema_keeps_the_average_outside_fitting() -> None:
    """Lightning's EMA would reload the raw weights when testing the best checkpoint after fitting."""
    from types import SimpleNamespace

    import lightning as L
    from lightning.pytorch.trainer.states import TrainerFn

    from segvn.callbacks import EMA

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 2)

    module, ema = Tiny(), EMA(decay=0.5)
    trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.FITTING))
    ema.setup(trainer, module, "fit")
    average = {k: torch.zeros_like(v) for k, v in module.state_dict().items()}
    current = {k: torch.ones_like(v) for k, v in module.state_dict().items()}
    ckpt = {
        "state_dict": average,
        "current_model_state": current,
        "averaging_state": {"n_averaged": torch.tensor(3)},
    }
    module.load_state_dict(average)  # what Lightning does before the callbacks' hook
    trainer.state.fn = TrainerFn.TESTING
    ema.on_load_checkpoint(trainer, module, ckpt)
    assert torch.equal(module.layer.weight, torch.zeros(2, 2)), "testing uses the average"
    trainer.state.fn = TrainerFn.FITTING
    ema.on_load_checkpoint(trainer, module, ckpt)
    assert torch.equal(module.layer.weight, torch.ones(2, 2)), "resuming continues from the raw weights"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("experiment", "size"), [("resnet18_fast", (176, 240)), ("mobilenetv2_fast", (352, 480))]
)
def test_fast_recipes_have_right_bf16_gradients(compose_cfg, experiment: str, size: tuple) -> None:
    """The recipe's memory order with bf16 (its precision where the CPU has native bf16) gives the fp32
    gradients up to bf16 rounding.

    With bf16 autocast, torch's CPU backward of dilated depthwise convolutions (MobileNetV2's encoder
    at output stride 16) in channels_last order returns wrong weight gradients; mobilenetv2_fast runs
    NCHW for that reason, and this test fails if it is switched back on (at the recipes' training sizes:
    the fault needs feature maps of about 22x30 or more).
    """
    from hydra.utils import instantiate

    cfg = compose_cfg([f"+experiment={experiment}", "model.net.encoder_weights=null", "trainer=gpu"])
    assert cfg.trainer.precision == "bf16-mixed", "bf16 where it is native (here: the GPU trainer's choice)"
    torch.manual_seed(0)
    net = instantiate(cfg.model.net).eval()  # eval: no dropout, so both passes see the same network
    memory = (
        torch.channels_last if cfg.callbacks.memory_format.channels_last is True else torch.contiguous_format
    )
    x, y = torch.randn(2, 3, *size), torch.randint(0, 8, (2, *size))
    depthwise = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]

    def gradients(bf16: bool) -> list[torch.Tensor]:
        net.zero_grad()
        net.to(memory_format=memory if bf16 else torch.contiguous_format)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x.contiguous(memory_format=memory if bf16 else torch.contiguous_format))
        torch.nn.functional.cross_entropy(out.float(), y).backward()
        return [m.weight.grad.clone() for m in depthwise]

    reference, mixed = gradients(False), gradients(True)
    errors = [float((g - r).norm() / r.norm()) for g, r in zip(mixed, reference, strict=True)]
    assert max(errors) < 0.25, f"{experiment}: bf16 depthwise gradients off by up to {max(errors):.2f}"
