"""Frame codecs (f1kit.data.video)."""

from pathlib import Path

import numpy as np
import pytest

from f1kit.data import decode_mp4, decode_png, encode_mp4, encode_png, has_video_codec
from f1kit.data.video import Mp4Writer


def test_png_is_lossless_and_deterministic() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    data = encode_png(frame)
    assert data == encode_png(frame.copy())
    np.testing.assert_array_equal(decode_png(data), frame)


def _ramp(t: int, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    frames = np.stack([np.stack([x * 8 + i, y * 10, np.full_like(x, 128)], -1) for i in range(t)])
    return frames.clip(0, 255).astype(np.uint8)


@pytest.mark.skipif(not has_video_codec(), reason="needs PyAV with libx264")
# Mean error measured on these ramps (crf 18): 1.55 levels at 15 x 21 (yuv444p), 3.06 at 16 x 20
# (yuv420p: chroma at half resolution blurs the steep red ramp).
@pytest.mark.parametrize(
    ("h", "w", "pix_fmt", "error"), [(15, 21, "yuv444p", 2.5), (16, 20, "yuv420p", 4.5)]
)
def test_mp4_round_trip_keeps_the_frame_size(
    tmp_path: Path, h: int, w: int, pix_fmt: str, error: float
) -> None:
    av = pytest.importorskip("av")
    frames = _ramp(12, h, w)
    # MP4 bytes are not reproducible here (about 3 % of encodes differ), so each encode is checked
    # against the source frames instead of against the other encode.
    for name in ("a.mp4", "b.mp4"):
        encode_mp4(frames, tmp_path / name, fps=10)
        back = decode_mp4(tmp_path / name)
        assert back.shape == (12, h, w, 3)  # odd sides too: no padding
        assert np.abs(back.astype(int) - frames).mean() < error
        with av.open(str(tmp_path / name)) as container:
            assert container.streams.video[0].codec_context.pix_fmt == pix_fmt
    with pytest.raises(ValueError, match="fps"):
        encode_mp4(frames, tmp_path / "c.mp4", fps=0)


@pytest.mark.skipif(not has_video_codec(), reason="needs PyAV with libx264")
def test_mp4_writer_appends_stacks_in_order(tmp_path: Path) -> None:
    frames = _ramp(9, 15, 21)
    frames[..., 2] = 20 * np.arange(9)[:, None, None]  # a blue level per frame tells them apart
    with Mp4Writer(tmp_path / "v.mp4", fps=10, height=15, width=21) as video:
        for lo, hi in ((0, 2), (2, 3), (3, 9)):
            video.add(frames[lo:hi])
        assert video.frames == 9
        with pytest.raises(ValueError, match=r"expected uint8 \(t, 15, 21, 3\), got uint8"):
            video.add(frames[:1, :14])
    back = decode_mp4(tmp_path / "v.mp4").astype(int)
    assert back.shape == frames.shape
    # In order: each decoded frame is closest to its own source frame.
    errors = np.abs(back[:, None] - frames[None].astype(int)).mean((2, 3, 4))
    assert (errors.argmin(1) == np.arange(9)).all()
