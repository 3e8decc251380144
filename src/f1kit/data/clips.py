"""The frames of a ``video`` camera of a LeRobotDataset, episode by episode.

LeRobot v3.0 stores each camera as MP4 files holding many episodes; ``meta/episodes`` gives each
episode's file (``videos/<key>/chunk_index``, ``file_index``) and its first frame's time
(``from_timestamp``). ``VideoClips.decode_all`` decodes every file once and cuts the episodes out
(the eager reader); ``VideoClips.rows`` decodes only the episodes a sample touches, seeking to
their start, and keeps the last few in an LRU (the lazy reader: memory bounded by
``cache_episodes`` clips, whatever the dataset's size).
"""

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from jaxtyping import Int64, UInt8

from f1kit.data.info import DatasetFormatError, frame_size_error
from f1kit.data.lerobot_layout import INFO_PATH, VIDEO_PATH
from f1kit.data.video import decode_mp4, decode_mp4_clip, keyframe_interval


def inside(root: Path, relative: str, where: str) -> Path:
    """``root / relative`` if it resolves (symlinks followed) to a file under resolved ``root``."""
    # A dataset is untrusted input: a path like ../../etc/x or /abs/x would read any file we can.
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise DatasetFormatError(
            f"{where}: path {relative!r} resolves to {path}, outside the dataset root {root}"
        )
    if not path.is_file():
        raise DatasetFormatError(f"{where}: path {relative!r}: expected a file, found none")
    return path


class VideoClips:
    """Where each episode of video feature ``key`` lies: ``(file, first frame)`` per row range of
    ``bounds`` (``(E, 2)`` ``[from, to)`` rows, in the reader's row order)."""

    def __init__(
        self,
        root: Path,
        info: dict,
        key: str,
        bounds: Int64[np.ndarray, "e 2"],
        episode_index: Int64[np.ndarray, " n"],
        size: tuple[int, int],
        cache_episodes: int = 8,
    ) -> None:
        files = sorted((root / "meta/episodes").glob("*/*.parquet"))
        if not files:
            raise DatasetFormatError(f"{root}: video feature {key} needs meta/episodes/*.parquet")
        meta = pa.concat_tables(pq.read_table(f) for f in files).to_pylist()
        by_episode = {int(r["episode_index"]): r for r in meta}
        template = info.get("video_path") or VIDEO_PATH
        self.key, self.size, self.fps = key, size, float(info["fps"])
        self.spec = info["features"][key]
        self.bounds = bounds
        self.clips: list[tuple[Path, int]] = []
        for lo in bounds[:, 0]:
            e = int(episode_index[lo])
            if e not in by_episode:
                raise DatasetFormatError(f"{files[0].parent.parent}: no row for episode {e}")
            ep = by_episode[e]
            relative = template.format(
                video_key=key,
                chunk_index=int(ep.get(f"videos/{key}/chunk_index", 0)),
                file_index=int(ep.get(f"videos/{key}/file_index", 0)),
            )
            path = inside(root.resolve(), relative, f"{root / INFO_PATH}: video_path of {key}")
            start = round(float(ep.get(f"videos/{key}/from_timestamp", 0.0)) * self.fps)
            self.clips.append((path, start))
        self.cache_episodes = cache_episodes
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._gops: dict[Path, float] = {}

    def _cut(self, frames: np.ndarray, path: Path) -> np.ndarray:
        got = frames.shape[1:3]
        # Encoders may pad odd sides by one pixel (yuv420p needs even ones): crop that, no more.
        if not (0 <= got[0] - self.size[0] <= 1 and 0 <= got[1] - self.size[1] <= 1):
            raise frame_size_error(path, self.key, got, self.spec, self.size)
        return frames[:, : self.size[0], : self.size[1]]

    def _check_length(self, clip: np.ndarray, e: int, path: Path, start: int) -> None:
        n = int(self.bounds[e, 1] - self.bounds[e, 0])
        if len(clip) != n:
            raise DatasetFormatError(f"{path}: expected {n} frames from {start}, got {len(clip)}")

    def decode_all(self) -> UInt8[np.ndarray, "n H W 3"]:
        """Every row's frame: each file decoded once, the episodes cut out of it."""
        decoded: dict[Path, np.ndarray] = {}
        out = []
        for e, (path, start) in enumerate(self.clips):
            if path not in decoded:
                decoded[path] = self._cut(decode_mp4(path), path)
            clip = decoded[path][start : start + int(self.bounds[e, 1] - self.bounds[e, 0])]
            self._check_length(clip, e, path, start)
            out.append(clip)
        return np.concatenate(out)

    def episode(self, e: int) -> UInt8[np.ndarray, "t H W 3"]:
        """The frames of the ``e``-th episode (in ``bounds`` order), from the LRU or decoded."""
        if e in self._cache:
            self._cache.move_to_end(e)
            return self._cache[e]
        path, start = self.clips[e]
        n = int(self.bounds[e, 1] - self.bounds[e, 0])
        try:
            clip = self._cut(decode_mp4_clip(path, start, n, self.fps), path)
        except ValueError as err:
            raise DatasetFormatError(str(err)) from err
        self._check_length(clip, e, path, start)
        self._cache[e] = clip
        if len(self._cache) > self.cache_episodes:
            self._cache.popitem(last=False)
        return clip

    def rows(self, rows: Int64[np.ndarray, " n"]) -> UInt8[np.ndarray, "n H W 3"]:
        """The frames at dataset rows ``rows``, decoding only what they need: a few frames of an
        episode one by one from the keyframe before each (about ``gop`` frames decoded each), or
        the whole episode (kept in the LRU) when that costs less."""
        episodes = np.searchsorted(self.bounds[:, 0], rows, side="right") - 1
        out = np.empty((len(rows), *self.size, 3), dtype=np.uint8)
        for e in (int(x) for x in np.unique(episodes)):
            at = np.flatnonzero(episodes == e)
            frames = rows[at] - self.bounds[e, 0]
            length = int(self.bounds[e, 1] - self.bounds[e, 0])
            if e in self._cache or len(np.unique(frames)) * self._gop(e) >= length:
                out[at] = self.episode(e)[frames]
                continue
            path, start = self.clips[e]
            for i, f in zip(at, frames, strict=True):
                out[i] = self._cut(decode_mp4_clip(path, start + int(f), 1, self.fps), path)[0]
        return out

    def _gop(self, e: int) -> float:
        """Frames decoded to reach one frame of episode ``e``'s file (half a GOP, plus it)."""
        path = self.clips[e][0]
        if path not in self._gops:
            self._gops[path] = keyframe_interval(path) / 2 + 1
        return self._gops[path]
