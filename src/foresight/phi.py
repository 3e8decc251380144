"""VAR's residual refinement convs phi (arXiv 2404.02905, section 3 / appendix; DESIGN.md s3).

phi(h) = (1 - r) h + r conv3x3(h), applied to each scale's upsampled code map before it is added
to the running reconstruction. With ``count`` convs for K scales, scale k (0-based) uses the conv
whose tick is nearest to k / (K - 1); the ticks are ``count`` evenly spaced points in (0, 1):
``linspace(1/(3n), 1 - 1/(3n), n)`` for n = 4 and ``linspace(1/(2n), 1 - 1/(2n), n)`` otherwise
(VAR's choice, kept exactly so that released weights pick the same conv per scale).

``count = 1`` is VAR's fully shared phi, ``count = K`` its per-scale phi, anything between its
partially shared phi (the released tokenizer uses 4).
"""

import numpy as np
from jaxtyping import Float
from torch import Tensor, nn


def phi_ticks(count: int) -> np.ndarray:
    """The ``count`` positions in (0, 1) that the phi convs sit at."""
    if count < 1:
        raise ValueError(f"phi count: expected >= 1, got {count}")
    margin = 1 / 3 / count if count == 4 else 1 / 2 / count
    return np.linspace(margin, 1 - margin, count)


def phi_index(scale: int, num_scales: int, count: int) -> int:
    """Which of ``count`` phi convs scale ``scale`` (0-based) of ``num_scales`` uses.

    Computed with numpy in float64, ties to the lower index, exactly like VAR's lookup.
    """
    if not 0 <= scale < num_scales:
        raise ValueError(f"scale: expected 0 <= scale < {num_scales}, got {scale}")
    at = scale / (num_scales - 1) if num_scales > 1 else 0.0
    return int(np.argmin(np.abs(phi_ticks(count) - at)))


class PhiBank(nn.Module):
    """``count`` phi convs on ``dim`` channels with mixing ratio ``ratio``; ``bank(h, k, K)``."""

    def __init__(self, dim: int, count: int, ratio: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"phi ratio: expected 0 < ratio <= 1, got {ratio}")
        phi_ticks(count)
        self.ratio = ratio
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, 3, padding=1) for _ in range(count))

    def forward(
        self, h: Float[Tensor, "b z hl wl"], scale: int, num_scales: int
    ) -> Float[Tensor, "b z hl wl"]:
        conv = self.convs[phi_index(scale, num_scales, len(self.convs))]
        return h.mul(1 - self.ratio) + conv(h).mul(self.ratio)
