import math
from pathlib import Path

import numpy as np
import pytest
import torch

from f1kit.train import (
    TrainSettings,
    derive_seed,
    load_latest,
    load_model_weights,
    lr_factor,
    read_metrics,
    train_stage,
)
from tests.f1kit.train.toy import Net, Regression, make_loss


def losses(path: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(path)]


def test_frozen_weights_stay_and_the_checkpoint_holds_everything(tmp_path: Path) -> None:
    model = Net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = TrainSettings(steps=20, batch_size=8, lr=0.05, weight_decay=0.1, checkpoint_every=10)
    result = train_stage(model, make_loss(), Regression(), settings, tmp_path, progress=False)
    after = model.state_dict()
    # Weight decay would shrink the frozen layer too, were it in the optimizer.
    assert torch.equal(after["frozen.weight"], before["frozen.weight"])
    assert torch.equal(after["frozen.bias"], before["frozen.bias"])
    assert not torch.equal(after["hidden.weight"], before["hidden.weight"])
    assert result.steps == 20 and result.checkpoint.name == "step-0000020"
    saved = load_model_weights(result.checkpoint / "model.safetensors")
    assert saved.keys() == after.keys()
    assert all(torch.equal(saved[k], after[k]) for k in after)
    state = load_latest(tmp_path).trainer_state()  # torch.load(weights_only=True)
    assert state["step"] == 20 and state["sampler"] == {
        "epoch": 2,
        "position": 32,
        "num_samples": 64,
    }
    assert len(state["optimizer"]["state"]) == 4  # hidden and out, weight and bias


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_precision_runs_autocast_and_learns(tmp_path: Path, precision: str) -> None:
    dtypes = []
    base = make_loss()

    def loss_fn(model, batch, generator):
        dtypes.append(model.hidden(batch["x"]).dtype)
        return base(model, batch, generator)

    model = Net()
    settings = TrainSettings(steps=60, batch_size=16, lr=0.03, precision=precision, log_every=5)
    result = train_stage(model, loss_fn, Regression(), settings, tmp_path, progress=False)
    assert set(dtypes) == {torch.bfloat16 if precision == "bf16" else torch.float32}
    assert model.hidden.weight.dtype == torch.float32  # fp32 master weights
    curve = losses(result.metrics_path)
    assert curve[-1] < 0.2 * curve[0]
    assert result.final_loss == curve[-1]


def test_records_average_the_steps_since_the_last_one(tmp_path: Path) -> None:
    seen = []
    base = make_loss()

    def loss_fn(model, batch, generator):
        loss, metrics = base(model, batch, generator)
        seen.append(loss.item())
        return loss, {**metrics, "const": 2.0}

    settings = TrainSettings(steps=20, batch_size=4, lr=0.01, log_every=5, checkpoint_every=7)
    train_stage(Net(), loss_fn, Regression(), settings, tmp_path, progress=False)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [5, 7, 10, 14, 15, 20]
    previous = 0
    for r in records:
        assert r["loss"] == pytest.approx(sum(seen[previous : r["step"]]) / (r["step"] - previous))
        assert r["mse_loss"] == pytest.approx(r["loss"])
        assert r["const"] == 2.0
        assert r["lr/all"] == pytest.approx(0.01 * lr_factor(r["step"] - 1, settings))
        assert r["samples_per_s"] > 0 and r["elapsed_s"] > 0 and r["grad_norm"] > 0
        previous = r["step"]


def test_draws_are_seeded_from_seed_and_step_for_the_whole_batch(tmp_path: Path) -> None:
    draws = []

    def loss_fn(model, batch, step_draws):
        assert (step_draws.start, step_draws.stop, step_draws.total) == (0, 4, 4)
        draws.append(torch.rand(3, generator=step_draws.generator))
        return make_loss()(model, batch, step_draws)

    train_stage(
        Net(),
        loss_fn,
        Regression(),
        TrainSettings(steps=3, batch_size=4, seed=5),
        tmp_path,
        progress=False,
    )
    for step, got in enumerate(draws):
        expected = torch.rand(3, generator=torch.Generator().manual_seed(derive_seed(5, 0, step)))
        assert torch.equal(got, expected)
    assert not torch.equal(draws[0], draws[1])


def test_same_batches_with_workers_and_groups_with_own_lr(tmp_path: Path) -> None:
    def run(out: Path, workers: int) -> list[dict]:
        model = Net(dropout=0.2)
        groups = [
            {"params": model.hidden.parameters(), "name": "hidden", "lr": 0.02},
            {"params": model.out.parameters(), "name": "out"},
        ]
        settings = TrainSettings(steps=6, batch_size=8, lr=0.01, log_every=1, num_workers=workers)
        train_stage(
            model,
            make_loss(noise=0.1),
            Regression(),
            settings,
            out,
            param_groups=groups,
            progress=False,
        )
        return read_metrics(out / "metrics.jsonl")

    inline, workers = run(tmp_path / "a", 0), run(tmp_path / "b", 2)
    assert [r["loss"] for r in inline] == [r["loss"] for r in workers]
    for r in inline:
        factor = lr_factor(r["step"] - 1, TrainSettings(steps=6, batch_size=8))
        assert r["lr/hidden"] == pytest.approx(0.02 * factor)
        assert r["lr/out"] == pytest.approx(0.01 * factor)


