"""The LeRobotDataset v3.0 on-disk layout: paths, info.json features, parquet schemas.

::

    meta/info.json                               fps, features (dtype/shape/names), path templates
    meta/stats.json                              per-feature statistics
    meta/tasks.parquet                           task sentence <-> task_index
    meta/episodes/chunk-000/file-000.parquet     one row per episode: length, tasks, rows, files
    data/chunk-000/file-000.parquet              one row per frame
    videos/<image key>/chunk-000/file-000.mp4    only for ``dtype: video`` features

Images stored in the data parquet use the Hugging Face ``datasets`` Image encoding, a struct of
``bytes`` (PNG here) and ``path``; the parquet carries the ``huggingface`` schema metadata so
``datasets`` decodes them. ``tasks.parquet`` carries pandas metadata making ``task`` its index, as
LeRobot reads it.
"""

import json

import pyarrow as pa

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk folder
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"

INDEX_FEATURES: dict[str, dict] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def chunk_file(n: int) -> tuple[int, int]:
    """The (chunk_index, file_index) of the ``n``-th file of a kind."""
    return n // CHUNKS_SIZE, n % CHUNKS_SIZE


def arrow_type(feature: dict) -> pa.DataType:
    """The parquet column type of one info.json feature (``video`` features have no column)."""
    dtype, shape = feature["dtype"], list(feature["shape"])
    if dtype == "image":
        return IMAGE_STRUCT
    if dtype == "string":
        return pa.string()
    value = pa.from_numpy_dtype(dtype)
    return value if shape == [1] else pa.list_(value, shape[0])


def hf_feature(feature: dict) -> dict:
    """The Hugging Face ``datasets`` feature description of one info.json feature."""
    if feature["dtype"] == "image":
        return {"_type": "Image"}
    value = {"dtype": feature["dtype"], "_type": "Value"}
    if list(feature["shape"]) == [1]:
        return value
    return {"feature": value, "length": int(feature["shape"][0]), "_type": "Sequence"}


def data_schema(features: dict[str, dict]) -> pa.Schema:
    """Schema of the data parquet files for ``features`` (video features excluded)."""
    columns = {k: f for k, f in features.items() if f["dtype"] != "video"}
    meta = {"info": {"features": {k: hf_feature(f) for k, f in columns.items()}}}
    fields = [pa.field(k, arrow_type(f)) for k, f in columns.items()]
    return pa.schema(fields, metadata={b"huggingface": json.dumps(meta).encode()})


def tasks_table(tasks: list[str]) -> pa.Table:
    """``meta/tasks.parquet``: ``task_index`` column, ``task`` as the pandas index."""
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "f1kit"},
        "pandas_version": "2.2.0",
    }
    schema = pa.schema(
        [("task_index", pa.int64()), ("task", pa.string())],
        metadata={b"pandas": json.dumps(pandas_meta).encode()},
    )
    return pa.table({"task_index": list(range(len(tasks))), "task": tasks}, schema=schema)
