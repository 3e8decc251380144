"""Feature statistics (f1kit.data.stats); normalising with them: test_processor.py."""

import numpy as np

from f1kit.data import image_stats, numeric_stats


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
