"""Evaluation during a stage: records, the best weights, early stopping, exact resume."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from f1kit.train import (
    PeriodicEval,
    TrainSettings,
    best_weights,
    load_model_weights,
    read_metrics,
    train_stage,
)
from tests.f1kit.train.toy import Net, Regression, make_loss

SETTINGS = TrainSettings(steps=12, batch_size=8, lr=0.02, checkpoint_every=100, log_every=1)


def scripted(scores: list[float], calls: list[int] | None = None):
    """An evaluation returning scores[i] at its i-th evaluation (step = 3 * (i + 1)); it draws
    from every global generator, which must not change the training run."""

    def run(step: int) -> dict[str, float]:
        if calls is not None:
            calls.append(step)
        torch.rand(3), np.random.rand(), random.random()
        return {"success": scores[step // 3 - 1], "val_loss": float(step)}

    return run


def test_best_weights_are_kept_and_training_is_untouched(tmp_path: Path) -> None:
    plain = train_stage(
        Net(), make_loss(noise=0.1), Regression(), SETTINGS, tmp_path / "plain", progress=False
    )
    calls: list[int] = []
    net, seen = Net(), {}
    scores = scripted([0.2, 0.6, 0.6, 0.4], calls)

    def run(step: int) -> dict[str, float]:
        seen[step] = {k: v.clone() for k, v in net.state_dict().items()}
        return scores(step)

    spec = PeriodicEval(every=3, run=run, select="success")
    out = tmp_path / "evaluated"
    result = train_stage(
        net, make_loss(noise=0.1), Regression(), SETTINGS, out, progress=False, evaluation=spec
    )
    assert calls == [3, 6, 9, 12] and result.steps == 12
    # Evaluation draws from the global generators: training must not notice.
    assert [r["loss"] for r in read_metrics(out / "metrics.jsonl")] == [
        r["loss"] for r in read_metrics(plain.metrics_path)
    ]
    records = read_metrics(out / "evals.jsonl")
    assert [(r["step"], r["success"]) for r in records] == [(3, 0.2), (6, 0.6), (9, 0.6), (12, 0.4)]
    weights, meta = best_weights(out)
    assert meta["step"] == 6  # ties keep the earlier step
    # The best weights are exactly the ones evaluated at step 6, not the final ones.
    kept = load_model_weights(weights)
    assert all(torch.equal(kept[k], seen[6][k]) for k in seen[6])
    final = load_model_weights(result.checkpoint / "model.safetensors")
    assert all(torch.equal(final[k], seen[12][k]) for k in seen[12])
    assert not all(torch.equal(final[k], kept[k]) for k in kept)


def test_patience_stops_early_and_a_loss_is_minimised(tmp_path: Path) -> None:
    spec = PeriodicEval(every=3, run=scripted([0.5, 0.4, 0.3, 0.9]), select="success", patience=2)
    result = train_stage(
        Net(), make_loss(), Regression(), SETTINGS, tmp_path / "a", progress=False, evaluation=spec
    )
    assert result.steps == 9 and result.checkpoint.name == "step-0000009"
    assert best_weights(tmp_path / "a")[1]["step"] == 3
    by_loss = PeriodicEval(every=3, run=scripted([0.1] * 4), select="val_loss", minimize=True)
    train_stage(
        Net(),
        make_loss(),
        Regression(),
        SETTINGS,
        tmp_path / "b",
        progress=False,
        evaluation=by_loss,
    )
    assert best_weights(tmp_path / "b")[1]["step"] == 3  # val_loss = step: the first is lowest
    ties = PeriodicEval(
        every=3, run=scripted([0.5, 0.5, 0.5, 0.5]), select="success", tiebreak="neg_step"
    )
    with_neg = PeriodicEval(
        every=3,
        run=lambda step: {**ties.run(step), "neg_step": -float(step)},
        select="success",
        tiebreak="neg_step",
    )
    train_stage(Net(), make_loss(), Regression(), SETTINGS, tmp_path / "c", progress=False,
                evaluation=with_neg)  # fmt: skip
    assert best_weights(tmp_path / "c")[1]["step"] == 12  # equal success: the lowest tiebreak


def test_a_run_killed_while_evaluating_resumes_to_the_same_choice(tmp_path: Path) -> None:
    scores = [0.1, 0.3, 0.7, 0.2]
    full = tmp_path / "full"
    train_stage(
        Net(),
        make_loss(noise=0.1),
        Regression(),
        SETTINGS,
        full,
        progress=False,
        evaluation=PeriodicEval(every=3, run=scripted(scores), select="success"),
    )
    inner = scripted(scores)

    def dies_at_9(step: int) -> dict[str, float]:
        if step == 9:
            raise KeyboardInterrupt  # after the step-9 checkpoint, before its record
        return inner(step)

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train_stage(
            Net(),
            make_loss(noise=0.1),
            Regression(),
            SETTINGS,
            cut,
            progress=False,
            evaluation=PeriodicEval(every=3, run=dies_at_9, select="success"),
        )
    assert [r["step"] for r in read_metrics(cut / "evals.jsonl")] == [3, 6]
    calls: list[int] = []
    result = train_stage(
        Net(seed=5),
        make_loss(noise=0.1),
        Regression(),
        SETTINGS,
        cut,
        resume=True,
        progress=False,
        evaluation=PeriodicEval(every=3, run=scripted(scores, calls), select="success"),
    )
    assert result.resumed_from == 9 and calls == [9, 12]
    assert read_metrics(cut / "evals.jsonl") == read_metrics(full / "evals.jsonl")
    assert read_metrics(cut / "metrics.jsonl") == [
        {k: v for k, v in r.items() if k not in ("samples_per_s", "elapsed_s")}
        | {"samples_per_s": c["samples_per_s"], "elapsed_s": c["elapsed_s"]}
        for r, c in zip(
            read_metrics(full / "metrics.jsonl"), read_metrics(cut / "metrics.jsonl"), strict=True
        )
    ]
    a, b = best_weights(full), best_weights(cut)
    assert a[1] == b[1] and a[1]["step"] == 9
    wa, wb = load_model_weights(a[0]), load_model_weights(b[0])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_stopped_stage_stays_stopped_on_resume(tmp_path: Path) -> None:
    spec = PeriodicEval(every=3, run=scripted([0.5, 0.1, 0.1, 0.9]), select="success", patience=2)
    out = tmp_path / "s"
    train_stage(Net(), make_loss(), Regression(), SETTINGS, out, progress=False, evaluation=spec)
    again = train_stage(
        Net(),
        make_loss(),
        Regression(),
        SETTINGS,
        out,
        resume=True,
        progress=False,
        evaluation=spec,
    )
    assert again.steps == 9 and len(read_metrics(out / "evals.jsonl")) == 3


def test_bad_specs_and_missing_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="every"):
        PeriodicEval(every=0, run=scripted([]), select="success")
    with pytest.raises(ValueError, match="patience"):
        PeriodicEval(every=1, run=scripted([]), select="success", patience=0)
    spec = PeriodicEval(every=3, run=scripted([0.1] * 4), select="succes")
    with pytest.raises(KeyError, match="'succes'"):
        train_stage(
            Net(),
            make_loss(),
            Regression(),
            SETTINGS,
            tmp_path / "k",
            progress=False,
            evaluation=spec,
        )
    assert json.loads(json.dumps(best_weights(tmp_path / "nothing"))) is None
