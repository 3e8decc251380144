"""Rotary position embedding shared by all experts, half-split convention (Gemma / HF).

Dimension i of a head pairs with dimension i + e/2 (not with i + 1 as in x-transformers'
interleaved ``rotate_half``), which is the layout of Gemma / PaliGemma q_proj and k_proj weights.
Positions are passed in (the running count of valid tokens, ``Layout.positions``), so padding and
KV-cached steps rotate exactly like the full sequence. Angles are computed in float32.
"""

import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor


def rope_angles(
    positions: Int[Tensor, "*b n"], head_dim: int, base: float = 10000.0
) -> tuple[Float[Tensor, "*b n e"], Float[Tensor, "*b n e"]]:
    """cos and sin of pos * base^(-2i/e), each frequency repeated for both halves of a head."""
    if head_dim % 2 != 0:
        raise ValueError(f"head_dim: RoPE needs an even size, got {head_dim}")
    exponent = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32)
    inv_freq = base ** (-exponent / head_dim)
    angles = positions.to(torch.float32).unsqueeze(-1) * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(
    x: Float[Tensor, "b h n e"], cos: Float[Tensor, "*b n e"], sin: Float[Tensor, "*b n e"]
) -> Float[Tensor, "b h n e"]:
    """Rotate each (x_i, x_{i+e/2}) pair by its angle: x cos + rotate_half(x) sin, in float32."""
    if cos.ndim == 3:  # per-sample positions: broadcast over heads
        cos, sin = rearrange(cos, "b n e -> b 1 n e"), rearrange(sin, "b n e -> b 1 n e")
    x32 = x.to(torch.promote_types(x.dtype, torch.float32))
    first, second = x32.chunk(2, dim=-1)
    rotated = torch.cat((-second, first), dim=-1)
    return (x32 * cos + rotated * sin).to(x.dtype)
