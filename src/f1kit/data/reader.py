"""Read a LeRobotDataset v3.0 folder into memory for fast windowed sampling.

Works on what ``write_dataset`` writes and on datasets from other tools that use the standard keys:
images as parquet Image structs (bytes or a relative path) or as MP4 files under ``videos/``;
``tasks.parquet`` with the task as a column or as the pandas index (v2.1's ``tasks.jsonl`` too).

Decoded frames are cached as uint8 (``decode="eager"``, the default: ``N * H * W * 3`` bytes per
camera, e.g. 110 MB for 9k frames at 64 px) so sampling never waits on a codec; ``decode="lazy"``
keeps only the PNG bytes in memory and decodes the frames a sample asks for.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from jaxtyping import UInt8

from f1kit.data.lerobot_layout import INDEX_FEATURES, INFO_PATH, STATS_PATH, TASKS_PATH, VIDEO_PATH
from f1kit.data.stats import image_stats, numeric_stats
from f1kit.data.video import decode_mp4, decode_png
from f1kit.data.writer import Episode


class DatasetFormatError(ValueError):
    """A dataset folder that does not follow the LeRobotDataset layout."""


def _read_tasks(root: Path) -> list[str]:
    path = root / TASKS_PATH
    if path.exists():
        table = pq.read_table(path)
        name = "task" if "task" in table.column_names else "__index_level_0__"
        if name not in table.column_names or "task_index" not in table.column_names:
            raise DatasetFormatError(f"{path}: expected columns task_index and task (or an index)")
        pairs = zip(table["task_index"].to_pylist(), table[name].to_pylist(), strict=True)
    elif (root / "meta/tasks.jsonl").exists():
        rows = [json.loads(x) for x in (root / "meta/tasks.jsonl").read_text().splitlines() if x]
        pairs = ((r["task_index"], r["task"]) for r in rows)
    else:
        raise DatasetFormatError(f"{root}: no meta/tasks.parquet (or meta/tasks.jsonl)")
    by_index = dict(pairs)
    return [by_index[i] for i in range(len(by_index))]


def _image_column(column: pa.ChunkedArray, root: Path) -> list[bytes]:
    out = []
    for cell in column.to_pylist():
        if isinstance(cell, dict) and cell.get("bytes") is not None:
            out.append(cell["bytes"])
        elif isinstance(cell, dict) and cell.get("path"):
            out.append((root / cell["path"]).read_bytes())
        else:
            raise DatasetFormatError(f"image column {column}: a cell holds neither bytes nor path")
    return out


@dataclass
class RobotDataset:
    """A LeRobot-format dataset in memory: numeric features, frames, episode row ranges, tasks.

    ``numeric[key]`` is ``(N, d)`` float32 for every numeric feature; ``episode_bounds`` is
    ``(E, 2)`` ``[from, to)`` row ranges; ``task_index`` maps rows to ``tasks``.
    """

    root: Path
    info: dict
    stats: dict
    tasks: list[str]
    numeric: dict[str, np.ndarray]
    episode_index: np.ndarray
    frame_index: np.ndarray
    task_index: np.ndarray
    episode_bounds: np.ndarray
    image_keys: tuple[str, ...]
    _frames: dict[str, np.ndarray]
    _encoded: dict[str, list[bytes]]

    @property
    def fps(self) -> int:
        return int(self.info["fps"])

    @property
    def num_episodes(self) -> int:
        return len(self.episode_bounds)

    def __len__(self) -> int:
        return len(self.episode_index)

    def frames(self, key: str, rows: np.ndarray | Sequence[int]) -> UInt8[np.ndarray, "n H W 3"]:
        """uint8 ``(len(rows), H, W, 3)`` frames of camera ``key`` at dataset rows ``rows``."""
        if key not in self.image_keys:
            raise KeyError(f"image key: expected one of {self.image_keys}, got {key!r}")
        rows = np.asarray(rows, dtype=np.int64)
        if key in self._frames:
            return self._frames[key][rows]
        return np.stack([decode_png(self._encoded[key][r]) for r in np.asarray(rows).ravel()])

    def episode(self, i: int) -> Episode:
        """Episode ``i`` back as an ``Episode`` (numeric features in their stored dtype)."""
        lo, hi = (int(x) for x in self.episode_bounds[i])
        rows = np.arange(lo, hi)
        arrays = {}
        for key, arr in self.numeric.items():
            dtype = self.info["features"][key]["dtype"]
            arrays[key] = arr[lo:hi].astype(dtype)
        arrays.update({k: self.frames(k, rows) for k in self.image_keys})
        return Episode(self.tasks[int(self.task_index[lo])], arrays)


def read_dataset(
    root: Path | str,
    *,
    decode: Literal["eager", "lazy"] = "eager",
    image_keys: tuple[str, ...] | None = None,
) -> RobotDataset:
    """Load a LeRobotDataset v3.0 folder (``image_keys``: cameras to keep, default all).

    Example: ``ds = read_dataset("out/mt10"); ds.frames("observation.images.corner", [0, 1])``.
    """
    if decode not in ("eager", "lazy"):
        raise ValueError(f"decode: expected 'eager' or 'lazy', got {decode!r}")
    root = Path(root)
    if not (root / INFO_PATH).exists():
        raise DatasetFormatError(f"{root}: no {INFO_PATH}; not a LeRobotDataset folder")
    info = json.loads((root / INFO_PATH).read_text())
    features: dict[str, dict] = info.get("features", {})
    for need in ("fps", "features"):
        if need not in info:
            raise DatasetFormatError(f"{root / INFO_PATH}: missing {need!r}")
    visual = [k for k, f in features.items() if f["dtype"] in ("image", "video")]
    keys = tuple(visual if image_keys is None else image_keys)
    missing = [k for k in keys if k not in visual]
    if missing:
        raise DatasetFormatError(f"image_keys: {missing} not among the dataset's images {visual}")

    files = sorted((root / "data").glob("*/*.parquet"))
    if not files:
        raise DatasetFormatError(f"{root}: no data/chunk-*/file-*.parquet files")
    wanted = [k for k, f in features.items() if f["dtype"] not in ("image", "video", "string")]
    wanted += [k for k in keys if features[k]["dtype"] == "image"]
    table = pa.concat_tables(pq.read_table(f, columns=wanted) for f in files)
    for need in ("episode_index", "index"):
        if need not in table.column_names:
            raise DatasetFormatError(f"{root}: data parquet lacks the {need!r} column")
    order = np.argsort(table["index"].to_numpy(), kind="stable")
    table = table.take(order)

    episode_index = table["episode_index"].to_numpy().astype(np.int64)
    starts = np.flatnonzero(np.r_[True, episode_index[1:] != episode_index[:-1]])
    bounds = np.stack([starts, np.r_[starts[1:], len(episode_index)]], axis=1)
    if len(np.unique(episode_index)) != len(starts):
        raise DatasetFormatError(f"{root}: episode rows are not contiguous in index order")
    frame_index = (
        table["frame_index"].to_numpy().astype(np.int64)
        if "frame_index" in table.column_names
        else np.concatenate([np.arange(hi - lo) for lo, hi in bounds])
    )
    task_index = (
        table["task_index"].to_numpy().astype(np.int64)
        if "task_index" in table.column_names
        else np.zeros(len(episode_index), dtype=np.int64)
    )

    numeric = {}
    for key in wanted:
        if key in INDEX_FEATURES or features[key]["dtype"] == "image":
            continue
        col = table[key].combine_chunks()
        if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type):
            arr = np.stack(col.to_numpy(zero_copy_only=False))
        else:
            arr = col.to_numpy()[:, None]
        numeric[key] = arr.astype(np.float32)

    frames: dict[str, np.ndarray] = {}
    encoded: dict[str, list[bytes]] = {}
    for key in keys:
        h, w = (int(x) for x in features[key]["shape"][:2])
        if features[key]["dtype"] == "image":
            encoded[key] = _image_column(table[key], root)
            if decode == "eager":
                frames[key] = np.stack([decode_png(b) for b in encoded[key]])
        else:
            frames[key] = _video_frames(root, info, key, bounds, episode_index)[:, :h, :w]

    stats_path = root / STATS_PATH
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    # Only what stats.json lacks is computed (quantiles over every pixel are not free).
    for key, arr in numeric.items():
        if key not in stats:
            stats[key] = numeric_stats(arr)
    for key in frames:
        if key not in stats:
            stats[key] = image_stats(frames[key])
    return RobotDataset(
        root=root,
        info=info,
        stats=stats,
        tasks=_read_tasks(root),
        numeric=numeric,
        episode_index=episode_index,
        frame_index=frame_index,
        task_index=task_index,
        episode_bounds=bounds,
        image_keys=keys,
        _frames=frames,
        _encoded=encoded,
    )


def _video_frames(
    root: Path, info: dict, key: str, bounds: np.ndarray, episode_index: np.ndarray
) -> np.ndarray:
    """Frames of a ``video`` feature for every row, cut from the MP4 files per episode."""
    files = sorted((root / "meta/episodes").glob("*/*.parquet"))
    if not files:
        raise DatasetFormatError(f"{root}: video feature {key} needs meta/episodes/*.parquet")
    meta = pa.concat_tables(pq.read_table(f) for f in files).to_pylist()
    by_episode = {int(r["episode_index"]): r for r in meta}
    template = info.get("video_path") or VIDEO_PATH
    fps = float(info["fps"])
    decoded: dict[Path, np.ndarray] = {}
    out = []
    for lo, hi in bounds:
        ep = by_episode[int(episode_index[lo])]
        path = root / template.format(
            video_key=key,
            chunk_index=int(ep.get(f"videos/{key}/chunk_index", 0)),
            file_index=int(ep.get(f"videos/{key}/file_index", 0)),
        )
        if path not in decoded:
            decoded[path] = decode_mp4(path)
        start = round(float(ep.get(f"videos/{key}/from_timestamp", 0.0)) * fps)
        clip = decoded[path][start : start + (hi - lo)]
        if len(clip) != hi - lo:
            raise DatasetFormatError(
                f"{path}: expected {hi - lo} frames from {start}, got {len(clip)}"
            )
        out.append(clip)
    return np.concatenate(out)
