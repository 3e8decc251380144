"""Weighted sampling across tasks/datasets (f1kit.data.sampling)."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from f1kit.data import PI0_ALPHA, WeightedGroupSampler, group_weights


def test_the_three_modes_on_known_sizes() -> None:
    counts = np.array([100, 1, 0])
    np.testing.assert_allclose(group_weights(counts, "uniform"), [0.5, 0.5, 0.0])
    np.testing.assert_allclose(group_weights(counts, "proportional"), [100 / 101, 1 / 101, 0.0])
    big = 100**PI0_ALPHA
    np.testing.assert_allclose(group_weights(counts), [big / (big + 1), 1 / (big + 1), 0.0])
    assert PI0_ALPHA == 0.43


@given(st.lists(st.integers(1, 10_000), min_size=2, max_size=12), st.floats(0.05, 1.0))
def test_power_weights_interpolate_between_uniform_and_proportional(
    counts: list[int], alpha: float
) -> None:
    c = np.array(counts)
    w = group_weights(c, "power", alpha)
    assert abs(w.sum() - 1) < 1e-12
    order = np.argsort(c, kind="stable")
    assert np.all(np.diff(w[order]) >= -1e-15)  # bigger groups never get less
    # Flatter than proportional: the largest group's share does not exceed its proportional share.
    assert w.max() <= group_weights(c, "proportional").max() + 1e-12


def test_sampler_frequencies_match_the_weights() -> None:
    groups = np.repeat([0, 1, 2], [900, 90, 10])
    n = 40_000
    for mode in ("uniform", "proportional", "power"):
        sampler = WeightedGroupSampler(groups, mode=mode, num_samples=n, seed=0)
        drawn = np.bincount(groups[list(sampler)], minlength=3) / n
        expected = group_weights(np.array([900, 90, 10]), mode)
        # 5 binomial standard deviations: fails only if the weighting is wrong.
        tol = 5 * np.sqrt(expected * (1 - expected) / n)
        assert np.all(np.abs(drawn - expected) <= tol + 1e-9), (mode, drawn, expected)
    # Counter-case: uniform and proportional draws are far apart on this imbalance.
    u = np.bincount(
        groups[list(WeightedGroupSampler(groups, "uniform", num_samples=n))], minlength=3
    )
    assert u[2] / n > 0.3


def test_members_of_a_group_are_equally_likely_and_seeds_repeat() -> None:
    groups = np.array([0] * 5 + [1] * 3)
    draws = list(WeightedGroupSampler(groups, "uniform", num_samples=30_000, seed=3))
    freq = np.bincount(draws, minlength=8) / 30_000
    np.testing.assert_allclose(freq[:5], 0.1, atol=0.012)
    np.testing.assert_allclose(freq[5:], 1 / 6, atol=0.015)
    a = list(WeightedGroupSampler(groups, num_samples=50, seed=7))
    b = list(
        WeightedGroupSampler(groups, num_samples=50, generator=torch.Generator().manual_seed(7))
    )
    c = list(WeightedGroupSampler(groups, num_samples=50, seed=8))
    assert a == b and a != c and len(a) == 50


def test_errors_are_named() -> None:
    with pytest.raises((ValueError, TypeError), match="mode"):
        group_weights(np.array([1, 2]), "square")
    with pytest.raises(ValueError, match="alpha"):
        group_weights(np.array([1, 2]), "power", alpha=2.0)
    with pytest.raises(ValueError, match="counts"):
        group_weights(np.array([0, 0]))
    with pytest.raises(ValueError, match="num_samples"):
        WeightedGroupSampler(np.array([0, 1]), num_samples=0)
