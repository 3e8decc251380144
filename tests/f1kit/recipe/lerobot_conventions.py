"""A small dataset written the way LeRobot 0.4-0.6 writes LeRobotDataset v3.0 (not f1kit's writer).

What LeRobot's own datasets have and f1kit's writer does not produce: a bool ``next.done`` and a
float ``next.reward``, two cameras of which one is stored as MP4 (``dtype: video``, one file for
all episodes, each episode a ``from_timestamp`` range) and one as parquet images, a 6-d state and
a 7-d action, several ``data/chunk-000/file-XXX.parquet`` files, two tasks, ``tasks.parquet`` with
the task as the pandas index, and per-episode ``stats/...`` columns.
"""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from f1kit.data.video import encode_mp4, encode_png

FPS = 10
SIZE = 32  # square frames: the size a recipe's data.image_size states
STATE_DIM, ACTION_DIM = 6, 7
TASKS = ("pick up the red cube", "open the top drawer")
VIDEO_KEY, IMAGE_KEY = "observation.images.top", "observation.images.wrist"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


def _frames(rng: np.random.Generator, t: int) -> np.ndarray:
    """A bright square drifting over a dark background: real motion between frames."""
    frames = np.full((t, SIZE, SIZE, 3), 20, dtype=np.uint8)
    x, y = rng.integers(2, SIZE - 10, size=2)
    for i in range(t):
        frames[i, y : y + 8, (x + i) % (SIZE - 8) : (x + i) % (SIZE - 8) + 8] = (220, 60, 40)
    return frames


def _stats(arr: np.ndarray) -> dict:
    arr = arr.reshape(len(arr), -1).astype(np.float64)
    q = {f"q{int(p * 100):02d}": np.quantile(arr, p, axis=0) for p in (0.01, 0.1, 0.5, 0.9, 0.99)}
    out = {"min": arr.min(0), "max": arr.max(0), "mean": arr.mean(0), "std": arr.std(0), **q}
    return {**{k: v.tolist() for k, v in out.items()}, "count": [len(arr)]}


def _image_stats(frames: np.ndarray) -> dict:
    """Per-channel statistics in [0, 1], shaped (3, 1, 1) as LeRobot stores them."""
    pixels = frames.reshape(-1, 3).astype(np.float64) / 255.0
    stats = _stats(pixels)
    return {k: (v if k == "count" else [[[x]] for x in v]) for k, v in stats.items()}


