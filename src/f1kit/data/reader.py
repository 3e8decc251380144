"""Read a LeRobotDataset v3.0 folder into memory for fast windowed sampling.

Works on what ``write_dataset`` writes and on datasets from other tools that use the standard keys:
images as parquet Image structs (bytes or a relative path) or as MP4 files under ``videos/``;
``tasks.parquet`` with the task as a column or as the pandas index (v2.1's ``tasks.jsonl`` too).

``decode="eager"`` caches every frame decoded as uint8 (``N * H * W * 3`` bytes per camera, e.g.
110 MB for 9k frames at 64 px), so sampling never waits on a codec. ``decode="lazy"`` keeps only
the PNG bytes in memory and decodes the frames a sample asks for; MP4 cameras are decoded an
episode at a time when a sample touches it (`f1kit.data.clips`). ``decode="auto"`` (the default)
is eager up to ``EAGER_LIMIT_BYTES`` of decoded frames and lazy past it: MT10 x 100 demos at 256 px
would be about 30 GB decoded.

What LeRobot guarantees is checked on load (``DatasetFormatError`` naming the file otherwise):
``frame_index`` counts 0..n-1 within each episode and ``index`` is unique and steps by one within
an episode, every ``task_index`` is a row of the tasks table, columns match info.json's shapes,
image paths stay inside the dataset folder.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from jaxtyping import UInt8

from f1kit.data.clips import VideoClips, inside
from f1kit.data.info import (
    VISUAL_DTYPES,
    DatasetFormatError,
    feature_column,
    frame_size_error,
    image_size,
    load_info,
)
from f1kit.data.lerobot_layout import INDEX_FEATURES, INFO_PATH
from f1kit.data.metadata import read_stats, read_tasks
from f1kit.data.stats import image_stats, numeric_stats
from f1kit.data.video import decode_png
from f1kit.data.writer import Episode

DECODE_MODES = ("auto", "eager", "lazy")
# Decoded frames past this size are read lazily under decode="auto" (a quarter of a 16 GB box).
EAGER_LIMIT_BYTES = 4 * 2**30


class _Rows:
    """Which data file each row of the concatenated, index-sorted table came from."""

    def __init__(self, files: list[Path], counts: list[int]) -> None:
        self.files = files
        self.file_of = np.repeat(np.arange(len(files)), counts)

    def take(self, order: np.ndarray) -> None:
        self.file_of = self.file_of[order]

    def files_of(self, rows: np.ndarray | Sequence[int] | slice) -> str:
        """The data files holding ``rows``, for error messages (at most three named)."""
        names = [str(self.files[i]) for i in np.unique(self.file_of[rows])]
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _preview(values: np.ndarray, n: int = 8) -> str:
    head = ", ".join(str(v) for v in values[:n].tolist())
    return f"[{head}{', ...' if len(values) > n else ''}]"


def _check_rows(
    index: np.ndarray, episode_index: np.ndarray, frame_index: np.ndarray | None, rows: _Rows
) -> np.ndarray:
    """``(E, 2)`` episode row ranges of index-sorted rows, after LeRobot's numbering rules.

    LeRobot writes ``index`` as one global count and ``frame_index`` as 0..n-1 per episode; a
    repeat or a gap means lost or doubled frames, which windows would silently step across.
    """
    repeated = index[1:] == index[:-1]
    if repeated.any():
        values = np.unique(index[1:][repeated])
        bad = np.flatnonzero(np.isin(index, values))
        raise DatasetFormatError(
            f"{rows.files_of(bad)}: index: duplicate values {_preview(values)}; expected each"
            " frame's global index once"
        )
    starts = np.flatnonzero(np.r_[True, episode_index[1:] != episode_index[:-1]])
    bounds = np.stack([starts, np.r_[starts[1:], len(episode_index)]], axis=1)
    if len(np.unique(episode_index)) != len(starts):
        raise DatasetFormatError(
            f"{rows.files_of(slice(None))}: episode rows are not contiguous in index order"
        )
    lengths = bounds[:, 1] - bounds[:, 0]
    within = np.arange(len(index)) - np.repeat(starts, lengths)
    # Both counted from the episode's first row: frame_index from 0, index from its first value.
    counts = {"index": index - np.repeat(index[starts], lengths), "frame_index": frame_index}
    raw = {"index": index, "frame_index": frame_index}
    for name, got in counts.items():
        wrong = np.flatnonzero(got != within) if got is not None else []
        if len(wrong):
            lo, hi = bounds[np.searchsorted(starts, wrong[0], side="right") - 1]
            first = 0 if name == "frame_index" else index[lo]
            raise DatasetFormatError(
                f"{rows.files_of(slice(lo, hi))}: episode {episode_index[lo]}: {name}: expected"
                f" {first}..{first + hi - lo - 1} in index order, got {_preview(raw[name][lo:hi])}"
            )
    return bounds


def _image_column(column: pa.ChunkedArray, key: str, root: Path, rows: _Rows) -> list[bytes]:
    """The encoded image of every row: the cell's bytes, or the file its path names."""
    out, base = [], root.resolve()
    for r, cell in enumerate(column.to_pylist()):
        if isinstance(cell, dict) and cell.get("bytes") is not None:
            out.append(cell["bytes"])
        elif isinstance(cell, dict) and cell.get("path"):
            where = f"{rows.files_of([r])}: {key} row {r}"
            out.append(inside(base, cell["path"], where).read_bytes())
        else:
            raise DatasetFormatError(
                f"{rows.files_of([r])}: {key} row {r}: expected bytes or a path, got {cell!r}"
            )
    return out


