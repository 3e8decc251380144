"""LeRobotDataset v3.0 writer (f1kit.data.writer): layout, metadata, stats, determinism, errors."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from f1kit.data import Episode, has_video_codec, read_dataset, write_dataset
from tests.f1kit.conftest import coded_episodes

FILES = (
    "meta/info.json",
    "meta/stats.json",
    "meta/tasks.parquet",
    "meta/episodes/chunk-000/file-000.parquet",
    "data/chunk-000/file-000.parquet",
)


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[Episode]]:
    episodes = coded_episodes([4, 7, 2])
    return write_dataset(tmp_path / "ds", episodes, fps=10, robot_type="toy"), episodes


def test_layout_and_info(written: tuple[Path, list[Episode]]) -> None:
    root, _ = written
    for f in FILES:
        assert (root / f).is_file(), f
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 13, 2)
    feats = info["features"]
    assert feats["observation.state"] == {"dtype": "float32", "shape": [3], "names": None}
    assert feats["observation.images.cam"]["dtype"] == "image"
    assert feats["observation.images.cam"]["shape"] == [8, 8, 3]
    assert feats["observation.images.cam"]["names"] == ["height", "width", "channels"]
    assert {"timestamp", "frame_index", "episode_index", "index", "task_index"} <= set(feats)
    assert info["data_path"].format(chunk_index=0, file_index=0) == FILES[-1]
    hf = json.loads(pq.read_schema(root / FILES[-1]).metadata[b"huggingface"])
    assert hf["info"]["features"]["observation.images.cam"] == {"_type": "Image"}


def test_tasks_and_episode_rows(written: tuple[Path, list[Episode]]) -> None:
    root, episodes = written
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.to_pydict() == {"task_index": [0, 1], "task": ["task 0", "task 1"]}
    pandas_meta = json.loads(tasks.schema.metadata[b"pandas"])
    assert pandas_meta["index_columns"] == ["task"]  # LeRobot reads the task as the index
    eps = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pydict()
    assert eps["length"] == [4, 7, 2]
    assert eps["dataset_from_index"] == [0, 4, 11] and eps["dataset_to_index"] == [4, 11, 13]
    assert eps["tasks"] == [["task 0"], ["task 1"], ["task 0"]]
    mean = np.asarray(eps["stats/action/mean"][1])
    np.testing.assert_allclose(mean, episodes[1].arrays["action"].mean(0), rtol=1e-6)


def test_stats_match_numpy(written: tuple[Path, list[Episode]]) -> None:
    root, episodes = written
    stats = json.loads((root / "meta/stats.json").read_text())
    state = np.concatenate([e.arrays["observation.state"] for e in episodes]).astype(np.float64)
    np.testing.assert_allclose(stats["observation.state"]["mean"], state.mean(0), rtol=1e-9)
    np.testing.assert_allclose(stats["observation.state"]["std"], state.std(0), rtol=1e-9)
    assert stats["observation.state"]["count"] == [13]
    pixels = np.concatenate([e.arrays["observation.images.cam"] for e in episodes]) / 255.0
    img = stats["observation.images.cam"]
    assert np.asarray(img["mean"]).shape == (3, 1, 1)
    np.testing.assert_allclose(np.asarray(img["mean"])[:, 0, 0], pixels.mean((0, 1, 2)))
    np.testing.assert_allclose(np.asarray(img["max"])[:, 0, 0], pixels.max((0, 1, 2)))


def test_same_episodes_same_bytes_and_one_pixel_changes_them(tmp_path: Path) -> None:
    a = write_dataset(tmp_path / "a", coded_episodes([3, 5]), fps=10)
    b = write_dataset(tmp_path / "b", coded_episodes([3, 5]), fps=10)
    for f in FILES:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    changed = coded_episodes([3, 5])
    changed[1].arrays["observation.images.cam"][2, 0, 0, 0] ^= 1
    c = write_dataset(tmp_path / "c", changed, fps=10)
    assert (a / FILES[-1]).read_bytes() != (c / FILES[-1]).read_bytes()


def test_data_files_roll_over_at_the_size_limit(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", coded_episodes([4, 4, 4]), fps=10, data_file_mb=1e-4)
    files = sorted((root / "data/chunk-000").glob("*.parquet"))
    assert len(files) == 3
    eps = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pydict()
    assert eps["data/file_index"] == [0, 1, 2]


def test_bad_input_is_named(tmp_path: Path) -> None:
    frames = np.zeros((3, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="same non-zero length"):
        Episode("t", {"action": np.zeros((2, 4), np.float32), "observation.images.c": frames})
    with pytest.raises(ValueError, match=r"observation.images.c: expected uint8"):
        Episode("t", {"observation.images.c": frames.astype(np.float32)})
    with pytest.raises(ValueError, match="task"):
        Episode("", {"action": np.zeros((2, 4), np.float32)})
    with pytest.raises(ValueError, match="at least one episode"):
        write_dataset(tmp_path / "empty", [], fps=10)
    eps = [Episode("t", {"action": np.zeros((2, 4), np.float32)})]
    eps.append(Episode("t", {"action": np.zeros((2, 5), np.float32)}))
    with pytest.raises(ValueError, match=r"episode 1 action: expected shape"):
        write_dataset(tmp_path / "mismatch", eps, fps=10)
    write_dataset(tmp_path / "once", eps[:1], fps=10)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_dataset(tmp_path / "once", eps[:1], fps=10)
    with pytest.raises(ValueError, match="fps"):
        write_dataset(tmp_path / "fps", eps[:1], fps=0)


@pytest.mark.skipif(not has_video_codec(), reason="needs PyAV with libx264")
def test_video_files_have_the_size_info_json_declares(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:45, 0:61]
    ramp = np.stack([x * 4, y * 5, np.full_like(x, 90)], -1).astype(np.uint8)
    episodes = [
        Episode(
            "t",
            {
                "action": rng.normal(size=(n, 2)).astype(np.float32),
                "observation.images.c": np.stack([np.roll(ramp, i, axis=1) for i in range(n)]),
            },
        )
        for n in (3, 4)
    ]
    root = write_dataset(tmp_path / "ds", episodes, fps=10, images="video")
    feature = json.loads((root / "meta/info.json").read_text())["features"]["observation.images.c"]
    assert feature["shape"] == [45, 61, 3]
    path = root / "videos/observation.images.c/chunk-000/file-000.mp4"
    with av.open(str(path)) as container:
        codec = container.streams.video[0].codec_context
        assert (codec.height, codec.width) == (45, 61)
        assert feature["info"]["video.pix_fmt"] == codec.pix_fmt
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frames.shape == (7, 45, 61, 3)
    # f1kit's reader gets the frames back within the codec's error.
    back = read_dataset(root).frames("observation.images.c", np.arange(7))
    source = np.concatenate([e.arrays["observation.images.c"] for e in episodes])
    assert back.shape == source.shape and np.abs(back.astype(int) - source).mean() < 3.0


def test_bool_features_are_stored_as_bool_and_read_back(tmp_path: Path) -> None:
    t = 6
    done = np.arange(t) == t - 1
    ep = Episode(
        "stack",
        {
            "observation.state": np.zeros((t, 2), np.float32),
            "action": np.zeros((t, 2), np.float32),
            "next.done": done[:, None],
        },
    )
    root = write_dataset(tmp_path / "ds", [ep], fps=10)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["features"]["next.done"]["dtype"] == "bool"  # as LeRobot declares it
    table = pq.read_table(root / "data/chunk-000/file-000.parquet")
    assert table.schema.field("next.done").type == pa.bool_()
    back = read_dataset(root).episode(0).arrays["next.done"]
    assert back.dtype == np.bool_ and np.array_equal(back[:, 0], done)


def test_overwrite_replaces_only_a_dataset_f1kit_wrote(tmp_path: Path) -> None:
    eps = [Episode("t", {"action": np.zeros((2, 4), np.float32)})]
    ours = write_dataset(tmp_path / "ours", eps, fps=10)
    write_dataset(ours, eps * 2, fps=10, overwrite=True)  # an f1kit dataset: replaced
    assert json.loads((ours / "meta/info.json").read_text())["total_episodes"] == 2
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match=r"holds \['thesis.tex'\]"):
        write_dataset(home, eps, fps=10, overwrite=True)
    (ours / "notes.txt").write_text("mine")  # a dataset with someone's file in it
    with pytest.raises(FileExistsError, match=r"it holds \['notes.txt'\]"):
        write_dataset(ours, eps, fps=10, overwrite=True)
    assert (home / "thesis.tex").exists() and (ours / "notes.txt").exists()
    (home / "thesis.tex").unlink()
    (home / "meta").mkdir()  # looks like a dataset, but not f1kit's
    with pytest.raises(FileExistsError, match="not a dataset f1kit wrote"):
        write_dataset(home, eps, fps=10, overwrite=True)
