"""The wire format between `f1kit serve` and `PolicyClient`: msgpack, arrays as raw buffers.

A message is one msgpack map with a ``"type"`` string. Values are msgpack's own types (maps with
string keys, lists, strings, numbers, booleans, None, bytes) plus numpy arrays, carried as the
extension type ``ARRAY`` whose payload is itself msgpack: ``[dtype, shape, raw bytes]``, the
dtype one of ``DTYPES`` (little-endian, C order). Decoding builds arrays with ``np.frombuffer``
from those bytes and nothing else: no pickle, no object arrays, no code runs on load (LeRobot's
async server sends pickles, which execute whatever the sender wrote on ``loads``).

Decoding refuses, with a `WireError` naming what is wrong: a frame larger than the limit, bytes
that are not one msgpack value (a pickle, say), a value that is not a map with a ``type``,
containers longer than ``LIMITS``, unknown extension types, dtypes outside ``DTYPES``, and a
shape that does not match the bytes. (msgpack's own timestamp extension decodes to a
``msgpack.Timestamp``: plain data, which no request field accepts.)

Example:
    >>> data = encode({"type": "chunk", "actions": np.zeros((50, 7), np.float32)})
    >>> decode(data)["actions"].shape
    (50, 7)
"""

import math

import msgpack
import numpy as np

ARRAY = 1  # msgpack extension type code of a numpy array
DTYPES = ("uint8", "int32", "int64", "float16", "float32", "float64", "bool")
MAX_FRAME = 64 * 2**20  # bytes: a few full-size camera frames, far from a flood
# Containers stay short (arrays travel as one extension value each): a frame of one-byte maps
# would otherwise decode into ~70x its size in Python objects.
LIMITS = {"max_array_len": 1024, "max_map_len": 256, "max_str_len": 64 * 2**10}


class WireError(ValueError):
    """A frame that is not a valid f1kit message."""


def _default(obj: object) -> msgpack.ExtType:
    if isinstance(obj, np.ndarray):
        if obj.dtype.name not in DTYPES:
            raise WireError(f"array dtype {obj.dtype}: expected one of {DTYPES}")
        data = np.ascontiguousarray(obj).astype(obj.dtype.newbyteorder("<"), copy=False)
        header = [obj.dtype.name, list(obj.shape), data.tobytes()]
        return msgpack.ExtType(ARRAY, msgpack.packb(header, use_bin_type=True))
    if isinstance(obj, np.generic):
        return obj.item()  # numpy scalars travel as plain numbers
    raise WireError(f"cannot send a {type(obj).__name__}: plain data and numpy arrays only")


def _ext_hook(code: int, payload: bytes) -> np.ndarray:
    if code != ARRAY:
        raise WireError(f"unknown msgpack extension type {code} (only arrays, code {ARRAY})")
    try:
        dtype, shape, data = msgpack.unpackb(payload, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as err:
        raise WireError(f"array: malformed header ({err})") from None
    if dtype not in DTYPES:
        raise WireError(f"array dtype {dtype!r}: expected one of {DTYPES}")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise WireError(f"array shape {shape!r}: expected a list of sizes >= 0")
    if not isinstance(data, bytes):
        raise WireError("array data: expected raw bytes")
    expected = math.prod(shape) * np.dtype(dtype).itemsize
    if len(data) != expected:
        raise WireError(f"array of {dtype} {shape}: expected {expected} bytes, got {len(data)}")
    # A writable copy: the frame's buffer is not ours to hand out.
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape).copy()


def encode(message: dict) -> bytes:
    """One message (a map with a ``type``) as one msgpack frame."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise WireError("message: expected a dict with a string 'type'")
    return msgpack.packb(message, default=_default, use_bin_type=True)


def decode(frame: bytes, *, max_frame: int = MAX_FRAME) -> dict:
    """The message in ``frame``; a `WireError` for anything else (see the module docstring)."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise WireError(f"frame: expected binary data, got {type(frame).__name__}")
    if len(frame) > max_frame:
        raise WireError(f"frame: {len(frame)} bytes, over the {max_frame}-byte limit")
    try:
        message = msgpack.unpackb(
            frame, ext_hook=_ext_hook, raw=False, strict_map_key=True, **LIMITS
        )
    except WireError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as err:
        raise WireError(f"frame: not one msgpack message ({type(err).__name__}: {err})") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise WireError("frame: expected a map with a string 'type' (is it a pickle?)")
    return message