@dataclass
class RobotDataset:
    """A LeRobot-format dataset in memory: numeric features, frames, episode row ranges, tasks.

    ``numeric[key]`` is ``(N, d)`` float32 for every numeric feature (bools as 0/1);
    ``episode_bounds`` is ``(E, 2)`` ``[from, to)`` row ranges; ``task_index`` maps rows to
    ``tasks``.
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
    _sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    _clips: dict[str, VideoClips] = field(default_factory=dict)  # lazily read MP4 cameras

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
        if key in self._clips:
            return self._clips[key].rows(rows)
        out = [decode_png(self._encoded[key][r]) for r in rows.ravel()]
        # Lazy loading checked only the first frame's size; the rest are checked as decoded.
        for r, frame in zip(rows.ravel(), out, strict=True):
            if key in self._sizes and frame.shape[:2] != self._sizes[key]:
                spec = self.info["features"][key]
                raise frame_size_error(
                    f"{self.root} row {r}", key, frame.shape, spec, self._sizes[key]
                )
        return np.stack(out)

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
    decode: Literal["auto", "eager", "lazy"] = "auto",
    image_keys: tuple[str, ...] | None = None,
) -> RobotDataset:
    """Load a LeRobotDataset v3.0 folder (``image_keys``: cameras to keep, default all).

    Raises ``DatasetFormatError`` naming the file when the folder breaks the layout's rules.

    Example: ``ds = read_dataset("out/mt10"); ds.frames("observation.images.corner", [0, 1])``.
    """
    if decode not in DECODE_MODES:
        raise ValueError(f"decode: expected one of {DECODE_MODES}, got {decode!r}")
    root = Path(root)
    info = load_info(root)
    features: dict[str, dict] = info["features"]
    for need in ("episode_index", "index"):
        if need not in features:
            raise DatasetFormatError(f"{root / INFO_PATH}: features: missing {need!r}")
    visual = [k for k, f in features.items() if f["dtype"] in VISUAL_DTYPES]
    keys = tuple(visual if image_keys is None else image_keys)
    missing = [k for k in keys if k not in visual]
    if missing:
        raise DatasetFormatError(f"image_keys: {missing} not among the dataset's images {visual}")
    sizes = {k: image_size(features[k], k, root / INFO_PATH) for k in keys}

    files = sorted((root / "data").glob("*/*.parquet"))
    if not files:
        raise DatasetFormatError(f"{root}: no data/chunk-*/file-*.parquet files")
    numeric_keys = [k for k, f in features.items() if f["dtype"] not in (*VISUAL_DTYPES, "string")]
    wanted = numeric_keys + [k for k in keys if features[k]["dtype"] == "image"]
    tables = []
    for f in files:
        names = pq.read_schema(f).names
        absent = [k for k in wanted if k not in names]
        if absent:
            raise DatasetFormatError(
                f"{f}: expected the columns {absent} that {INFO_PATH} lists, got {names}"
            )
        tables.append(pq.read_table(f, columns=wanted))
    table = pa.concat_tables(tables)
    if table.num_rows == 0:
        raise DatasetFormatError(f"{root / 'data'}: expected frames, got data files with no rows")
    rows = _Rows(files, [t.num_rows for t in tables])
    index = feature_column(table, "index", features["index"], rows.files_of)[:, 0].astype(np.int64)
    order = np.argsort(index, kind="stable")
    table, index = table.take(order), index[order]
    rows.take(order)
    column = {k: feature_column(table, k, features[k], rows.files_of) for k in numeric_keys}

    episode_index = column["episode_index"][:, 0].astype(np.int64)
    frame_index = column["frame_index"][:, 0].astype(np.int64) if "frame_index" in column else None
    bounds = _check_rows(index, episode_index, frame_index, rows)
    if frame_index is None:
        frame_index = np.concatenate([np.arange(hi - lo) for lo, hi in bounds])
    tasks, tasks_path = read_tasks(root)
    task_index = (
        column["task_index"][:, 0].astype(np.int64)
        if "task_index" in column
        else np.zeros(len(episode_index), dtype=np.int64)
    )
    bad = np.flatnonzero((task_index < 0) | (task_index >= len(tasks)))
    if len(bad):
        raise DatasetFormatError(
            f"{rows.files_of(bad)}: task_index: expected 0..{len(tasks) - 1} (the {len(tasks)}"
            f" tasks of {tasks_path}), got {_preview(np.unique(task_index[bad]))}"
        )
    numeric = {k: v.astype(np.float32) for k, v in column.items() if k not in INDEX_FEATURES}

    if decode == "auto":
        decoded_bytes = len(index) * sum(3 * h * w for h, w in sizes.values())
        decode = "lazy" if decoded_bytes > EAGER_LIMIT_BYTES else "eager"
    frames: dict[str, np.ndarray] = {}
    encoded: dict[str, list[bytes]] = {}
    clips: dict[str, VideoClips] = {}
    for key in keys:
        if features[key]["dtype"] == "image":
            encoded[key] = _image_column(table[key], key, root, rows)
            # Lazy decoding checks the first frame's size here and the others in `frames`.
            decoded = [decode_png(b) for b in encoded[key][: None if decode == "eager" else 1]]
            for r, frame in enumerate(decoded):
                if frame.shape[:2] != sizes[key]:
                    where = f"{rows.files_of([r])} row {r}"
                    raise frame_size_error(where, key, frame.shape, features[key], sizes[key])
            if decode == "eager":
                frames[key] = np.stack(decoded)
        else:
            clips[key] = VideoClips(root, info, key, bounds, episode_index, sizes[key])
            if decode == "eager":
                frames[key] = clips[key].decode_all()
            else:  # the first episode now, so a size mismatch shows at load as when eager
                clips[key].episode(0)

    stats = read_stats(root)
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
        tasks=tasks,
        numeric=numeric,
        episode_index=episode_index,
        frame_index=frame_index,
        task_index=task_index,
        episode_bounds=bounds,
        image_keys=keys,
        _frames=frames,
        _encoded=encoded,
        _sizes=sizes,
        _clips=clips,
    )
