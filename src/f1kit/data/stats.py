"""Feature statistics in the LeRobot ``meta/stats.json`` form, and the normaliser built on them.

Numeric features get per-dimension ``min max mean std q01 q99`` and ``count``; image features get
per-channel statistics of pixels scaled to [0, 1] with shape ``(3, 1, 1)``, as LeRobot stores them.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Shaped, UInt8
from torch import Tensor

STAT_NAMES = ("min", "max", "mean", "std", "q01", "q99", "count")
NormMode = Literal["mean_std", "min_max", "quantile", "identity"]


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


@dataclass(frozen=True)
class Normalizer:
    """Maps a feature to a unit scale with one dataset's statistics, and back.

    ``mean_std``: (x - mean) / std; ``min_max``: to [-1, 1] over [min, max]; ``quantile``: to
    [-1, 1] over [q01, q99] (pi0's choice, robust to outliers); ``identity``: unchanged.
    Dimensions with (near) zero spread map to 0 instead of dividing by zero.
    """

    shift: Float[Tensor, " d"]
    scale: Float[Tensor, " d"]

    @classmethod
    def from_stats(cls, stats: dict[str, list], mode: NormMode) -> "Normalizer":
        if mode == "identity":
            d = len(stats["mean"])
            return cls(torch.zeros(d), torch.ones(d))
        if mode == "mean_std":
            shift, spread = stats["mean"], stats["std"]
        elif mode in ("min_max", "quantile"):
            lo, hi = (
                (stats["min"], stats["max"]) if mode == "min_max" else (stats["q01"], stats["q99"])
            )
            shift = [(a + b) / 2 for a, b in zip(lo, hi, strict=True)]
            spread = [(b - a) / 2 for a, b in zip(lo, hi, strict=True)]
        else:
            raise ValueError(
                f"normalization: expected mean_std, min_max, quantile or identity, got {mode!r}"
            )
        spread_t = torch.tensor(spread, dtype=torch.float32)
        # Constant dimensions carry no information: send them to 0 rather than blow up.
        scale = torch.where(
            spread_t > 1e-8, 1.0 / spread_t.clamp_min(1e-8), torch.zeros_like(spread_t)
        )
        return cls(torch.tensor(shift, dtype=torch.float32), scale)

    def __call__(self, x: Float[Tensor, "*b d"]) -> Float[Tensor, "*b d"]:
        return (x - self.shift) * self.scale

    def inverse(self, y: Float[Tensor, "*b d"]) -> Float[Tensor, "*b d"]:
        """Undo the map (dimensions that were constant come back as their shift value)."""
        safe = torch.where(self.scale != 0, self.scale, torch.ones_like(self.scale))
        return torch.where(self.scale != 0, y / safe, torch.zeros_like(y)) + self.shift
