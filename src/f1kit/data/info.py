"""``meta/info.json`` of a LeRobotDataset folder: load it, check its fields, hold data to it.

Every error names the file (info.json, or the data files at fault) and the key.
"""

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from f1kit.data.lerobot_layout import INFO_PATH

VISUAL_DTYPES = ("image", "video")
# Strings (e.g. a ``language_instruction`` column) are stored but not read.
SKIPPED_DTYPES = ("string",)
# Channel counts a frame may have, for shapes whose ``names`` do not say which axis is which.
CHANNELS = (1, 3, 4)
# Columns that number rows; they must hold integers (``timestamp``, the fifth, is float).
INTEGER_COLUMNS = ("frame_index", "episode_index", "index", "task_index")


class DatasetFormatError(ValueError):
    """A dataset folder that does not follow the LeRobotDataset layout."""


def read_json_object(path: Path) -> dict:
    """The JSON object in ``path`` (info.json, stats.json), ``DatasetFormatError`` naming the file
    when it is not valid JSON or not an object."""
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{path}: expected JSON, got invalid JSON ({err})") from err
    if not isinstance(value, dict):
        raise DatasetFormatError(f"{path}: expected a JSON object, got a {type(value).__name__}")
    return value


def load_info(root: Path) -> dict:
    """The parsed ``meta/info.json`` of ``root``, with ``fps`` and every feature checked."""
    path = root / INFO_PATH
    if not path.exists():
        raise DatasetFormatError(f"{root}: no {INFO_PATH}; not a LeRobotDataset folder")
    info = read_json_object(path)
    for need in ("fps", "features"):
        if need not in info:
            raise DatasetFormatError(f"{path}: missing {need!r}")
    fps = info["fps"]
    # bool is an int in Python and NaN compares false with everything: both need their own test.
    if (
        isinstance(fps, bool)
        or not isinstance(fps, int | float)
        or not math.isfinite(fps)
        or fps <= 0
    ):
        raise DatasetFormatError(f"{path}: 'fps': expected a positive number, got {fps!r}")
    features = info["features"]
    if not isinstance(features, dict):
        raise DatasetFormatError(
            f"{path}: 'features': expected an object of name -> spec, got {type(features).__name__}"
        )
    for key, spec in features.items():
        _check_feature(path, key, spec)
    return info


def _check_feature(path: Path, key: str, spec: object) -> None:
    where = f"{path}: features[{key!r}]"
    if not isinstance(spec, dict):
        raise DatasetFormatError(f"{where}: expected an object with dtype and shape, got {spec!r}")
    for need in ("dtype", "shape"):
        if need not in spec:
            raise DatasetFormatError(f"{where}: missing {need!r}")
    dtype, shape = spec["dtype"], spec["shape"]
    if not (dtype in VISUAL_DTYPES or dtype in SKIPPED_DTYPES or is_numeric_dtype(dtype)):
        raise DatasetFormatError(
            f"{where}: 'dtype': expected image, video, string or a numeric dtype"
            f" (bool, int64, float32, ...), got {dtype!r}"
        )
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
    ):
        raise DatasetFormatError(
            f"{where}: 'shape': expected a non-empty list of positive integers, got {shape!r}"
        )
    if dtype in VISUAL_DTYPES:
        image_size(spec, key, path)


def is_numeric_dtype(dtype: object) -> bool:
    """Whether ``dtype`` names a bool, integer or floating numpy dtype (``"float32"``)."""
    if not isinstance(dtype, str):
        return False
    try:
        return np.dtype(dtype).kind in "biuf"
    except TypeError:
        return False


def image_size(spec: dict, key: str, path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image or video feature from its info.json ``shape``.

    LeRobot writes ``[H, W, C]`` with names ``["height", "width", "channels"]``; some datasets write
    ``[C, H, W]`` with ``["channels", "height", "width"]``. The names decide where present; without
    them the channel axis is the last (or else the first) one that holds 1, 3 or 4.
    """
    shape, names = spec["shape"], spec.get("names")
    where = f"{path}: features[{key!r}]: shape {shape} (names {names})"
    if len(shape) != 3:
        raise DatasetFormatError(f"{where}: expected 3 dims (height, width, channels in any order)")
    if isinstance(names, list) and len(names) == 3 and {"height", "width"} <= set(names):
        return shape[names.index("height")], shape[names.index("width")]
    if shape[-1] in CHANNELS:
        return shape[0], shape[1]
    if shape[0] in CHANNELS:
        return shape[1], shape[2]
    raise DatasetFormatError(
        f"{where}: expected names with 'height' and 'width', or a channel axis of {CHANNELS}"
        " first or last"
    )


def feature_column(
    table: pa.Table, key: str, spec: dict, files_of: Callable[[object], str]
) -> np.ndarray:
    """``(N, d)`` values of numeric feature ``key``, ``d`` the size of its info.json shape.

    A scalar column or a list column of ``d`` numbers a row; bool values come back as numpy bool.
    ``files_of(rows)`` names the data files holding ``rows`` (a slice or indices), for errors.
    """
    col = table[key].combine_chunks()
    is_list = pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
    is_list = is_list or pa.types.is_fixed_size_list(col.type)
    value = col.type.value_type if is_list else col.type
    integer = key in INTEGER_COLUMNS
    if not (
        pa.types.is_integer(value)
        or (not integer and (pa.types.is_floating(value) or pa.types.is_boolean(value)))
    ):
        kind = "integer" if integer else spec["dtype"]
        raise DatasetFormatError(
            f"{files_of(slice(None))}: column {key!r}: expected {kind} values, got {col.type}"
        )
    d = int(np.prod(spec["shape"]))
    if col.null_count:
        bad = np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))
        raise DatasetFormatError(
            f"{files_of(bad)}: column {key!r}: expected {d} value(s) per row, got null at row"
            f" {bad[0]}"
        )
    got = pc.list_value_length(col).to_numpy() if is_list else np.ones(len(col), np.int64)
    if (got != d).any():
        bad = np.flatnonzero(got != d)
        raise DatasetFormatError(
            f"{files_of(bad)}: column {key!r}: expected {d} value(s) per row ({INFO_PATH} shape"
            f" {spec['shape']}), got {got[bad[0]]} at row {bad[0]}"
        )
    values = col.flatten() if is_list else col
    if values.null_count:
        raise DatasetFormatError(
            f"{files_of(slice(None))}: column {key!r}: expected no null values"
        )
    # zero_copy_only=False: arrow packs bools as bits, so they cannot be viewed as numpy bytes.
    return values.to_numpy(zero_copy_only=False).reshape(len(col), d)


def frame_size_error(
    where: object, key: str, got: tuple[int, ...], spec: dict, size: tuple[int, int]
) -> DatasetFormatError:
    """The error for frames of ``key`` whose ``got[:2]`` is not the info.json ``(H, W)``."""
    return DatasetFormatError(
        f"{where}: {key}: frames are {got[0]}x{got[1]} (HxW), but {INFO_PATH} shape"
        f" {spec['shape']} (names {spec.get('names')}) means {size[0]}x{size[1]}"
    )
