import itertools
import math

import pytest
import torch
from torch import nn

from f1kit.train import TrainSettings, build_optimizer, build_scheduler, lr_factor, trainable_groups


def test_warmup_then_cosine_at_known_steps() -> None:
    # 11 steps, 2 warmup: the cosine runs over steps 2..10, its midpoint is step 6.
    s = TrainSettings(steps=11, batch_size=1, warmup_steps=2, min_lr_ratio=0.1)
    expected = {0: 0.5, 1: 1.0, 2: 1.0, 6: 0.55, 10: 0.1}
    for step, value in expected.items():
        assert lr_factor(step, s) == pytest.approx(value, abs=1e-12), step
    quarter = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))  # step 4: 2/8 of the way
    assert lr_factor(4, s) == pytest.approx(quarter, abs=1e-12)
    values = [lr_factor(k, s) for k in range(11)]
    assert all(a >= b for a, b in itertools.pairwise(values[2:]))


def test_constant_and_no_warmup() -> None:
    s = TrainSettings(steps=5, batch_size=1, warmup_steps=4, schedule="constant")
    assert [lr_factor(k, s) for k in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    s = TrainSettings(steps=3, batch_size=1, min_lr_ratio=0.0)
    assert [lr_factor(k, s) for k in range(3)] == pytest.approx([1.0, 0.5, 0.0])
    assert lr_factor(0, TrainSettings(steps=1, batch_size=1)) == 1.0


def test_each_group_scales_its_own_base_lr() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    s = TrainSettings(steps=6, batch_size=1, lr=1e-3, warmup_steps=2)
    groups = [
        {"params": model[0].parameters(), "name": "a"},
        {"params": model[1].parameters(), "name": "b", "lr": 1e-2},
    ]
    opt = build_optimizer(model, s, groups)
    sched = build_scheduler(opt, s)
    for k in range(6):
        f = lr_factor(k, s)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3 * f, 1e-2 * f])
        opt.step()
        sched.step()
    assert [g["name"] for g in opt.param_groups] == ["a", "b"]
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)


def test_frozen_parameters_never_enter_the_optimizer() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[0].requires_grad_(False)
    (group,) = trainable_groups(model, None)
    assert {id(p) for p in group["params"]} == {id(p) for p in model[1].parameters()}
    # Listing the frozen layer anyway drops it; its group stays (empty) so the names are stable.
    groups = trainable_groups(
        model, [{"params": model[0].parameters()}, {"params": model[1].parameters()}]
    )
    assert [len(g["params"]) for g in groups] == [0, 2]
    assert [g["name"] for g in groups] == ["group0", "group1"]


def test_group_errors() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"in no group.*1\.weight"):
        trainable_groups(model, [{"params": model[0].parameters()}])
    with pytest.raises(ValueError, match="more than one group"):
        trainable_groups(model, [{"params": model.parameters()}, {"params": model.parameters()}])
    with pytest.raises(ValueError, match="not in model"):
        trainable_groups(model, [{"params": [*model.parameters(), nn.Parameter(torch.ones(1))]}])
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        trainable_groups(model, None)