def test_resume_after_an_exception_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    settings = TrainSettings(
        steps=12, batch_size=8, lr=0.02, warmup_steps=3, checkpoint_every=4, log_every=1
    )
    train_stage(
        Net(dropout=0.3),
        make_loss(noise=0.1),
        Regression(),
        settings,
        tmp_path / "full",
        progress=False,
    )

    calls = 0
    base = make_loss(noise=0.1)

    def crashing(model, batch, generator):
        nonlocal calls
        calls += 1
        if calls == 7:
            raise KeyboardInterrupt  # after the step-4 checkpoint, with steps 5 and 6 logged
        return base(model, batch, generator)

    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train_stage(Net(dropout=0.3), crashing, Regression(), settings, out, progress=False)
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    # Another initial model: every weight must come from the checkpoint.
    result = train_stage(
        Net(dropout=0.3, seed=9), base, Regression(), settings, out, resume=True, progress=False
    )
    assert result.resumed_from == 4
    full, cut = (
        read_metrics(tmp_path / "full" / "metrics.jsonl"),
        read_metrics(out / "metrics.jsonl"),
    )
    assert [r["step"] for r in cut] == list(range(1, 13))
    assert [r["loss"] for r in cut] == [r["loss"] for r in full]
    # Finished: resuming again trains nothing and reports the saved loss.
    again = train_stage(Net(), base, Regression(), settings, out, resume=True, progress=False)
    assert again.steps == 12 and again.final_loss == cut[-1]["loss"] and again.resumed_from == 12
    assert len(read_metrics(out / "metrics.jsonl")) == 12


def test_refusals_and_errors(tmp_path: Path) -> None:
    settings = TrainSettings(steps=4, batch_size=4, checkpoint_every=2)
    train_stage(Net(), make_loss(), Regression(), settings, tmp_path / "done", progress=False)
    with pytest.raises(FileExistsError, match="resume=True"):
        train_stage(Net(), make_loss(), Regression(), settings, tmp_path / "done", progress=False)

    def vector_loss(model, batch, generator):
        return (model(batch["x"]) - batch["y"]) ** 2, {}

    with pytest.raises(ValueError, match="scalar loss"):
        train_stage(Net(), vector_loss, Regression(), settings, tmp_path / "v", progress=False)
    with pytest.raises(TypeError, match="loss_fn"):
        train_stage(
            Net(),
            lambda m, b, g: m(b["x"]).mean(),
            Regression(),
            settings,
            tmp_path / "t",
            progress=False,
        )
    model = Net()
    with pytest.raises(ValueError, match="in no group"):
        groups = [{"params": model.hidden.parameters()}]
        train_stage(model, make_loss(), Regression(), settings, tmp_path / "g", param_groups=groups)
    with pytest.raises(ValueError, match="sample_weights"):
        weights = np.ones(63)
        train_stage(
            model, make_loss(), Regression(), settings, tmp_path / "s", sample_weights=weights
        )


def test_divergence_stops_before_a_checkpoint_is_written(tmp_path: Path) -> None:
    base = make_loss()

    def exploding(model, batch, generator):
        loss, metrics = base(model, batch, generator)
        return (loss * math.inf if exploding.step >= 3 else loss), metrics

    exploding.step = 0

    def counting(model, batch, generator):
        exploding.step += 1
        return exploding(model, batch, generator)

    settings = TrainSettings(steps=10, batch_size=4, checkpoint_every=2, log_every=1)
    with pytest.raises(FloatingPointError, match="step 3"):
        train_stage(Net(), counting, Regression(), settings, tmp_path, progress=False)
    assert load_latest(tmp_path).step == 2


def test_progress_bar_shows_steps_and_throughput(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    settings = TrainSettings(steps=5, batch_size=4, log_every=1)
    train_stage(Net(), make_loss(), Regression(), settings, tmp_path, name="align")
    out = capsys.readouterr().out
    assert "align" in out and "5/5" in out and "samples/s" in out


def test_tensorboard_events_only_when_installed(tmp_path: Path) -> None:
    train_stage(
        Net(),
        make_loss(),
        Regression(),
        TrainSettings(steps=2, batch_size=4),
        tmp_path,
        progress=False,
    )
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        assert not (tmp_path / "tb").exists()
    else:
        assert any((tmp_path / "tb").glob("events.out.tfevents.*"))
