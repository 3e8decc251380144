"""Feature statistics in the LeRobot ``meta/stats.json`` form (`f1kit.data.processor` normalises
with them), also stored per episode in ``meta/episodes`` as ``stats/<feature>/<stat>`` columns.

Every feature gets ``min max mean std``, the quantiles LeRobot (0.4-0.6) computes
(``q01 q10 q50 q90 q99``) and ``count`` (rows, or frames for images). Numeric features are
per-dimension; image features are per channel, of pixels scaled to [0, 1], shaped ``(3, 1, 1)`` as
LeRobot stores them. Image statistics come from a per-channel histogram of the 256 pixel levels:
exact (quantiles included, where LeRobot samples frames and bins values) and additive, so a
dataset's histogram is the sum of its episodes'.
"""

import numpy as np
from jaxtyping import Int64, Shaped, UInt8

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_NAMES = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)
STAT_NAMES = ("min", "max", "mean", "std", *QUANTILE_NAMES, "count")
LEVELS = 256  # uint8 pixel values


def numeric_stats(x: Shaped[np.ndarray, "n d"]) -> dict[str, list]:
    """Per-dimension statistics of ``n`` rows of a ``d``-dim feature (float64 accumulation)."""
    if x.shape[0] == 0:
        raise ValueError("stats: expected at least one row, got an empty feature")
    x = x.astype(np.float64)
    quantiles = np.quantile(x, QUANTILES, axis=0)
    return {
        "min": x.min(0).tolist(),
        "max": x.max(0).tolist(),
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        **{name: q.tolist() for name, q in zip(QUANTILE_NAMES, quantiles, strict=True)},
        "count": [int(x.shape[0])],
    }


def pixel_histogram(frames: UInt8[np.ndarray, "t H W 3"]) -> Int64[np.ndarray, "3 256"]:
    """How many pixels of each channel take each of the 256 levels."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected uint8 (t, H, W, 3), got {frames.dtype} {frames.shape}")
    flat = frames.reshape(-1, 3)
    return np.stack([np.bincount(flat[:, c], minlength=LEVELS) for c in range(3)]).astype(np.int64)


def histogram_stats(hist: Int64[np.ndarray, "3 256"], frames: int) -> dict[str, list]:
    """Per-channel statistics, shaped ``(3, 1, 1)``, of the pixels counted in ``hist`` (levels
    scaled to [0, 1]); ``count`` is ``frames``. Quantiles interpolate linearly between the sorted
    pixels, as ``np.quantile`` does."""
    if hist.shape != (3, LEVELS):
        raise ValueError(f"hist: expected shape (3, {LEVELS}), got {hist.shape}")
    n = int(hist[0].sum())
    if n == 0:
        raise ValueError("stats: expected at least one pixel, got an empty histogram")
    levels = np.arange(LEVELS) / (LEVELS - 1)
    mean = hist @ levels / n
    std = np.sqrt((hist * (levels[None] - mean[:, None]) ** 2).sum(1) / n)
    present = hist > 0
    out = {
        "min": levels[present.argmax(1)],
        "max": levels[LEVELS - 1 - present[:, ::-1].argmax(1)],
        "mean": mean,
        "std": std,
    }
    cumulative = hist.cumsum(1)

    def ranked(rank: int) -> np.ndarray:  # the rank-th smallest pixel of each channel
        return levels[[np.searchsorted(c, rank, side="right") for c in cumulative]]

    for name, q in zip(QUANTILE_NAMES, QUANTILES, strict=True):
        position = q * (n - 1)
        below = int(np.floor(position))
        a, b = ranked(below), ranked(min(below + 1, n - 1))
        out[name] = a + (position - below) * (b - a)
    stats: dict[str, list] = {k: [[[float(x)]] for x in v] for k, v in out.items()}
    return {**stats, "count": [int(frames)]}


def image_stats(frames: UInt8[np.ndarray, "t H W 3"]) -> dict[str, list]:
    """Per-channel statistics of pixels in [0, 1], each shaped ``(3, 1, 1)`` like LeRobot's."""
    return histogram_stats(pixel_histogram(frames), frames.shape[0])
