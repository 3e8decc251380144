"""Lazily read datasets give the eager reader's frames exactly, MP4 cameras included, decoding
only the episodes a sample touches; ``decode="auto"`` turns lazy past the memory limit."""

import numpy as np
import pytest

from f1kit.data import Episode, WindowConfig, WindowedDataset, read_dataset, write_dataset
from f1kit.data import reader as reader_module
from f1kit.data.clips import VideoClips
from f1kit.data.video import decode_mp4, decode_mp4_clip, encode_mp4, has_video_codec
from tests.f1kit.recipe.lerobot_conventions import IMAGE_KEY, VIDEO_KEY, lerobot_dataset

pytestmark = pytest.mark.skipif(not has_video_codec(), reason="PyAV with libx264 not installed")

CAM = "observation.images.cam"


def _episodes(lengths: list[int], size: int = 16) -> list[Episode]:
    rng = np.random.default_rng(0)
    out = []
    for e, t in enumerate(lengths):
        frames = np.zeros((t, size, size, 3), np.uint8)
        for i in range(t):  # a square whose place and colour say the episode and the step
            frames[i, i % (size - 4) : i % (size - 4) + 4, e : e + 4] = (40 * e % 256, 200, 7 * i)
        out.append(
            Episode(
                f"task {e % 2}",
                {
                    "observation.state": rng.normal(size=(t, 2)).astype(np.float32),
                    "action": rng.normal(size=(t, 2)).astype(np.float32),
                    CAM: frames,
                },
            )
        )
    return out


@pytest.fixture(scope="module")
def video_root(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("video") / "ds"
    return write_dataset(root, _episodes([7, 12, 5, 9, 11]), fps=10, images="video")


def test_lazy_video_rows_equal_the_eager_frames(video_root) -> None:
    eager = read_dataset(video_root, decode="eager")
    lazy = read_dataset(video_root, decode="lazy")
    assert CAM in eager._frames and CAM not in lazy._frames  # lazy holds no decoded camera
    rows = np.random.default_rng(1).integers(0, len(eager), size=40)
    assert np.array_equal(lazy.frames(CAM, rows), eager.frames(CAM, rows))
    every = np.arange(len(eager))
    assert np.array_equal(lazy.frames(CAM, every), eager.frames(CAM, every))


def test_lazy_windows_equal_eager_windows_on_lerobots_layout(tmp_path) -> None:
    root = lerobot_dataset(tmp_path / "so100", episodes=3, length=12)
    config = WindowConfig(chunk=3, image_keys=(VIDEO_KEY, IMAGE_KEY))
    eager = WindowedDataset(read_dataset(root, decode="eager"), config)
    lazy = WindowedDataset(read_dataset(root, decode="lazy"), config)
    for i in (0, 5, 13, 20, len(eager) - 1):
        a, b = eager[i], lazy[i]
        for key in ("images", "history", "foresight"):
            assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), (i, key)


def test_the_episode_cache_stays_bounded(video_root) -> None:
    lazy = read_dataset(video_root, decode="lazy")
    clips: VideoClips = lazy._clips[CAM]
    clips.cache_episodes = 2
    clips._cache.clear()  # read_dataset decoded episode 0 to check the frame size
    lazy.frames(CAM, [3])  # one frame: decoded from its keyframe on, no episode cached
    assert len(clips._cache) == 0
    for lo, hi in lazy.episode_bounds:  # whole episodes: decoded once and cached
        lazy.frames(CAM, np.arange(lo, hi))
        assert len(clips._cache) <= 2
    assert list(clips._cache) == [3, 4]  # the two most recent episodes


def test_a_clip_seeks_past_keyframes_to_the_exact_frames(tmp_path) -> None:
    t, size = 300, 8  # longer than libx264's keyframe interval (250): the seek skips a GOP
    frames = np.zeros((t, size, size, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(t) % 256
    frames[:, 0, 1, 0] = np.arange(t) // 256 * 100
    path = tmp_path / "long.mp4"
    encode_mp4(frames, path, fps=10)
    whole = decode_mp4(path)
    for start, count in ((0, 5), (3, 9), (249, 3), (251, 20), (290, 10)):
        assert np.array_equal(
            decode_mp4_clip(path, start, count, 10.0), whole[start : start + count]
        )
    with pytest.raises(ValueError, match="expected 20 frames from frame 290"):
        decode_mp4_clip(path, 290, 20, 10.0)


def test_auto_is_eager_below_the_limit_and_lazy_above(video_root, monkeypatch) -> None:
    assert CAM in read_dataset(video_root)._frames  # 44 frames of 16 px: eager
    monkeypatch.setattr(reader_module, "EAGER_LIMIT_BYTES", 44 * 16 * 16 * 3 - 1)
    auto = read_dataset(video_root)
    assert CAM not in auto._frames and CAM in auto._clips
