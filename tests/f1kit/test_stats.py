"""Feature statistics and the normaliser (f1kit.data.stats)."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from f1kit.data import Normalizer, image_stats, numeric_stats


def test_numeric_stats_match_numpy() -> None:
    x = np.random.default_rng(0).normal(size=(500, 3)) * [1, 10, 100]
    s = numeric_stats(x)
    np.testing.assert_allclose(s["mean"], x.mean(0))
    np.testing.assert_allclose(s["std"], x.std(0))
    np.testing.assert_allclose(s["q99"], np.quantile(x, 0.99, axis=0))
    assert s["count"] == [500]


def test_image_stats_are_per_channel_in_unit_range() -> None:
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    frames[..., 1] = 255
    s = image_stats(frames)
    assert np.asarray(s["mean"]).shape == (3, 1, 1)
    assert np.asarray(s["mean"]).ravel().tolist() == [0.0, 1.0, 0.0]


@given(
    mode=st.sampled_from(["mean_std", "min_max", "quantile", "identity"]),
    seed=st.integers(0, 2**16),
)
def test_normaliser_inverts_and_maps_to_unit_scale(mode: str, seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=(64, 3)) * [1, 50, 0.01] + [0, -3, 7]
    norm = Normalizer.from_stats(numeric_stats(x), mode)
    t = torch.tensor(x, dtype=torch.float32)
    y = norm(t)
    torch.testing.assert_close(norm.inverse(y), t, rtol=1e-5, atol=1e-4)
    if mode == "mean_std":
        torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    if mode == "min_max":
        torch.testing.assert_close(y.amin(0), -torch.ones(3), atol=1e-4, rtol=0)
        torch.testing.assert_close(y.amax(0), torch.ones(3), atol=1e-4, rtol=0)


def test_constant_dimension_maps_to_zero_not_inf() -> None:
    x = np.stack([np.arange(10.0), np.full(10, 4.0)], 1)
    norm = Normalizer.from_stats(numeric_stats(x), "mean_std")
    y = norm(torch.tensor(x, dtype=torch.float32))
    assert torch.isfinite(y).all() and (y[:, 1] == 0).all()
    assert (norm.inverse(y)[:, 1] == 4.0).all()
    with pytest.raises((ValueError, TypeError), match=r"normalization|mode"):
        Normalizer.from_stats(numeric_stats(x), "zscore")
