"""MP4 encode/decode of uint8 RGB frame stacks (PyAV, H.264), and a PNG codec for single frames.

Used by the dataset writer (``images="video"``), the reader (datasets other tools stored as video)
and the rollout recorder. PNG bytes are a pure function of the pixels. MP4 encoding runs
single-threaded, yet the same frames gave different bytes in about 3 % of file encodes here
(libx264 through PyAV 18): byte-identical datasets for a seed need the PNG storage.
"""

import importlib
import io
from pathlib import Path

import numpy as np
from jaxtyping import UInt8
from PIL import Image


def has_video_codec() -> bool:
    """Whether PyAV with an H.264 encoder is installed (``pip install av``)."""
    try:
        av = importlib.import_module("av")
    except ImportError:
        return False
    return "libx264" in av.codecs_available


def encode_png(frame: UInt8[np.ndarray, "H W 3"]) -> bytes:
    """Lossless PNG bytes of one frame (deterministic for the same pixels)."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes) -> UInt8[np.ndarray, "H W 3"]:
    """Decode PNG (or any PIL-readable image) bytes to uint8 RGB."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def encode_mp4(
    frames: UInt8[np.ndarray, "t H W 3"], path: Path | str, fps: int, crf: int = 18
) -> None:
    """Write frames as an H.264 MP4 (yuv420p; odd sides are padded by one pixel)."""
    if fps <= 0:
        raise ValueError(f"fps: expected a positive frame rate, got {fps}")
    if len(frames) == 0:
        raise ValueError("frames: expected at least one frame, got none")
    av = importlib.import_module("av")
    h, w = frames.shape[1:3]
    # yuv420p needs even sides.
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "threads": "1"}
        stream.thread_count = 1
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode_mp4(path: Path | str) -> UInt8[np.ndarray, "t H W 3"]:
    """Decode every frame of a video file to uint8 RGB (any codec PyAV reads)."""
    try:
        av = importlib.import_module("av")
    except ImportError as err:
        raise ImportError(f"reading {path} needs PyAV: pip install av") from err
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path}: the video holds no frames")
    return np.stack(frames)
