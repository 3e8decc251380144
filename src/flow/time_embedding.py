"""Sinusoidal features of the flow time tau, as pi0 embeds it (DESIGN.md section 4).

For d features, d/2 periods are spaced geometrically from ``min_period`` (4e-3) to
``max_period`` (4), and tau contributes sin(2 pi tau / p) and cos(2 pi tau / p) for each period p.
The shortest period resolves tau to ~1e-3 (the finest step any sampler takes); the longest
keeps a monotone, alias-free coordinate over the whole [0, 1] interval.
"""

import math

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor


def sinusoidal_time_features(
    tau: Float[Tensor, " b"], dim: int, *, min_period: float = 4e-3, max_period: float = 4.0
) -> Float[Tensor, "b d"]:
    """Features [sin(2 pi tau / p_i), cos(2 pi tau / p_i)] for dim/2 geometric periods p_i.

    Computed in float32 at least (bf16 cannot resolve 2 pi tau / 4e-3), returned in tau's dtype
    promoted to float32; cast to the model's dtype at the call site.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"dim: expected an even number >= 2, got {dim}")
    if not 0 < min_period < max_period:
        raise ValueError(
            f"periods: need 0 < min_period < max_period, got {min_period}, {max_period}"
        )
    dtype = torch.promote_types(tau.dtype, torch.float32)
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=dtype, device=tau.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = 2 * math.pi * rearrange(tau.to(dtype), "b -> b 1") / period
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)
