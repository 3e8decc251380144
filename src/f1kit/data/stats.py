"""Feature statistics in the LeRobot ``meta/stats.json`` form (`f1kit.data.processor` normalises
with them).

Numeric features get per-dimension ``min max mean std q01 q99`` and ``count``; image features get
per-channel statistics of pixels scaled to [0, 1] with shape ``(3, 1, 1)``, as LeRobot stores them.
"""

import numpy as np
from jaxtyping import Shaped, UInt8

STAT_NAMES = ("min", "max", "mean", "std", "q01", "q99", "count")


def numeric_stats(x: Shaped[np.ndarray, "n d"]) -> dict[str, list]:
    """Per-dimension statistics of ``n`` rows of a ``d``-dim feature (float64 accumulation)."""
    if x.shape[0] == 0:
        raise ValueError("stats: expected at least one row, got an empty feature")
    x = x.astype(np.float64)
    q01, q99 = np.quantile(x, [0.01, 0.99], axis=0)
    return {
        "min": x.min(0).tolist(),
        "max": x.max(0).tolist(),
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        "q01": q01.tolist(),
        "q99": q99.tolist(),
        "count": [int(x.shape[0])],
    }


def image_stats(frames: UInt8[np.ndarray, "t H W 3"]) -> dict[str, list]:
    """Per-channel statistics of pixels in [0, 1], each shaped ``(3, 1, 1)`` like LeRobot's."""
    flat = frames.reshape(-1, 3)
    stats = numeric_stats(flat / 255.0)
    out = {k: [[[v]] for v in vals] for k, vals in stats.items() if k != "count"}
    out["count"] = [int(frames.shape[0])]
    return out
