"""Rollout recording helpers (f1kit.sim.recording)."""

from pathlib import Path

import numpy as np
import pytest

from f1kit.data import decode_mp4, has_video_codec
from f1kit.sim import side_by_side, write_rollout


def test_side_by_side_resizes_the_second_stream() -> None:
    left = np.zeros((3, 8, 8, 3), np.uint8)
    right = np.full((3, 4, 4, 3), 9, np.uint8)
    both = side_by_side(left, right)
    assert both.shape == (3, 8, 16, 3)
    assert (both[:, :, :8] == 0).all() and (both[:, :, 8:] == 9).all()
    # The shape annotation (shared t) or the explicit check rejects unequal lengths.
    with pytest.raises((ValueError, TypeError), match=r"equal frame counts|parameter .right"):
        side_by_side(left, right[:2])


def test_write_rollout(tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    path = write_rollout(frames, tmp_path / "roll", fps=10)
    assert path.is_file() and path.stem == "roll"
    if has_video_codec():
        assert path.suffix == ".mp4" and decode_mp4(path).shape == (6, 16, 16, 3)
