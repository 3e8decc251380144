"""Per-episode ``stats/...`` columns of meta/episodes (f1kit.data.writer) in LeRobot's layout.

LeRobot (0.4-0.6) stores statistics for every feature of every episode and rebuilds
meta/stats.json from them (``aggregate_stats``) after editing a dataset, e.g. deleting episodes;
a feature without per-episode stats then has no normalisation stats and training fails.
"""

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from f1kit.data import Episode, has_video_codec, image_stats, numeric_stats, write_dataset
from tests.f1kit.conftest import coded_episodes

EPISODES = "meta/episodes/chunk-000/file-000.parquet"
# LeRobot's compute_episode_stats: these, with quantiles 0.01 0.10 0.50 0.90 0.99.
STATS = ("min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99")
INDEX = ("timestamp", "frame_index", "episode_index", "index", "task_index")


def _episodes(lengths: list[int], size: int = 8) -> list[Episode]:
    """coded_episodes with noisy pixels and state, so that no statistic is trivially equal."""
    rng = np.random.default_rng(len(lengths))
    out = coded_episodes(lengths, size=size)
    for ep in out:
        frames = ep.arrays["observation.images.cam"]
        frames[:] = rng.integers(0, 256, frames.shape, dtype=np.uint8) // (1 + ep.length % 3)
        ep.arrays["observation.state"] += rng.normal(size=ep.arrays["observation.state"].shape)
    return out


def _episode_stats(root: Path) -> list[dict[str, dict[str, np.ndarray]]]:
    """Per-episode stats as LeRobot's delete_episodes rebuilds them: {feature: {stat: array}}."""
    out = []
    for row in pq.read_table(root / EPISODES).to_pylist():
        stats: dict[str, dict[str, np.ndarray]] = {}
        for column, value in row.items():
            if column.startswith("stats/"):
                feature, stat = column.removeprefix("stats/").rsplit("/", 1)
                stats.setdefault(feature, {})[stat] = np.asarray(value)
        out.append(stats)
    return out


