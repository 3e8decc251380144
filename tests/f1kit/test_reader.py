"""LeRobotDataset reader (f1kit.data.reader): round trips, foreign datasets, lazy decoding."""

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from f1kit.data import DatasetFormatError, Episode, has_video_codec, read_dataset, write_dataset
from tests.f1kit.conftest import coded_episodes


def assert_same_episodes(a: list[Episode], b: list[Episode], atol: float = 0.0) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.task == y.task and set(x.arrays) == set(y.arrays)
        for key in x.arrays:
            assert x.arrays[key].shape == y.arrays[key].shape, key
            diff = np.abs(x.arrays[key].astype(np.float64) - y.arrays[key].astype(np.float64))
            assert diff.mean() <= atol, (key, diff.mean())


# Each example writes and reads a dataset folder (~20 ms): 25 examples keep this under a second.
@settings(max_examples=25)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    dims=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    seed=st.integers(0, 2**16),
)
def test_png_round_trip_is_exact(lengths: list[int], dims: tuple[int, int], seed: int) -> None:
    import tempfile

    rng = np.random.default_rng(seed)
    episodes = [
        Episode(
            f"task {i % 3}",
            {
                "observation.state": rng.normal(size=(n, dims[0])).astype(np.float32),
                "action": rng.normal(size=(n, dims[1])).astype(np.float32),
                "observation.images.a": rng.integers(0, 256, (n, 5, 7, 3), dtype=np.uint8),
            },
        )
        for i, n in enumerate(lengths)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        ds = read_dataset(write_dataset(Path(tmp) / "ds", episodes, fps=5))
        assert ds.num_episodes == len(lengths) and len(ds) == sum(lengths)
        assert_same_episodes(episodes, [ds.episode(i) for i in range(ds.num_episodes)])


def test_round_trip_across_several_data_files_and_lazy_decoding(tmp_path: Path) -> None:
    episodes = coded_episodes([4, 9, 1, 6])
    root = write_dataset(tmp_path / "ds", episodes, fps=10, data_file_mb=1e-4)
    assert len(list((root / "data").glob("*/*.parquet"))) == 4
    eager, lazy = read_dataset(root), read_dataset(root, decode="lazy")
    assert_same_episodes(episodes, [eager.episode(i) for i in range(4)])
    rows = np.array([0, 5, 19, 13])
    np.testing.assert_array_equal(
        eager.frames("observation.images.cam", rows), lazy.frames("observation.images.cam", rows)
    )


@pytest.mark.skipif(not has_video_codec(), reason="needs PyAV with libx264")
def test_video_round_trip_is_close(tmp_path: Path) -> None:
    # Smooth frames: H.264 at crf 18 keeps them within a couple of grey levels.
    n = 30
    ramp = np.linspace(0, 200, 32, dtype=np.float32)
    frames = [
        np.stack([ramp[None, :] + 2 * t + 0 * ramp[:, None]] * 3, -1).clip(0, 255).astype(np.uint8)
        for t in range(n)
    ]
    arrays = {"action": np.arange(n, dtype=np.float32)[:, None]}
    episodes = [
        Episode("a", {**arrays, "observation.images.c": np.stack(frames)[:n]}),
        Episode("b", {**arrays, "observation.images.c": np.stack(frames)[::-1].copy()}),
    ]
    root = write_dataset(tmp_path / "v", episodes, fps=10, images="video")
    info = json.loads((root / "meta/info.json").read_text())
    assert info["features"]["observation.images.c"]["dtype"] == "video"
    assert (root / "videos/observation.images.c/chunk-000/file-000.mp4").is_file()
    ds = read_dataset(root)
    assert_same_episodes(episodes, [ds.episode(0), ds.episode(1)], atol=3.0)
    # Counter-case: the episodes differ by far more than the tolerance, so the cut is checked.
    with pytest.raises(AssertionError):
        assert_same_episodes(episodes, [ds.episode(1), ds.episode(0)], atol=3.0)


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_reads_a_dataset_written_by_another_tool(tmp_path: Path) -> None:
    """Images as relative paths, tasks as a pandas index, rows out of order, no frame_index and
    no stats.json: what a foreign writer may legitimately produce."""
    root = tmp_path / "foreign"
    (root / "meta").mkdir(parents=True)
    (root / "images").mkdir()
    features = {
        "observation.state": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
        "action": {"dtype": "float32", "shape": [1], "names": None},
        "observation.images.top": {"dtype": "image", "shape": [4, 4, 3], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    (root / "meta/info.json").write_text(json.dumps({"fps": 15, "features": features}))
    pq.write_table(
        pa.table({"task_index": [0, 1], "__index_level_0__": ["open", "close"]}),
        root / "meta/tasks.parquet",
    )
    episode = [0, 0, 0, 1, 1]
    for i in range(5):
        (root / f"images/{i}.png").write_bytes(_png(10 * i))
    order = [3, 0, 4, 2, 1]
    table = pa.table(
        {
            "observation.state": [[float(i), -float(i)] for i in order],
            "action": [float(i) for i in order],
            "observation.images.top": [{"bytes": None, "path": f"images/{i}.png"} for i in order],
            "episode_index": [episode[i] for i in order],
            "index": order,
            "task_index": [episode[i] for i in order],
        }
    )
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(table, root / "data/chunk-000/file-000.parquet")
    ds = read_dataset(root)
    assert ds.tasks == ["open", "close"] and ds.fps == 15
    assert ds.episode_bounds.tolist() == [[0, 3], [3, 5]]
    assert ds.frame_index.tolist() == [0, 1, 2, 0, 1]
    np.testing.assert_array_equal(ds.numeric["observation.state"][:, 0], np.arange(5))
    np.testing.assert_array_equal(ds.numeric["action"][:, 0], np.arange(5))
    pixels = ds.frames("observation.images.top", np.arange(5))[:, 0, 0, 0]
    np.testing.assert_array_equal(pixels, 10 * np.arange(5))
    np.testing.assert_allclose(ds.stats["action"]["mean"], [2.0])
    assert ds.episode(1).task == "close"


def test_errors_name_the_problem(tmp_path: Path, coded_dataset: object) -> None:
    with pytest.raises(DatasetFormatError, match=r"info\.json"):
        read_dataset(tmp_path)
    root = write_dataset(tmp_path / "ok", coded_episodes([2]), fps=10)
    with pytest.raises(DatasetFormatError, match=r"observation\.images\.nope"):
        read_dataset(root, image_keys=("observation.images.nope",))
    with pytest.raises((ValueError, TypeError), match="decode"):
        read_dataset(root, decode="sometimes")
    with pytest.raises(KeyError, match="image key"):
        read_dataset(root).frames("observation.images.other", np.array([0]))


def test_reads_the_scalar_column_types_lerobot_uses(tmp_path: Path) -> None:
    """bool ``next.done``, float32 ``next.reward``, a bool vector, and the float32/int64 index
    columns: numeric as float32 0/1, and ``episode`` gives each back in its stored dtype."""
    root = write_dataset(tmp_path / "ds", coded_episodes([3, 4]), fps=10)
    path = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    episode = table["episode_index"].to_numpy()
    done = np.r_[episode[1:] != episode[:-1], True]
    reward = np.linspace(0.0, 1.0, len(done), dtype=np.float32)
    grip = np.stack([done, ~done], axis=1)
    table = table.append_column("next.done", pa.array(done, pa.bool_()))
    table = table.append_column("next.reward", pa.array(reward, pa.float32()))
    table = table.append_column("gripper.closed", pa.array(list(grip), pa.list_(pa.bool_(), 2)))
    pq.write_table(table, path)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    info["features"]["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    info["features"]["gripper.closed"] = {"dtype": "bool", "shape": [2], "names": ["l", "r"]}
    (root / "meta/info.json").write_text(json.dumps(info))

    ds = read_dataset(root)
    assert ds.numeric["next.done"].dtype == np.float32
    np.testing.assert_array_equal(ds.numeric["next.done"][:, 0], done.astype(np.float32))
    np.testing.assert_array_equal(ds.numeric["next.reward"][:, 0], reward)
    np.testing.assert_array_equal(ds.numeric["gripper.closed"], grip.astype(np.float32))
    assert ds.frame_index.tolist() == [0, 1, 2, 0, 1, 2, 3]
    assert ds.task_index.tolist() == [0, 0, 0, 1, 1, 1, 1]
    last = ds.episode(1)
    assert last.arrays["next.done"].dtype == np.bool_
    assert last.arrays["next.done"][:, 0].tolist() == [False, False, False, True]
    assert last.arrays["gripper.closed"].dtype == np.bool_
    assert last.arrays["next.reward"].dtype == np.float32
    np.testing.assert_allclose(ds.stats["next.done"]["mean"], [2 / 7])
