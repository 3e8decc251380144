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


GOP = 8  # frames between keyframes in the MP4s f1kit writes


def keyframe_interval(path: Path | str) -> float:
    """Mean frames between keyframes of a video file (packets only, nothing decoded)."""
    av = importlib.import_module("av")
    with av.open(str(path)) as container:
        flags = [p.is_keyframe for p in container.demux(video=0) if p.size]
    return len(flags) / max(1, sum(flags))


def mp4_pixel_format(height: int, width: int) -> str:
    """The pixel format ``encode_mp4`` stores an ``height x width`` video in.

    yuv420p, what players expect, when both sides are even; 4:2:0 chroma covers 2 x 2 pixel
    blocks, so an odd side gets yuv444p (H.264 High 4:4:4) instead of padding, which would change
    the frame size that info.json declares.
    """
    if height < 1 or width < 1:
        raise ValueError(f"frame size: expected positive height and width, got {height} x {width}")
    return "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"


class Mp4Writer:
    """An H.264 MP4 written a stack of frames at a time (``mp4_pixel_format`` picks yuv420p or
    yuv444p), so a long video never has to be held in memory.

    Example::

        with Mp4Writer("cam.mp4", fps=10, height=45, width=61) as video:
            for episode_frames in stacks:
                video.add(episode_frames)
    """

    def __init__(self, path: Path | str, fps: int, height: int, width: int, crf: int = 18) -> None:
        if fps <= 0:
            raise ValueError(f"fps: expected a positive frame rate, got {fps}")
        self.pix_fmt = mp4_pixel_format(height, width)
        self.height, self.width, self.frames = height, width, 0
        av = importlib.import_module("av")
        self._av = av
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), mode="w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = self.pix_fmt
        # A keyframe every GOP frames: a sampler reading one frame decodes at most GOP of them
        # (libx264's default, 250, made lazily read datasets decode whole episodes per sample).
        self._stream.options = {"crf": str(crf), "threads": "1", "g": str(GOP)}
        self._stream.thread_count = 1

    def add(self, frames: UInt8[np.ndarray, "t H W 3"]) -> None:
        """Append ``frames`` (same size as the video's)."""
        if frames.dtype != np.uint8 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(
                f"frames: expected uint8 (t, {self.height}, {self.width}, 3),"
                f" got {frames.dtype} {frames.shape}"
            )
        for frame in frames:
            image = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in self._stream.encode(image):
                self._container.mux(packet)
        self.frames += len(frames)

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encode_mp4(
    frames: UInt8[np.ndarray, "t H W 3"], path: Path | str, fps: int, crf: int = 18
) -> None:
    """Write frames as an H.264 MP4 of the same size (see ``mp4_pixel_format``)."""
    if fps <= 0:
        raise ValueError(f"fps: expected a positive frame rate, got {fps}")
    if len(frames) == 0:
        raise ValueError("frames: expected at least one frame, got none")
    with Mp4Writer(path, fps, frames.shape[1], frames.shape[2], crf=crf) as video:
        video.add(frames)


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


def decode_mp4_clip(
    path: Path | str, start: int, count: int, fps: float
) -> UInt8[np.ndarray, "t H W 3"]:
    """Frames ``start .. start + count - 1`` of a constant-rate video, seeking to the keyframe
    before ``start`` instead of decoding the file from its beginning (what a lazily read dataset
    asks per episode). Frames are placed by their time from the stream's first frame."""
    av = importlib.import_module("av")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        begin = origin + start / fps
        if start > 0:
            container.seek(int(begin / stream.time_base), stream=stream, backward=True)
        frames = []
        for frame in container.decode(stream):
            if frame.time is not None and frame.time < begin - 0.5 / fps:
                continue  # decoded from the keyframe on, before the clip starts
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    if len(frames) != count:
        raise ValueError(f"{path}: expected {count} frames from frame {start}, got {len(frames)}")
    return np.stack(frames)
