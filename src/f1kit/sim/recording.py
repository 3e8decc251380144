"""Rollout videos: camera frames, optionally side by side with a second stream (e.g. foresight).

MP4 (H.264 through PyAV) when installed, else a PNG contact sheet of every ``stride``-th frame.
"""

from pathlib import Path

import numpy as np
from jaxtyping import UInt8
from PIL import Image

from f1kit.data.video import encode_mp4, has_video_codec


def _resize(frame: UInt8[np.ndarray, "H W 3"], h: int, w: int) -> UInt8[np.ndarray, "h w 3"]:
    if frame.shape[:2] == (h, w):
        return frame
    return np.asarray(Image.fromarray(frame).resize((w, h), Image.NEAREST))


def side_by_side(
    left: UInt8[np.ndarray, "t H W 3"], right: UInt8[np.ndarray, "t h w 3"]
) -> UInt8[np.ndarray, "t H W2 3"]:
    """Put two streams of ``t`` frames next to each other (the right one resized to the left's)."""
    if len(left) != len(right):
        raise ValueError(
            f"side_by_side: expected equal frame counts, got {len(left)} and {len(right)}"
        )
    h, w = left.shape[1:3]
    resized = np.stack([_resize(f, h, w) for f in right])
    return np.concatenate([left, resized], axis=2)


def write_rollout(
    frames: UInt8[np.ndarray, "t H W 3"],
    path: Path | str,
    fps: int,
    second: UInt8[np.ndarray, "t h w 3"] | None = None,
    stride: int = 10,
) -> Path:
    """Save a rollout (``path`` without suffix); returns the file written (.mp4 or .png)."""
    if second is not None:
        frames = side_by_side(frames, second)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if has_video_codec():
        target = path.with_suffix(".mp4")
        encode_mp4(frames, target, fps)
        return target
    target = path.with_suffix(".png")
    picked = frames[::stride]
    Image.fromarray(np.concatenate(list(picked), axis=1)).save(target)
    return target