def lerobot_dataset(root: Path, episodes: int = 4, length: int = 14, seed: int = 0) -> Path:
    """Write the dataset to ``root`` (episodes alternate between the two tasks; half of the
    episodes per data file) and return ``root``."""
    rng = np.random.default_rng(seed)
    eps = []
    for e in range(episodes):
        t = length + e  # episodes of different lengths
        state = rng.normal(size=(t, STATE_DIM)).astype(np.float32)
        eps.append(
            {
                "task_index": e % len(TASKS),
                "observation.state": state,
                "action": rng.normal(size=(t, ACTION_DIM)).astype(np.float32),
                "next.reward": (np.arange(t) == t - 1).astype(np.float32),
                "next.done": np.arange(t) == t - 1,
                VIDEO_KEY: _frames(rng, t),
                IMAGE_KEY: _frames(rng, t)[:, ::-1].copy(),
            }
        )
    vector = {"dtype": "float32", "names": None}
    features = {
        VIDEO_KEY: {
            "dtype": "video",
            "shape": [SIZE, SIZE, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": SIZE,
                "video.width": SIZE,
                "video.codec": "h264",
                "video.pix_fmt": "yuv420p",
                "video.fps": FPS,
                "video.channels": 3,
                "has_audio": False,
            },
        },
        IMAGE_KEY: {
            "dtype": "image",
            "shape": [SIZE, SIZE, 3],
            "names": ["height", "width", "channels"],
        },
        "observation.state": {
            **vector,
            "shape": [STATE_DIM],
            "names": [f"joint_{i}" for i in range(STATE_DIM)],
        },
        "action": {
            **vector,
            "shape": [ACTION_DIM],
            "names": [f"motor_{i}" for i in range(ACTION_DIM)],
        },
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    columns = [k for k, f in features.items() if f["dtype"] != "video"]
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [
            (IMAGE_KEY, image),
            ("observation.state", pa.list_(pa.float32(), STATE_DIM)),
            ("action", pa.list_(pa.float32(), ACTION_DIM)),
            ("next.reward", pa.float32()),
            ("next.done", pa.bool_()),
            ("timestamp", pa.float32()),
            ("frame_index", pa.int64()),
            ("episode_index", pa.int64()),
            ("index", pa.int64()),
            ("task_index", pa.int64()),
        ]
    )
    assert schema.names == columns
    row, video_at, per_file = 0, 0, max(1, episodes // 2)
    rows, tables = [], {}
    for e, ep in enumerate(eps):
        t = len(ep["action"])
        file_index = e // per_file
        frame = np.arange(t)
        table = pa.table(
            {
                IMAGE_KEY: [
                    {"bytes": encode_png(f), "path": f"frame_{i:06d}.png"}
                    for i, f in enumerate(ep[IMAGE_KEY])
                ],
                "observation.state": list(ep["observation.state"]),
                "action": list(ep["action"]),
                "next.reward": ep["next.reward"],
                "next.done": ep["next.done"],
                "timestamp": (frame / FPS).astype(np.float32),
                "frame_index": frame,
                "episode_index": np.full(t, e),
                "index": np.arange(row, row + t),
                "task_index": np.full(t, ep["task_index"]),
            },
            schema=schema,
        )
        tables.setdefault(file_index, []).append(table)
        meta = {
            "episode_index": e,
            "tasks": [TASKS[ep["task_index"]]],
            "length": t,
            "data/chunk_index": 0,
            "data/file_index": file_index,
            "dataset_from_index": row,
            "dataset_to_index": row + t,
            f"videos/{VIDEO_KEY}/chunk_index": 0,
            f"videos/{VIDEO_KEY}/file_index": 0,
            f"videos/{VIDEO_KEY}/from_timestamp": video_at / FPS,
            f"videos/{VIDEO_KEY}/to_timestamp": (video_at + t) / FPS,
            "meta/episodes/chunk_index": 0,
            "meta/episodes/file_index": 0,
        }
        for key in ("observation.state", "action", "next.reward", "next.done"):
            for stat, value in _stats(ep[key]).items():
                meta[f"stats/{key}/{stat}"] = value
        for key in (VIDEO_KEY, IMAGE_KEY):
            for stat, value in _image_stats(ep[key]).items():
                meta[f"stats/{key}/{stat}"] = value  # nested (3, 1, 1), as LeRobot's writer
        rows.append(meta)
        row, video_at = row + t, video_at + t
    for file_index, parts in tables.items():
        path = root / DATA_PATH.format(chunk_index=0, file_index=file_index)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(parts), path)
    video = np.concatenate([ep[VIDEO_KEY] for ep in eps])
    encode_mp4(
        video, root / VIDEO_PATH.format(video_key=VIDEO_KEY, chunk_index=0, file_index=0), FPS
    )
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    tasks = pa.table({"task_index": list(range(len(TASKS))), "task": list(TASKS)})
    pandas = {"index_columns": ["task"], "column_indexes": [], "columns": [], "creator": {}}
    tasks = tasks.replace_schema_metadata({b"pandas": json.dumps(pandas).encode()})
    pq.write_table(tasks, root / "meta/tasks.parquet")
    stats = {
        key: _stats(np.concatenate([ep[key] for ep in eps]))
        for key in ("observation.state", "action", "next.reward", "next.done")
    }
    for key in (VIDEO_KEY, IMAGE_KEY):
        stats[key] = _image_stats(np.concatenate([ep[key] for ep in eps]))
    (root / "meta/stats.json").write_text(json.dumps(stats, indent=4))
    info = {
        "codebase_version": "v3.0",
        "robot_type": "so100_follower",
        "total_episodes": episodes,
        "total_frames": row,
        "total_tasks": len(TASKS),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": FPS,
        "splits": {"train": f"0:{episodes}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": features,
    }
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    return root
