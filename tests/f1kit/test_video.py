"""Frame codecs (f1kit.data.video)."""

from pathlib import Path

import numpy as np
import pytest

from f1kit.data import decode_mp4, decode_png, encode_mp4, encode_png, has_video_codec


def test_png_is_lossless_and_deterministic() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    data = encode_png(frame)
    assert data == encode_png(frame.copy())
    np.testing.assert_array_equal(decode_png(data), frame)


@pytest.mark.skipif(not has_video_codec(), reason="needs PyAV with libx264")
def test_mp4_round_trip_odd_size(tmp_path: Path) -> None:
    y, x = np.mgrid[0:15, 0:21]
    frames = np.stack([np.stack([x * 8 + t, y * 10, np.full_like(x, 128)], -1) for t in range(12)])
    frames = frames.clip(0, 255).astype(np.uint8)
    # MP4 bytes are not reproducible here (about 3 % of encodes differ), so each encode is checked
    # against the source frames instead of against the other encode.
    for name in ("a.mp4", "b.mp4"):
        encode_mp4(frames, tmp_path / name, fps=10)
        back = decode_mp4(tmp_path / name)
        assert back.shape == (12, 16, 22, 3)  # padded to even sides
        assert np.abs(back[:, :15, :21].astype(int) - frames).mean() < 6.0  # lossy yuv420p
    with pytest.raises(ValueError, match="fps"):
        encode_mp4(frames, tmp_path / "c.mp4", fps=0)