def _aggregate(stats: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Count-weighted mean, pooled std (within + between episodes), min of mins, max of maxes."""
    count = np.array([s["count"][0] for s in stats], dtype=np.float64)
    shape = (-1,) + (1,) * (stats[0]["mean"].ndim)
    w = (count / count.sum()).reshape(shape)
    means = np.stack([s["mean"] for s in stats])
    mean = (w * means).sum(0)
    var = (w * (np.stack([s["std"] for s in stats]) ** 2 + (means - mean) ** 2)).sum(0)
    return {
        "min": np.min([s["min"] for s in stats], axis=0),
        "max": np.max([s["max"] for s in stats], axis=0),
        "mean": mean,
        "std": np.sqrt(var),
        "count": np.array([int(count.sum())]),
    }


IMAGE_MODES = [
    "png",
    pytest.param(
        "video", marks=pytest.mark.skipif(not has_video_codec(), reason="needs PyAV with libx264")
    ),
]


@pytest.mark.parametrize("images", IMAGE_MODES)
def test_every_feature_has_episode_stats_in_lerobot_layout(tmp_path: Path, images: str) -> None:
    root = write_dataset(tmp_path / "ds", _episodes([4, 7, 1, 3]), fps=10, images=images)
    features = json.loads((root / "meta/info.json").read_text())["features"]
    schema = pq.read_schema(root / EPISODES)
    for feature, spec in features.items():
        for stat in STATS:
            column = f"stats/{feature}/{stat}"
            assert column in schema.names, column
            if stat == "count":
                assert schema.field(column).type == pa.list_(pa.int64()), column
            elif spec["dtype"] in ("image", "video"):
                # LeRobot writes each (3, 1, 1) array with .tolist(): nested lists of doubles.
                deep = pa.list_(pa.list_(pa.list_(pa.float64())))
                assert schema.field(column).type == deep, column
            else:
                assert schema.field(column).type == pa.list_(pa.float64()), column
    assert {c.split("/")[1] for c in schema.names if c.startswith("stats/")} == set(features)
    lengths = [4, 7, 1, 3]
    for e, stats in enumerate(_episode_stats(root)):
        for feature, spec in features.items():
            s = stats[feature]
            assert s["count"].tolist() == [lengths[e]], (feature, e)
            shape = (3, 1, 1) if spec["dtype"] in ("image", "video") else tuple(spec["shape"])
            for stat in STATS[:4] + STATS[5:]:
                assert s[stat].shape == shape, (feature, stat)
            ordered = [s[k] for k in ("min", "q01", "q10", "q50", "q90", "q99", "max")]
            assert all(np.all(a <= b + 1e-12) for a, b in itertools.pairwise(ordered)), feature
        img = stats["observation.images.cam"]
        assert img["min"].min() >= 0.0 and img["max"].max() <= 1.0  # pixels scaled to [0, 1]
        assert stats["episode_index"]["mean"].tolist() == [float(e)]


def test_episode_stats_aggregate_to_stats_json(tmp_path: Path) -> None:
    episodes = _episodes([4, 7, 1, 3])
    root = write_dataset(tmp_path / "ds", episodes, fps=10)
    stats = json.loads((root / "meta/stats.json").read_text())
    per_episode = _episode_stats(root)
    assert set(stats) == set(per_episode[0])
    for feature, want in stats.items():
        got = _aggregate([s[feature] for s in per_episode])
        for stat, value in got.items():
            np.testing.assert_allclose(value, want[stat], rtol=1e-9, atol=1e-12, err_msg=feature)
    # The per-episode image stats are those of the episode's own pixels.
    pixels = episodes[1].arrays["observation.images.cam"].reshape(-1, 3) / 255.0
    img = per_episode[1]["observation.images.cam"]
    np.testing.assert_allclose(img["std"].ravel(), pixels.std(0), rtol=1e-9)
    np.testing.assert_allclose(img["q90"].ravel(), np.quantile(pixels, 0.9, axis=0), rtol=1e-9)


def test_deleting_an_episode_then_aggregating_matches_writing_without_it(tmp_path: Path) -> None:
    # What lerobot-edit-dataset delete_episodes does: aggregate the kept episodes' stats.
    episodes = _episodes([5, 2, 6])
    full = write_dataset(tmp_path / "full", episodes, fps=10)
    kept = write_dataset(tmp_path / "kept", [episodes[0], episodes[2]], fps=10)
    want = json.loads((kept / "meta/stats.json").read_text())
    per_episode = _episode_stats(full)
    for feature in ("observation.state", "action", "observation.images.cam", "frame_index"):
        got = _aggregate([per_episode[0][feature], per_episode[2][feature]])
        for stat, value in got.items():
            np.testing.assert_allclose(value, want[feature][stat], rtol=1e-9, err_msg=feature)
        # Counter-case: keeping the deleted episode gives other statistics.
        wrong = _aggregate([s[feature] for s in per_episode])
        assert not np.allclose(wrong["mean"], want[feature]["mean"]), feature


@given(
    t=st.integers(1, 4),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    top=st.sampled_from([1, 2, 17, 256]),
)
def test_image_stats_equal_numpy_over_the_pixels(t: int, h: int, w: int, seed: int, top: int):
    frames = np.random.default_rng(seed).integers(0, top, (t, h, w, 3), dtype=np.uint8)
    pixels = frames.reshape(-1, 3) / 255.0
    got = image_stats(frames)
    want = numeric_stats(pixels)
    assert set(got) == set(STATS) and got["count"] == [t]
    for stat in STATS:
        if stat != "count":
            assert np.asarray(got[stat]).shape == (3, 1, 1)
            np.testing.assert_allclose(
                np.asarray(got[stat]).ravel(), want[stat], rtol=1e-12, atol=1e-12, err_msg=stat
            )
    np.testing.assert_allclose(want["q10"], np.quantile(pixels, 0.1, axis=0), rtol=1e-12)
