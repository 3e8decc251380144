"""Sinusoidal time features: unit circles, geometric periods 4e-3 .. 4 measured from the output."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flow import sinusoidal_time_features


@given(dim=st.integers(1, 32).map(lambda k: 2 * k), tau=st.floats(0, 1))
def test_every_sin_cos_pair_lies_on_the_unit_circle(dim: int, tau: float):
    f = sinusoidal_time_features(torch.tensor([tau], dtype=torch.float64), dim)
    sin, cos = f[:, : dim // 2], f[:, dim // 2 :]
    torch.testing.assert_close(sin**2 + cos**2, torch.ones_like(sin))


def test_periods_measured_from_the_slope_at_zero_are_geometric_from_4e3_to_4():
    dim, h = 16, 1e-9
    tau = torch.tensor([0.0, h], dtype=torch.float64)
    f = sinusoidal_time_features(tau, dim)
    assert torch.equal(f[0], torch.cat([torch.zeros(dim // 2), torch.ones(dim // 2)]).double())
    # d/dtau sin(2 pi tau / p) at 0 is 2 pi / p: read each period off the output.
    periods = 2 * math.pi * h / f[1, : dim // 2]
    assert periods[0].item() == pytest.approx(4e-3, rel=1e-6)
    assert periods[-1].item() == pytest.approx(4.0, rel=1e-6)
    ratios = periods[1:] / periods[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 1000 ** (1 / 7)))


def test_features_separate_nearby_times():
    tau = torch.linspace(0, 1, 1001)  # the finest step a 1000-step sampler would take
    f = sinusoidal_time_features(tau, 64)
    d = torch.cdist(f, f) + torch.eye(1001) * 1e9
    assert d.min() > 0.1
    # Counter-case: with only long periods, neighbours 1e-3 apart become nearly identical.
    f_long = sinusoidal_time_features(tau, 64, min_period=2.0)
    d_long = torch.cdist(f_long, f_long) + torch.eye(1001) * 1e9
    assert d_long.min() < 0.05


def test_bfloat16_time_is_promoted():
    f = sinusoidal_time_features(torch.tensor([0.3], dtype=torch.bfloat16), 8)
    assert f.dtype == torch.float32


@pytest.mark.parametrize(
    ("dim", "kwargs", "match"),
    [(7, {}, "dim"), (0, {}, "dim"), (8, {"min_period": 5.0}, "period")],
)
def test_bad_arguments_are_named(dim: int, kwargs: dict, match: str):
    with pytest.raises(ValueError, match=match):
        sinusoidal_time_features(torch.zeros(2), dim, **kwargs)
