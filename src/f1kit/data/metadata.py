"""What a LeRobotDataset folder says about itself, read without touching its frames.

``read_metadata`` loads ``meta/info.json`` (checked by `f1kit.data.info`), the tasks table and
``meta/stats.json``: all `f1kit recipe validate` needs to hold a dataset against a recipe (cameras,
frame sizes, state and action widths, fps, tasks) in milliseconds, whatever the dataset's size.
The reader uses the same functions, so a dataset that passes here is held to the same rules there.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from f1kit.data.info import (
    VISUAL_DTYPES,
    DatasetFormatError,
    image_size,
    load_info,
    read_json_object,
)
from f1kit.data.lerobot_layout import INFO_PATH, STATS_PATH, TASKS_PATH


@dataclass(frozen=True)
class DatasetMetadata:
    """A dataset's ``info`` (info.json), ``tasks`` (by task_index) and ``stats`` (stats.json,
    empty when the file is absent)."""

    root: Path
    info: dict
    tasks: list[str]
    stats: dict

    @property
    def fps(self) -> int | float:
        return self.info["fps"]

    @property
    def image_keys(self) -> tuple[str, ...]:
        """The image and video features, in info.json's order."""
        features = self.info["features"]
        return tuple(k for k, f in features.items() if f["dtype"] in VISUAL_DTYPES)

    def frame_size(self, key: str) -> tuple[int, int]:
        """``(H, W)`` of camera ``key`` as info.json declares it (either axis order)."""
        return image_size(self.info["features"][key], key, self.root / INFO_PATH)

    def width(self, key: str) -> int:
        """The number of values of numeric feature ``key`` per frame (its shape's product)."""
        width = 1
        for n in self.info["features"][key]["shape"]:
            width *= n
        return width


def read_metadata(root: Path | str) -> DatasetMetadata:
    """The metadata of the dataset at ``root``; ``DatasetFormatError`` naming the file if it
    breaks the layout, ``FileNotFoundError`` if there is no folder.

    Example: ``read_metadata("data/so100").frame_size("observation.images.top")``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    info = load_info(root)
    return DatasetMetadata(root=root, info=info, tasks=read_tasks(root)[0], stats=read_stats(root))


def read_stats(root: Path) -> dict:
    """``meta/stats.json`` as a dict of feature -> statistics (empty when the file is absent)."""
    path = root / STATS_PATH
    if not path.exists():
        return {}
    return read_json_object(path)


def read_tasks(root: Path) -> tuple[list[str], Path]:
    """Task sentences by task_index, and the file they came from."""
    path = root / TASKS_PATH
    if path.exists():
        table = pq.read_table(path)
        name = "task" if "task" in table.column_names else "__index_level_0__"
        if name not in table.column_names or "task_index" not in table.column_names:
            raise DatasetFormatError(f"{path}: expected columns task_index and task (or an index)")
        indices, tasks = table["task_index"].to_pylist(), table[name].to_pylist()
    elif (path := root / "meta/tasks.jsonl").exists():
        try:
            rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            indices, tasks = [r["task_index"] for r in rows], [r["task"] for r in rows]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DatasetFormatError(
                f"{path}: expected JSON lines with task_index and task ({err!r})"
            ) from err
    else:
        raise DatasetFormatError(f"{root}: no {TASKS_PATH} (or meta/tasks.jsonl)")
    # A gap or a repeat would silently shift or drop the task of every later index.
    if sorted(indices) != list(range(len(indices))):
        raise DatasetFormatError(
            f"{path}: task_index: expected 0..{len(indices) - 1}, each once, got {indices}"
        )
    by_index = dict(zip(indices, tasks, strict=True))
    return [by_index[i] for i in range(len(indices))], path
