"""LeRobotDataset reader (f1kit.data.reader): what it must refuse, and that the refusal says where.

Each case writes a valid dataset with ``write_dataset`` (two episodes of 3 and 4 rows, 8 px), breaks
one thing with pyarrow or json, and checks the ``DatasetFormatError`` names the file and the key.
"""

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from f1kit.data import (
    DatasetFormatError,
    Episode,
    encode_png,
    has_video_codec,
    read_dataset,
    write_dataset,
)
from tests.f1kit.conftest import coded_episodes

DATA = "data/chunk-000/file-000.parquet"
INFO = "meta/info.json"
TASKS = "meta/tasks.parquet"
CAM = "observation.images.cam"


def written(tmp_path: Path, **kwargs: object) -> Path:
    return write_dataset(tmp_path / "ds", coded_episodes([3, 4]), fps=10, **kwargs)


def set_column(root: Path, name: str, values: list, type: pa.DataType | None = None) -> None:
    """Replace column ``name`` of the data file, keeping its type unless ``type`` is given."""
    table = pq.read_table(root / DATA)
    i = table.schema.get_field_index(name)
    field = table.schema.field(i) if type is None else pa.field(name, type)
    pq.write_table(table.set_column(i, field, pa.array(values, field.type)), root / DATA)


def edit_info(root: Path, edit: Callable[[dict], object]) -> None:
    info = json.loads((root / INFO).read_text())
    edit(info)
    (root / INFO).write_text(json.dumps(info))


def refused(root: Path, *patterns: str, **kwargs: object) -> str:
    """The message of the ``DatasetFormatError`` reading ``root`` raises; each pattern is in it."""
    with pytest.raises(DatasetFormatError) as err:
        read_dataset(root, **kwargs)
    message = str(err.value)
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    return message


def test_the_helpers_alone_leave_a_readable_dataset(tmp_path: Path) -> None:
    # Counter-case for every test below: rewriting a column or info.json unchanged breaks nothing.
    root = written(tmp_path)
    set_column(root, "index", list(range(7)))
    set_column(root, "frame_index", [0, 1, 2, 0, 1, 2, 3])
    edit_info(root, lambda info: None)
    ds = read_dataset(root)
    assert len(ds) == 7 and ds.episode_bounds.tolist() == [[0, 3], [3, 7]]


# -- image paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["inside", "parent", "absolute", "symlink", "system"])
def test_refuses_image_paths_outside_the_root(tmp_path: Path, where: str) -> None:
    root = written(tmp_path)
    png = encode_png(np.full((8, 8, 3), 7, np.uint8))
    outside = tmp_path / "outside.png"
    outside.write_bytes(png)
    (root / "images").mkdir()
    (root / "images/inside.png").write_bytes(png)
    (root / "images/link.png").symlink_to(outside)
    path = {
        "inside": "images/inside.png",
        "parent": "../outside.png",
        "absolute": str(outside),
        "symlink": "images/link.png",
        "system": "../../../../../../../../../etc/hostname",
    }[where]
    cells = [{"bytes": None, "path": "images/inside.png"}] * 7
    cells[4] = {"bytes": None, "path": path}
    set_column(root, CAM, cells)
    if where == "inside":
        # Counter-case: a path that stays under the root reads (the same bytes as outside.png).
        assert read_dataset(root).frames(CAM, [4])[0, 0, 0].tolist() == [7, 7, 7]
        return
    refused(root, re.escape(str(root / DATA)), CAM, re.escape(path), "outside the dataset root")


# -- frame_index and index -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames",
    [
        [0, 1, 2, 0, 1, 3, 4],  # a gap: frame 2 of episode 1 is missing
        [0, 1, 2, 1, 2, 3, 4],  # episode 1 starts at 1
        [0, 1, 2, 0, 1, 1, 2],  # a repeated frame
        [0, 1, 2, 0, 2, 1, 3],  # out of order against index
    ],
)
def test_refuses_frame_index_that_does_not_count_from_zero(tmp_path: Path, frames: list) -> None:
    root = written(tmp_path)
    set_column(root, "frame_index", frames)
    refused(root, re.escape(str(root / DATA)), "frame_index", "episode 1", r"0\.\.3")


# Each example writes and reads a dataset (~30 ms): 20 examples keep this near half a second.
@settings(max_examples=20)
@given(lengths=st.lists(st.integers(1, 5), min_size=1, max_size=3), data=st.data())
def test_a_dropped_row_is_refused_unless_it_ends_its_episode(
    tmp_path_factory: pytest.TempPathFactory, lengths: list[int], data: st.DataObject
) -> None:
    root = write_dataset(tmp_path_factory.mktemp("drop") / "ds", coded_episodes(lengths), fps=10)
    drop = data.draw(st.integers(0, sum(lengths) - 1), label="dropped row")
    table = pq.read_table(root / DATA)
    pq.write_table(table.filter(pa.array(np.arange(len(table)) != drop)), root / DATA)
    ends = np.cumsum(lengths) - 1
    if sum(lengths) == 1:
        refused(root, "no rows")
    elif drop in ends:
        # Counter-case: a truncated episode still counts 0..n-1, which no check can tell apart.
        assert len(read_dataset(root)) == sum(lengths) - 1
    else:
        episode = int(np.searchsorted(ends, drop))
        refused(root, re.escape(str(root / DATA)), f"episode {episode}: (index|frame_index)")


def test_refuses_duplicate_index_values(tmp_path: Path) -> None:
    # frame_index still counts 0..n-1 after the stable sort, so only the index check sees this.
    root = written(tmp_path)
    set_column(root, "index", [0, 1, 2, 3, 4, 4, 6])
    refused(root, re.escape(str(root / DATA)), "index", "duplicate", r"\b4\b")


def test_refuses_a_data_file_copied_twice(tmp_path: Path) -> None:
    # Each index twice sorts into episodes of doubled length: contiguous, every frame repeated.
    root = written(tmp_path)
    shutil.copy(root / DATA, root / "data/chunk-000/file-001.parquet")
    refused(root, "file-000.parquet", "file-001.parquet", "duplicate")


def test_refuses_an_index_gap_inside_an_episode_without_frame_index(tmp_path: Path) -> None:
    root = written(tmp_path)
    table = pq.read_table(root / DATA).drop_columns(["frame_index"])
    pq.write_table(table, root / DATA)
    edit_info(root, lambda info: info["features"].pop("frame_index"))
    set_column(root, "index", [0, 1, 2, 3, 4, 6, 7])
    refused(root, re.escape(str(root / DATA)), "index", "episode 1")
    # Counter-case: a gap between episodes is harmless (e.g. episodes deleted) and reads.
    set_column(root, "index", [0, 1, 2, 5, 6, 7, 8])
    assert read_dataset(root).frame_index.tolist() == [0, 1, 2, 0, 1, 2, 3]


# -- shapes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "shape"), [("observation.state", [2]), ("action", [4])])
def test_refuses_info_shapes_that_differ_from_the_lists(
    tmp_path: Path, key: str, shape: list
) -> None:
    root = written(tmp_path)
    edit_info(root, lambda info: info["features"][key].update(shape=shape))
    refused(root, re.escape(str(root / DATA)), re.escape(key), f"expected {shape[0]}", "got 3")


def test_refuses_a_list_column_where_info_says_scalar(tmp_path: Path) -> None:
    root = written(tmp_path)
    set_column(root, "index", [[i, i] for i in range(7)], pa.list_(pa.int64()))
    refused(root, re.escape(str(root / DATA)), "'index'", "expected 1", "got 2")


def test_refuses_ragged_lists(tmp_path: Path) -> None:
    root = written(tmp_path)
    rows = [[float(i), -float(i), 0.0] for i in range(7)]
    rows[5] = rows[5][:2]
    set_column(root, "observation.state", rows, pa.list_(pa.float32()))
    refused(root, re.escape(str(root / DATA)), "observation.state", "expected 3", "got 2")


@pytest.mark.parametrize("null", ["row", "value"])
def test_refuses_null_cells(tmp_path: Path, null: str) -> None:
    # Arrow would hand numpy a NaN for a null float and an object array for a null list.
    root = written(tmp_path)
    rows: list = [[float(i), -float(i), 0.0] for i in range(7)]
    rows[2] = None if null == "row" else [2.0, None, 0.0]
    set_column(root, "observation.state", rows)
    refused(root, re.escape(str(root / DATA)), "observation.state", "null")


def test_refuses_a_feature_missing_from_the_data(tmp_path: Path) -> None:
    root = written(tmp_path)
    spec = {"dtype": "float32", "shape": [2], "names": None}
    edit_info(root, lambda info: info["features"].update({"observation.velocity": spec}))
    refused(root, re.escape(str(root / DATA)), "observation.velocity")


def test_refuses_a_numeric_feature_stored_as_text(tmp_path: Path) -> None:
    root = written(tmp_path)
    set_column(root, "index", [str(i) for i in range(7)], pa.string())
    refused(root, re.escape(str(root / DATA)), "'index'", "string")


def six_by_eight(tmp_path: Path, images: str = "png") -> tuple[Path, np.ndarray]:
    """A dataset of one camera with 6x8 (H x W) frames, so H and W cannot be mixed up."""
    frames = np.arange(5 * 6 * 8 * 3, dtype=np.int64).reshape(5, 6, 8, 3) % 200
    frames = frames.astype(np.uint8)
    if images == "video":  # smooth frames that survive H.264 within a few levels
        frames = np.broadcast_to(
            np.arange(5, dtype=np.uint8)[:, None, None, None] * 40, frames.shape
        )
        frames = np.ascontiguousarray(frames)
    ep = Episode("look", {"action": np.zeros((5, 1), np.float32), CAM: frames})
    return write_dataset(tmp_path / "ds", [ep], fps=5, images=images), frames


@pytest.mark.parametrize(
    ("shape", "names"),
    [
        ([6, 8, 3], ["height", "width", "channels"]),
        ([3, 6, 8], ["channels", "height", "width"]),
        ([6, 8, 3], ["height", "width", "channel"]),
        ([6, 8, 3], None),
        ([3, 6, 8], None),
    ],
)
def test_reads_image_shapes_in_either_layout(tmp_path: Path, shape: list, names: list) -> None:
    root, frames = six_by_eight(tmp_path)
    edit_info(root, lambda info: info["features"][CAM].update(shape=shape, names=names))
    for decode in ("eager", "lazy"):
        got = read_dataset(root, decode=decode).frames(CAM, np.arange(5))
        np.testing.assert_array_equal(got, frames)


@pytest.mark.parametrize(
    ("shape", "names", "decode"),
    [
        ([8, 6, 3], ["height", "width", "channels"], "eager"),
        ([8, 6, 3], ["height", "width", "channels"], "lazy"),
        ([3, 8, 6], ["channels", "height", "width"], "eager"),
        ([6, 6, 3], None, "eager"),
        ([6, 8], None, "eager"),
    ],
)
def test_refuses_image_shapes_that_differ_from_the_frames(
    tmp_path: Path, shape: list, names: list, decode: str
) -> None:
    root, _ = six_by_eight(tmp_path)
    edit_info(root, lambda info: info["features"][CAM].update(shape=shape, names=names))
    refused(root, re.escape(CAM), re.escape(str(shape)), decode=decode)


@pytest.mark.skipif(not has_video_codec(), reason="needs PyAV with libx264")
def test_video_shapes_in_either_layout_and_refused_when_wrong(tmp_path: Path) -> None:
    root, frames = six_by_eight(tmp_path, images="video")
    edit_info(root, lambda info: info["features"][CAM].update(shape=[3, 6, 8]))
    edit_info(
        root, lambda info: info["features"][CAM].update(names=["channels", "height", "width"])
    )
    got = read_dataset(root).frames(CAM, np.arange(5))
    assert got.shape == frames.shape
    assert np.abs(got.astype(int) - frames).mean() < 3
    edit_info(root, lambda info: info["features"][CAM].update(shape=[3, 4, 8]))
    refused(root, re.escape(CAM), r"\[3, 4, 8\]", "6x8")


# -- fps, task_index, tasks ------------------------------------------------------------------------


@pytest.mark.parametrize("fps", ["fast", 0, -5, True, None, float("nan"), "30"])
def test_refuses_fps_that_is_not_a_positive_number(tmp_path: Path, fps: object) -> None:
    root = written(tmp_path)
    edit_info(root, lambda info: info.update(fps=fps))
    refused(root, re.escape(str(root / INFO)), "fps", "positive")


@pytest.mark.parametrize("bad", [2, -1])
def test_refuses_task_index_outside_the_tasks_table(tmp_path: Path, bad: int) -> None:
    root = written(tmp_path)
    set_column(root, "task_index", [0, 0, 0, bad, bad, bad, bad])
    refused(root, re.escape(str(root / DATA)), "task_index", str(bad), re.escape(str(root / TASKS)))


@pytest.mark.parametrize("indices", [[1, 2], [0, 2], [0, 0]])
def test_refuses_tasks_not_numbered_from_zero(tmp_path: Path, indices: list) -> None:
    root = written(tmp_path)
    pq.write_table(pa.table({"task_index": indices, "task": ["a", "b"]}), root / TASKS)
    refused(root, re.escape(str(root / TASKS)), "task_index", r"0\.\.1", re.escape(str(indices)))


# -- malformed info.json ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("{not json", "JSON"),
        ("[1, 2]", "object"),
        ('{"fps": 10}', "features"),
        ('{"features": {}}', "fps"),
        ('{"fps": 10, "features": [1, 2]}', "features"),
    ],
)
def test_refuses_info_json_that_is_not_the_expected_object(
    tmp_path: Path, text: str, key: str
) -> None:
    root = written(tmp_path)
    (root / INFO).write_text(text)
    refused(root, re.escape(str(root / INFO)), key)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda f: f.pop("dtype"), "dtype"),
        (lambda f: f.pop("shape"), "shape"),
        (lambda f: f.update(dtype="float33"), "dtype"),
        (lambda f: f.update(shape="3"), "shape"),
        (lambda f: f.update(shape=[0]), "shape"),
        (lambda f: f.update(shape=["3"]), "shape"),
        (lambda f: f.update(shape=[]), "shape"),
    ],
)
def test_refuses_a_malformed_feature(tmp_path: Path, edit: Callable, key: str) -> None:
    root = written(tmp_path)
    edit_info(root, lambda info: edit(info["features"]["action"]))
    refused(root, re.escape(str(root / INFO)), r"features\['action'\]", key)


def test_refuses_a_feature_that_is_not_an_object(tmp_path: Path) -> None:
    root = written(tmp_path)
    edit_info(root, lambda info: info["features"].update(action="float32"))
    refused(root, re.escape(str(root / INFO)), r"features\['action'\]", "object")
